"""The hub for business signals (POS, access control, alarm panels): store durably, then hand to fusion.

Adapters call `ingest` and acknowledge their sender only after it returns: nothing is acknowledged before it is
committed to SQLite. Fusion handlers run after storage; a failing handler is logged and never loses the event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from plugin.incidents.database import AsyncDatabase
from plugin.types import BusinessEvent

log = logging.getLogger(__name__)

Handler = Callable[[str, BusinessEvent], Awaitable[None]]


class PendingJudgements:
    """Fusion judgements waiting for video (POS, access, alarm verification), one task each: a failure is logged
    with the task's name, never lost in the task; `cancel` or `wait` at shutdown, `idle` in tests and --once."""

    def __init__(self, label: str) -> None:
        self.label = label  # the log prefix, e.g. "pos"
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `work` as a task until it judges, fails or is cancelled."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: judging %s failed", self.label, task.get_name(), exc_info=task.exception())

    async def cancel(self) -> None:
        """Stop every judgement still waiting."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Let every judgement still waiting finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self, timeout_s: float = 60.0) -> None:
        """Wait until none is pending, including those started meanwhile."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


class BusinessHub:
    """Durable intake plus fan-out to fusion handlers."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self._handlers: list[Handler] = []
        self.received = 0
        self.duplicates = 0

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(event_id, event)` for every new event, after it is stored."""
        self._handlers.append(handler)

    async def ingest(self, event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        """Store the event; returns (id, new). A repeat of a `dedupe_key` is stored once and not fused again."""
        event_id = str(uuid.uuid4())
        new = await self.db.call(self.db.sync.save_business_event, event_id, event, dedupe_key)
        if not new:
            self.duplicates += 1
            return event_id, False
        self.received += 1
        for handler in self._handlers:
            try:
                await handler(event_id, event)
            except Exception:  # a fusion bug must not make the sender resend or lose the others
                log.exception("%s: fusion of %s event %s failed", event.source, event.kind, event_id)
        return event_id, True
