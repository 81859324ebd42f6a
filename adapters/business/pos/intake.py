"""Everything the `pos:` section starts: the service (storage, exceptions, fusion), the POSLog drop folder, the
receipt-text listeners and the XProtect Transact feeds. The HTTP intake routes live in plugin/web.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapters.business.pos.poslog import PosLogDropFolder, PosLogReader
from adapters.business.pos.receipt_text import ReceiptTextServer
from adapters.business.pos.transact import TransactServer
from plugin.config.pos import PosConfig
from plugin.config.service import SiteConfig
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.service import PosService
from plugin.incidents.manager import IncidentManager
from plugin.metrics import Metrics
from plugin.pipeline.presence import PresenceLog

log = logging.getLogger(__name__)


class PosIntake:
    """Owns the POS adapters; `start` then `close`."""

    def __init__(
        self,
        config: PosConfig,
        site: SiteConfig,
        hub: BusinessHub,
        presence: PresenceLog,
        incidents: IncidentManager | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.service = PosService(config, site.id, site.timezone, hub, presence, incidents, metrics)
        self.reader = PosLogReader(config, self.service.tz)
        self.drop = None if config.file_drop is None else PosLogDropFolder(config.file_drop, self.service, self.reader)
        self.text = [ReceiptTextServer(feed, self.service) for feed in config.text]
        self.transact = [TransactServer(feed, self.service) for feed in config.transact]
        self._drop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Seed the rules, open the listeners, start polling the drop folder."""
        await self.service.start()
        started: list[ReceiptTextServer | TransactServer] = []
        try:
            servers: list[ReceiptTextServer | TransactServer] = [*self.transact, *self.text]
            for server in servers:  # Transact first: it must see the first transaction
                await server.start()
                started.append(server)
        except OSError:
            for server in started:
                await server.close()
            raise
        if self.drop is not None:
            self._drop_task = asyncio.create_task(self.drop.run(), name="pos-drop-folder")
            self._drop_task.add_done_callback(_report)

    async def close(self) -> None:
        """Stop intake first, then the judgements still waiting for video."""
        if self._drop_task is not None:
            self._drop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drop_task
        for text in self.text:
            await text.close()
        for transact in self.transact:
            await transact.close()
        await self.service.close()


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("pos: the drop folder stopped", exc_info=task.exception())
