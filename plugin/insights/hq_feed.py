"""What a store sends head office besides incidents: at each finished hour, three keyed records (the hour's
roll-ups with the limits and rule settings they ran under, POS totals and exceptions per register and operator,
camera health), queued in the outbox for the record sinks (`kind: hq`). A key is queued once: an hour already
queued is never rebuilt, so head office gets each record exactly once even across restarts. Camera health is
sampled here into the roll-ups (seconds per state), so a restart keeps what was measured before it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from plugin.incidents.database import AsyncDatabase
from plugin.insights.rollups import FLUSH_EVERY_S, InsightsRecorder, hour_bucket
from plugin.rules.base import Measurement

log = logging.getLogger(__name__)

HEALTH_RULE = "camera-health"  # the roll-ups' rule id of the sampled camera states (metric "state_s")
HEALTH_METRIC = "state_s"
TRANSACTION_KIND = "pos.transaction"  # plugin/fusion/pos/model.py's kind (insights sits below fusion)
LOOKBACK_H = 48  # hours a restarted bridge still sends
SAMPLE_S = 60.0


def _amount(payload: Mapping[str, Any]) -> float:
    """What a stored transaction moved: its total, else its live lines (returns negative)."""
    if payload.get("total") is not None:
        return float(payload["total"])
    total = 0.0
    for line in payload.get("lines") or ():
        if line.get("voided"):
            continue
        amount = float(line.get("amount") or 0.0)
        total += -amount if line.get("kind") == "return" else amount
    return round(total, 2)


def pos_rows(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stored POS business events of one hour as rows per register and operator."""
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for e in events:
        kind, p = e["kind"], e["payload"]
        if not kind.startswith("pos.") or not p.get("lane"):
            continue
        op = p.get("operator")
        row = rows.setdefault((str(p["lane"]), None if op is None else str(op)), {
            "lane": str(p["lane"]), "operator": None if op is None else str(op), "transactions": 0,
            "amount": 0.0, "exceptions": {},
        })  # fmt: skip
        if kind == TRANSACTION_KIND:
            row["transactions"] += 1
            row["amount"] = round(row["amount"] + _amount(p), 2)
        else:
            name = kind.removeprefix("pos.")
            row["exceptions"][name] = row["exceptions"].get(name, 0) + 1
    return sorted(rows.values(), key=lambda r: (r["lane"], r["operator"] or ""))


class HourlyRecords:
    """Samples camera health and queues each finished hour's records for the record sinks."""

    def __init__(
        self,
        db: AsyncDatabase,
        insights: InsightsRecorder,
        sink_ids: Sequence[str],
        notify: Callable[[], None],
        health: Callable[[], Mapping[str, str]],
        limits: Mapping[str, Mapping[str, Any]],
        rules: Mapping[str, Mapping[str, Any]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.insights = insights
        self.sink_ids = list(sink_ids)
        self.notify = notify
        self.health = health
        self.limits = {k: dict(v) for k, v in limits.items()}
        self.rules = {k: dict(v) for k, v in rules.items()}
        self.clock = clock
        # an hour is sent once its roll-ups are surely written: the recorder flushes every FLUSH_EVERY_S
        self.grace = timedelta(seconds=3 * FLUSH_EVERY_S)

    def sample_health(self, seconds: float) -> None:
        """Add `seconds` in its current state to each camera's hour."""
        now = self.clock()
        for camera, state in self.health().items():
            self.insights.add(Measurement(HEALTH_RULE, camera, now, HEALTH_METRIC, seconds, "count", state))

    async def publish_due(self) -> int:
        """Queue every finished hour of the last LOOKBACK_H not queued yet; returns how many records."""
        now = self.clock()
        last = datetime.fromisoformat(hour_bucket(now - self.grace))  # the hour still open (or in its grace)
        queued = 0
        for back in range(LOOKBACK_H, 0, -1):
            hour = last - timedelta(hours=back)
            queued += await self._publish_hour(hour)
        if queued:
            self.notify()
        return queued

    async def _publish_hour(self, hour: datetime) -> int:
        key = hour.isoformat()
        if await self.db.call(self.db.sync.record_queued, f"camera_health:{key}"):
            return 0  # queued last of the three: this hour is done
        end = (hour + timedelta(hours=1)).isoformat()
        rows = await self.db.call(self.db.sync.rollups, key, end)
        events = await self.db.call(self.db.sync.business_events, key, end, None)
        if not rows and not events:
            return 0  # nothing ran this hour
        fields = ("camera", "rule_id", "metric", "key", "count", "total", "n", "peak", "last")
        series = [{f: r[f] for f in fields} for r in rows if r["rule_id"] != HEALTH_RULE]
        health: dict[str, dict[str, float]] = {}
        for r in rows:
            if r["rule_id"] == HEALTH_RULE and r["metric"] == HEALTH_METRIC:
                health.setdefault(r["camera"], {})[r["key"]] = round(float(r["count"]), 1)
        records = [
            ("rollup", {"hour": key, "rows": series, "limits": self.limits, "rules": self.rules}),
            ("pos", {"hour": key, "rows": pos_rows(events)}),
            ("camera_health", {"hour": key, "cameras": health}),
        ]
        for kind, payload in records:
            await self.db.call(self.db.sync.enqueue_record, kind, f"{kind}:{key}", payload, self.sink_ids)
        log.info("hq: hour %s queued (%d roll-up rows, %d POS events)", key, len(series), len(events))
        return len(records)

    async def run(self, sample_s: float = SAMPLE_S) -> None:
        """Sample and publish until cancelled."""
        while True:
            try:
                self.sample_health(sample_s)
                await self.publish_due()
            except Exception:
                # the next pass tries again: nothing is lost, each hour is rebuilt from the database
                log.exception("hq: queueing the hourly records failed")
            await asyncio.sleep(sample_s)
