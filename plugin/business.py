"""The hub for business signals (POS, access control, alarm panels): store durably, then hand to fusion.

Adapters call `ingest` and acknowledge their sender only after it returns: nothing is acknowledged before it is
committed to SQLite. Fusion handlers run after storage; a failing handler is logged and never loses the event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from plugin.store import AsyncStore
from plugin.types import BusinessEvent

log = logging.getLogger(__name__)

Handler = Callable[[str, BusinessEvent], Awaitable[None]]


class BusinessHub:
    """Durable intake plus fan-out to fusion handlers."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self._handlers: list[Handler] = []
        self.received = 0
        self.duplicates = 0

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(event_id, event)` for every new event, after it is stored."""
        self._handlers.append(handler)

    async def ingest(self, event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        """Store the event; returns (id, new). A repeat of a `dedupe_key` is stored once and not fused again."""
        event_id = str(uuid.uuid4())
        new = await self.store.call(self.store.sync.save_business_event, event_id, event, dedupe_key)
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
