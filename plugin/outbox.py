"""The outbox worker: delivers stored incident state changes to every sink, at least once, never dropping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from plugin.metrics import Metrics
from plugin.sinks import IncidentSink, SinkAuthError, SinkNotReady, SinkRejected
from plugin.store import AsyncStore, Delivery

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0  # a VMS down for hours still gets everything, at most five minutes late
AUTH_RETRY_S = 600.0  # wrong credentials rarely fix themselves; retry slowly in case an admin fixed them
IDLE_POLL_S = 1.0


class OutboxWorker:
    """Polls due deliveries, publishes each through its sink, records the outcome."""

    def __init__(self, store: AsyncStore, sinks: Mapping[str, IncidentSink], metrics: Metrics) -> None:
        self.store = store
        self.sinks = dict(sinks)
        self.metrics = metrics
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something new was stored: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever."""
        while True:
            delivered = await self.deliver_due()
            if not delivered:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def deliver_due(self) -> int:
        """One pass over due deliveries; returns how many were attempted."""
        due = await self.store.call(self.store.sync.due, time.time())
        for d in due:
            await self._deliver(d)
        counts = await self.store.call(self.store.sync.outbox_counts)
        self.metrics.outbox_pending.set(counts["pending"])
        return len(due)

    async def drain(self, timeout_s: float) -> bool:
        """Deliver until nothing is due or the time is up (one-shot runs, shutdown); True when drained."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.deliver_due() == 0:
                counts = await self.store.call(self.store.sync.outbox_counts)
                return bool(counts["pending"] == 0)
        return False

    async def _deliver(self, d: Delivery) -> None:
        sink = self.sinks.get(d.sink_id)
        if sink is None:
            # the sink was removed from the config: keep the row (not failed) so re-adding it delivers
            return
        try:
            receipt = await sink.publish(d.delivery_key, d.payload)
        except SinkAuthError as exc:
            sink.health.ok, sink.health.auth_failed, sink.health.last_error = False, True, str(exc)
            log.error("%s: authentication failed, holding deliveries: %s", sink.id, exc)
            await self.store.call(self.store.sync.mark_retry, d, str(exc), time.time() + AUTH_RETRY_S)
            self.metrics.deliveries.labels(sink=sink.id, outcome="auth").inc()
        except SinkNotReady as exc:
            delay = min(BACKOFF_START_S * 2**d.attempts, BACKOFF_MAX_S)
            sink.health.ok, sink.health.last_error = False, str(exc)
            log.warning("%s: delivery %s failed (attempt %d), retry in %.0f s: %s", sink.id, d.delivery_key,
                        d.attempts + 1, delay, exc)  # fmt: skip
            await self.store.call(self.store.sync.mark_retry, d, str(exc), time.time() + delay)
            self.metrics.deliveries.labels(sink=sink.id, outcome="retry").inc()
        except SinkRejected as exc:
            log.error("%s: delivery %s rejected for good: %s", sink.id, d.delivery_key, exc)
            await self.store.call(self.store.sync.mark_failed, d, str(exc))
            self.metrics.deliveries.labels(sink=sink.id, outcome="rejected").inc()
        else:
            sink.health.ok, sink.health.auth_failed, sink.health.last_error = True, False, None
            await self.store.call(self.store.sync.mark_delivered, d, receipt.detail)
            self.metrics.deliveries.labels(sink=sink.id, outcome="delivered").inc()
