"""Insights: rule measurements rolled up per hour (footfall, occupancy, ...) and read back for a time range."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plugin.incidents.database import AsyncDatabase
from plugin.rules.base import Measurement

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 10.0  # buffered in memory between writes: gauges arrive with every analysed frame
QUEUE_METRICS = {"queue_length": "length", "queue_wait_s": "wait_s"}  # the queue rule's gauges -> summary names
_QUEUE_FIELDS = ("max_length", "length_samples", "length_sum", "max_wait_s", "wait_s_samples", "wait_s_sum")
# store occupancy (plugin/store_occupancy.py): the fused count's gauge, and its drift counters -> summary names
STORE_PEOPLE = "store_people"
STORE_COUNTERS = {"out_at_zero": "out_at_zero", "resets": "resets", "reset_removed": "removed_at_reset"}


@dataclass
class Rollup:
    """One hour of one series."""

    count: float = 0.0  # counters: the sum of values
    total: float = 0.0  # gauges: sum and number of samples (for the mean), max and last value
    n: int = 0
    peak: float = 0.0
    last: float = 0.0
    last_t: str = ""


def hour_bucket(t: datetime) -> str:
    """The UTC hour a time falls in, as ISO text (sorts and compares as text)."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0).isoformat()


class InsightsRecorder:
    """Collects measurements from every pipeline and writes hourly roll-ups to the store."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self._pending: dict[tuple[str, str, str, str, str], Rollup] = {}

    def add(self, m: Measurement) -> None:
        """Fold one measurement into its hour (in memory until the next flush)."""
        key = (hour_bucket(m.t), m.camera, m.rule_id, m.metric, m.key)
        r = self._pending.setdefault(key, Rollup())
        if m.kind == "count":
            r.count += m.value
        else:
            r.total += m.value
            r.n += 1
            r.peak = max(r.peak, m.value)
            r.last = m.value
            r.last_t = m.t.astimezone(UTC).isoformat()

    async def flush(self) -> None:
        """Write what was collected since the last flush; when the database refuses it, it is kept for the next."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self.db.call(self.db.sync.add_rollups, batch)
        except sqlite3.Error:
            self._merge_back(batch)
            raise

    def _merge_back(self, batch: dict[tuple[str, str, str, str, str], Rollup]) -> None:
        """Fold a batch the database refused into what arrived meanwhile, as add_rollups would have."""
        for key, old in batch.items():
            new = self._pending.get(key)
            if new is None:
                self._pending[key] = old
                continue
            new.count += old.count
            new.total += old.total
            new.n += old.n
            new.peak = max(new.peak, old.peak)
            if old.last_t > new.last_t:
                new.last, new.last_t = old.last, old.last_t

    async def run(self) -> None:
        """Flush periodically until cancelled, then once more. A database failure (disk full, locked) keeps the
        roll-ups in memory and is tried again at the next flush, instead of ending the flusher."""
        failing = False
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY_S)
                try:
                    await self.flush()
                except sqlite3.Error as exc:
                    if not failing:
                        log.error("insights: roll-ups kept in memory, the database refused them: %s", exc)
                    failing = True
                    continue
                if failing:
                    log.warning("insights: roll-ups written again")
                    failing = False
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())


def summarise(
    rows: list[dict[str, Any]], incidents: list[dict[str, Any]], resets: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The insights document for a range: line totals, occupancy, queues, store occupancy with its drift and
    closing `resets` (the store's rows), hourly series, incidents and dwell."""
    lines: dict[str, dict[str, int]] = {}
    occupancy: dict[str, dict[str, Any]] = {}
    stores: dict[str, dict[str, Any]] = {}
    queues: dict[str, dict[str, Any]] = {}
    hourly: list[dict[str, Any]] = []
    for r in rows:
        if r["metric"] in ("in", "out"):
            lines.setdefault(r["rule_id"], {"in": 0, "out": 0})[r["metric"]] += int(r["count"])
        elif r["metric"] == "people":
            o = occupancy.setdefault(r["rule_id"], {"zone": r["key"], "max": 0.0, "samples": 0, "sum": 0.0})
            o["max"] = max(o["max"], r["peak"])
            o["samples"] += r["n"]
            o["sum"] += r["total"]
        elif r["metric"] in QUEUE_METRICS:
            q = queues.setdefault(r["rule_id"], {"zone": r["key"]} | {f: 0.0 for f in _QUEUE_FIELDS})
            name = QUEUE_METRICS[r["metric"]]
            q[f"max_{name}"] = max(q[f"max_{name}"], r["peak"])
            q[f"{name}_samples"] += r["n"]
            q[f"{name}_sum"] += r["total"]
        elif r["metric"] == STORE_PEOPLE or r["metric"] in STORE_COUNTERS:
            _add_store(stores.setdefault(r["rule_id"], _new_store()), r)
        hourly.append(
            {
                "hour": r["bucket"],
                "camera": r["camera"],
                "rule_id": r["rule_id"],
                "metric": r["metric"],
                "key": r["key"],
                "value": r["count"] if r["n"] == 0 else round(r["total"] / r["n"], 3),
                "max": r["peak"] if r["n"] else None,
            }
        )
    for o in occupancy.values():
        o["avg"] = round(o.pop("sum") / o["samples"], 3) if o["samples"] else 0.0
        o["max"] = int(o["max"])
    for q in queues.values():
        for name in QUEUE_METRICS.values():
            n, total = q.pop(f"{name}_samples"), q.pop(f"{name}_sum")
            q[f"avg_{name}"] = round(total / n, 3) if n else 0.0
        q["max_length"] = int(q["max_length"])
        q["max_wait_s"] = round(q["max_wait_s"], 1)
    _finish_stores(stores, resets or [])
    by_rule: dict[str, int] = {}
    dwell: dict[str, dict[str, float]] = {}
    for inc in incidents:
        by_rule[inc["rule_id"]] = by_rule.get(inc["rule_id"], 0) + 1
        secs = inc.get("details", {}).get("dwell_s")
        if inc["type"] == "loitering" and inc["state"] == "end" and isinstance(secs, int | float) and inc["zone"]:
            d = dwell.setdefault(inc["zone"], {"visits": 0, "total_s": 0.0, "max_s": 0.0})
            d["visits"] += 1
            d["total_s"] += secs
            d["max_s"] = max(d["max_s"], secs)
    for d in dwell.values():
        d["avg_s"] = round(d["total_s"] / d["visits"], 1)
        d["total_s"] = round(d["total_s"], 1)
        d["max_s"] = round(d["max_s"], 1)
    return {
        "lines": lines,
        "occupancy": occupancy,
        "queues": queues,
        "store_occupancy": stores,
        "incidents": by_rule,
        "dwell": dwell,
        "hourly": hourly,
    }


def _new_store() -> dict[str, Any]:
    counters = dict.fromkeys(STORE_COUNTERS.values(), 0)
    return {"max": 0.0, "samples": 0, "sum": 0.0, "last": None, "last_t": ""} | counters


def _add_store(s: dict[str, Any], r: dict[str, Any]) -> None:
    """Fold one hourly row of a store occupancy into its summary."""
    if r["metric"] == STORE_PEOPLE:
        s["max"] = max(s["max"], r["peak"])
        s["samples"] += r["n"]
        s["sum"] += r["total"]
        if r["last_t"] >= s["last_t"]:
            s["last"], s["last_t"] = int(r["last"]), r["last_t"]
    else:
        s[STORE_COUNTERS[r["metric"]]] += int(r["count"])


def _finish_stores(stores: dict[str, dict[str, Any]], resets: list[dict[str, Any]]) -> None:
    """Means from sums, and each closing reset listed under its count."""
    for row in resets:
        s = stores.setdefault(row["id"], _new_store())
        s.setdefault("reset_log", []).append(
            {"at": row["at"], "removed": row["removed"], "out_at_zero": row["out_at_zero"]}
        )
    for s in stores.values():
        s["avg"] = round(s.pop("sum") / s["samples"], 3) if s["samples"] else 0.0
        s["max"] = int(s["max"])
        s.pop("last_t")
        s.setdefault("reset_log", [])
