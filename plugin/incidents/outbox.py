"""The outbox: delivers stored incident state changes to every sink, at least once, never dropping; and keyed records
(roll-up hours, POS hours, camera health, feedback) to the sinks that take them (head office), the same way.

Each sink has its own worker, so a slow or dead VMS never delays the others; within a sink, deliveries go out
in the order they were stored. A worker outlives database failures (disk full, the file locked by another
process): it says so in `errors` (readiness shows it), waits with backoff and carries on by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from plugin.config.service import OutboxConfig
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase, Delivery
from plugin.incidents.evidence import blurred_path
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink, RecordSink

log = logging.getLogger(__name__)

IDLE_POLL_S = 5.0  # a safety net: new work wakes the worker at once through notify()
FAILURE_BACKOFF_START_S = 0.5  # a worker whose pass failed (the database, a bug) tries again after this
FAILURE_BACKOFF_MAX_S = 30.0


class OutboxWorker:
    """Per-sink delivery loops over the SQLite outbox."""

    def __init__(
        self,
        db: AsyncDatabase,
        sinks: Mapping[str, IncidentSink],
        metrics: Metrics,
        config: OutboxConfig | None = None,
        privacy: Mapping[str, Literal["blur", "original"]] | None = None,
    ) -> None:
        self.db = db
        self.sinks = dict(sinks)
        self.metrics = metrics
        self.config = config or OutboxConfig()
        # per sink: `blur` hands it the snapshot with the people blurred (or none), `original` the evidence itself
        self.privacy = dict(privacy or {})
        self._wake = {sink_id: asyncio.Event() for sink_id in self.sinks}
        # per sink: why its worker's last pass failed (not a delivery's failure: the sink's own health says that)
        self.errors: dict[str, str] = {}

    def notify(self) -> None:
        """Something new was stored: every sink looks now instead of at its next poll."""
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        """Deliver forever, one task per sink."""
        async with asyncio.TaskGroup() as group:
            for sink_id in self.sinks:
                group.create_task(self._run_sink(sink_id), name=f"outbox-{sink_id}")

    async def _run_sink(self, sink_id: str) -> None:
        """One sink's loop. A pass that fails (the database: disk full, locked; or a bug) ends neither this loop
        nor the other sinks': it is recorded in `errors`, logged, and tried again with backoff."""
        wake = self._wake[sink_id]
        backoff = FAILURE_BACKOFF_START_S
        while True:
            wake.clear()
            try:
                if await self.deliver_due(sink_id):
                    self._recovered(sink_id)
                    backoff = FAILURE_BACKOFF_START_S
                    continue
                next_due = await self.db.call(self.db.sync.next_due, sink_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.errors.get(sink_id) != reason:
                    log.error("%s: deliveries paused, retrying in %.1f s: %s", sink_id, backoff, reason)
                self.errors[sink_id] = reason
                wait = backoff
                backoff = min(backoff * 2, FAILURE_BACKOFF_MAX_S)
            else:
                self._recovered(sink_id)
                backoff = FAILURE_BACKOFF_START_S
                wait = IDLE_POLL_S if next_due is None else min(IDLE_POLL_S, max(0.0, next_due - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()

    def _recovered(self, sink_id: str) -> None:
        if self.errors.pop(sink_id, None) is not None:
            log.warning("%s: deliveries resumed", sink_id)

    async def deliver_due(self, sink_id: str | None = None) -> int:
        """One pass over due deliveries of one sink (or all); returns how many were attempted."""
        attempted = 0
        for sid in [sink_id] if sink_id else list(self.sinks):
            max_wait = max(self.config.backoff_max_s, self.config.auth_retry_s)
            for d in await self.db.call(self.db.sync.due, sid, time.time(), 50, max_wait):
                attempted += 1
                if not await self._deliver(d):
                    break  # keep the order: nothing overtakes a delivery that is backing off
        await self.refresh_metrics()
        return attempted

    async def refresh_metrics(self) -> None:
        """Pending and dead-letter gauges per sink."""
        counts = await self.db.call(self.db.sync.outbox_counts)
        for sid in self.sinks:
            c = counts.get(sid, {"pending": 0, "dead": 0})
            self.metrics.outbox_pending.labels(sink=sid).set(c["pending"])
            self.metrics.outbox_dead.labels(sink=sid).set(c["dead"])

    async def pending(self) -> int:
        """Deliveries not yet delivered nor dead, over the configured sinks."""
        counts = await self.db.call(self.db.sync.outbox_counts)
        return sum(counts.get(s, {}).get("pending", 0) for s in self.sinks)

    async def wait_drained(self, timeout_s: float) -> bool:
        """While `run()` works: wait until nothing is pending (one-shot runs); True when drained."""
        self.notify()
        deadline = time.monotonic() + timeout_s
        while await self.pending():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def flush(self, timeout_s: float) -> bool:
        """After `run()` stopped: deliver what is due until drained or the time is up (shutdown)."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if not await self.deliver_due():
                    break
            return await self.pending() == 0
        except Exception as exc:  # the database failing at shutdown: what is pending goes out at the next start
            log.error("outbox: last deliveries before stopping failed: %s", exc)
            return False

    async def _retry_later(self, d: Delivery, sink: IncidentSink, reason: str) -> bool:
        """Schedule the next attempt with backoff, or dead-letter after max_attempts; False while it waits."""
        sink.health.ok, sink.health.last_error = False, reason
        if d.attempts + 1 >= self.config.max_attempts:
            log.error("%s: delivery %s dead-lettered after %d attempts: %s", sink.id, d.delivery_key,
                      d.attempts + 1, reason)  # fmt: skip
            why = f"gave up after {d.attempts + 1} attempts: {reason}"
            await self.db.call(self.db.sync.mark_dead, d, why)
            self.metrics.deliveries.labels(sink=sink.id, outcome="dead").inc()
            return True
        delay = self._backoff(d.attempts)
        log.warning("%s: delivery %s failed (attempt %d), retry in %.1f s: %s", sink.id, d.delivery_key,
                    d.attempts + 1, delay, reason)  # fmt: skip
        await self.db.call(self.db.sync.mark_retry, d, reason, time.time() + delay)
        self.metrics.deliveries.labels(sink=sink.id, outcome="retry").inc()
        return False

    def _backoff(self, attempts: int) -> float:
        # exponential with jitter, so sinks recovering together are not hit by every bridge at the same instant
        base = min(self.config.backoff_start_s * 2.0 ** min(attempts, 30), self.config.backoff_max_s)
        return base * random.uniform(0.5, 1.0)

    def payload_for(self, sink_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """What one sink is handed: with `privacy: blur`, the snapshot is the copy with the people blurred, made
        when the incident was (none when there is no such copy: a sink that must not see faces never gets the
        original); with `original`, the payload as stored."""
        out = dict(payload)
        snapshot = out.get("snapshot")
        if snapshot and self.privacy.get(sink_id, "blur") == "blur":
            blurred = blurred_path(str(snapshot))
            out["snapshot"] = str(blurred) if Path(blurred).is_file() else None
        return out

    async def _deliver(self, d: Delivery) -> bool:
        """One attempt; True when delivered or dead-lettered (the queue may move on), False when it waits."""
        sink = self.sinks[d.sink_id]
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that lands as publish finishes, and the
            # worker then never stops (pyproject bans it)
            async with asyncio.timeout(self.config.timeout_s):
                if d.kind == "incident":
                    receipt = await sink.publish(d.delivery_key, self.payload_for(d.sink_id, d.payload))
                elif isinstance(sink, RecordSink):
                    receipt = await sink.publish_record(d.delivery_key, d.kind, d.payload)
                else:  # only queued for record sinks: a config change turned this sink into another product
                    raise SinkRejected(f"{sink.id} ({sink.kind}) does not take {d.kind} records")
        except SinkAuthError as exc:
            sink.health.ok, sink.health.auth_failed, sink.health.last_error = False, True, str(exc)
            log.error("%s: authentication failed, holding deliveries: %s", sink.id, exc)
            await self.db.call(self.db.sync.mark_retry, d, str(exc), time.time() + self.config.auth_retry_s)
            self.metrics.deliveries.labels(sink=sink.id, outcome="auth").inc()
            return False
        except SinkRejected as exc:
            log.error("%s: delivery %s rejected, dead-lettered: %s", sink.id, d.delivery_key, exc)
            await self.db.call(self.db.sync.mark_dead, d, f"rejected: {exc}")
            self.metrics.deliveries.labels(sink=sink.id, outcome="rejected").inc()
            return True
        except (SinkNotReady, TimeoutError) as exc:
            return await self._retry_later(d, sink, str(exc) or f"no answer in {self.config.timeout_s:.0f} s")
        except Exception as exc:
            # an adapter bug must not stop deliveries to every sink: log it loudly, retry like an outage
            log.exception("%s: unexpected error delivering %s", sink.id, d.delivery_key)
            return await self._retry_later(d, sink, f"{type(exc).__name__}: {exc}")
        sink.health.ok, sink.health.auth_failed, sink.health.last_error = True, False, None
        await self.db.call(self.db.sync.mark_delivered, d, receipt.detail)
        self.metrics.deliveries.labels(sink=sink.id, outcome="delivered").inc()
        return True
