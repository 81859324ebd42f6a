"""One store's figures over a period: footfall by hour and entrance, the occupancy curve, queue length and wait
against the limits, dwell by zone, incidents by type and hour, POS exceptions by register and operator, camera health
by day. Read from the store's hourly rows and its incidents; hours are the store's own."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from plugin.hq.chain import utc_bounds
from plugin.hq.db import HqDatabase, Store
from plugin.hq.tables import Period, Table

HOURS = [f"{h:02d}" for h in range(24)]


@dataclass
class StoreFigures:
    """What the store page shows: hour-of-day series for the charts and a table for each."""

    footfall: dict[str, list[float | None]] = field(default_factory=dict)  # entrance -> visitors per local hour
    occupancy: dict[str, list[float | None]] = field(default_factory=dict)  # zone rule -> mean people per hour
    queue_length: dict[str, list[float | None]] = field(default_factory=dict)
    queue_wait: dict[str, list[float | None]] = field(default_factory=dict)
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents_by_hour: dict[str, list[float | None]] = field(default_factory=dict)  # type -> count per local hour
    dwell: dict[str, dict[str, float]] = field(default_factory=dict)  # zone -> visits, avg_s, max_s
    health_days: list[str] = field(default_factory=list)
    health: dict[str, list[float | None]] = field(default_factory=dict)  # camera -> minutes down per day
    tables: list[Table] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)


def _means(sums: dict[str, list[float]], counts: dict[str, list[float]]) -> dict[str, list[float | None]]:
    return {
        k: [None if counts[k][h] == 0 else round(sums[k][h] / counts[k][h], 2) for h in range(24)] for k in sorted(sums)
    }


async def store_figures(db: HqDatabase, store: Store, period: Period) -> StoreFigures:
    """Every figure of the store page."""
    tz = ZoneInfo(store.timezone)
    t0, t1 = utc_bounds(period)
    hours = await db.fetch(
        "SELECT hour, series, limits, pos, health FROM store_hours WHERE store_id = $1 AND hour >= $2 AND hour < $3",
        store.id,
        t0,
        t1,
    )
    f = StoreFigures()
    foot: dict[str, list[float]] = defaultdict(lambda: [0.0] * 24)
    gauges: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]] = {
        m: (defaultdict(lambda: [0.0] * 24), defaultdict(lambda: [0.0] * 24))
        for m in ("people", "store_people", "queue_length", "queue_wait_s")
    }
    peaks: dict[tuple[str, str], float] = {}
    by_lane: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_operator: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    health_by_day: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    for h in hours:
        local = h["hour"].astimezone(tz)
        lh = local.hour
        for r in h["series"]:
            if r["metric"] == "in":
                foot[r["rule_id"]][lh] += r["count"]
            elif r["metric"] in gauges and r["n"]:
                sums, counts = gauges[r["metric"]]
                sums[r["rule_id"]][lh] += r["total"]
                counts[r["rule_id"]][lh] += r["n"]
                key = (r["metric"], r["rule_id"])
                peaks[key] = max(peaks.get(key, 0.0), r["peak"])
        f.limits.update(h["limits"])
        for p in h["pos"]:
            for name, n in p["exceptions"].items():
                by_lane[p["lane"]][name] += n
                by_operator[p["operator"] or "(none)"][name] += n
        day = local.date().isoformat()
        for camera, states in h["health"].items():
            for state, secs in states.items():
                health_by_day[camera][day][state] += secs
    f.footfall = {k: [v or None for v in foot[k]] for k in sorted(foot)}
    f.occupancy = _means(*gauges["people"]) | {f"store {k}": v for k, v in _means(*gauges["store_people"]).items()}
    f.queue_length = _means(*gauges["queue_length"])
    f.queue_wait = _means(*gauges["queue_wait_s"])
    f.health_days = sorted({d for days in health_by_day.values() for d in days})
    for camera in sorted(health_by_day):
        down = [(health_by_day[camera].get(d, {}).get("offline", 0.0)
                 + health_by_day[camera].get(d, {}).get("degraded", 0.0)) / 60.0 for d in f.health_days]  # fmt: skip
        if any(down):  # the chart shows the cameras that were down; the table has every camera
            f.health[camera] = [round(m, 1) or None for m in down]
    await _incidents(db, store, tz, t0, t1, f)
    _tables(f, foot, by_lane, by_operator, peaks, health_by_day)
    return f


async def _incidents(db: HqDatabase, store: Store, tz: ZoneInfo, t0: Any, t1: Any, f: StoreFigures) -> None:
    rows = await db.fetch(
        """SELECT id, type, rule_id, camera, zone, severity, state, start_at, end_at, explanation,
                  details->'dwell_s' AS dwell_s, snapshot IS NOT NULL AS has_snapshot
           FROM incidents WHERE store_id = $1 AND start_at >= $2 AND start_at < $3 ORDER BY start_at DESC""",
        store.id,
        t0,
        t1,
    )
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0] * 24)
    dwell: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["type"].startswith("system") or r["type"] == "camera_offline":
            continue
        by_type[r["type"]][r["start_at"].astimezone(tz).hour] += 1
        if r["type"] == "loitering" and r["state"] == "end" and r["zone"] and r["dwell_s"] is not None:
            dwell[r["zone"]].append(float(r["dwell_s"]))
    f.incidents_by_hour = {k: [v or None for v in by_type[k]] for k in sorted(by_type)}
    f.dwell = {
        z: {"visits": len(v), "avg_s": round(sum(v) / len(v), 1), "max_s": round(max(v), 1)}
        for z, v in sorted(dwell.items())
    }
    f.recent = [dict(r) for r in rows[:50]]


def _tables(
    f: StoreFigures,
    foot: dict[str, list[float]],
    by_lane: dict[str, dict[str, int]],
    by_operator: dict[str, dict[str, int]],
    peaks: dict[tuple[str, str], float],
    health_by_day: dict[str, dict[str, dict[str, float]]],
) -> None:
    t = Table("footfall", "Footfall by hour and entrance", ["hour", *sorted(foot), "total"])
    for h in range(24):
        values = [int(foot[k][h]) for k in sorted(foot)]
        t.rows.append([f"{h:02d}:00", *values, sum(values)])
    t.note = "in-crossings of each counting line, summed over the period per hour of the store's day"
    f.tables.append(t)
    q = Table(
        "queues",
        "Queues against their limits",
        ["queue rule", "mean length", "peak length", "limit length", "mean wait s", "peak wait s", "limit wait s"],
    )
    for rule in sorted(set(f.queue_length) | set(f.queue_wait)):
        lengths = [v for v in f.queue_length.get(rule, []) if v is not None]
        waits = [v for v in f.queue_wait.get(rule, []) if v is not None]
        limit = f.limits.get(rule, {})
        q.rows.append(
            [
                rule,
                round(sum(lengths) / len(lengths), 2) if lengths else None,
                peaks.get(("queue_length", rule)),
                limit.get("max_length"),
                round(sum(waits) / len(waits), 1) if waits else None,
                peaks.get(("queue_wait_s", rule)),
                limit.get("max_wait_s"),
            ]
        )
    q.note = "mean of the hourly means (samples every analysed frame); peak: the highest sample; limits: the rule's"
    f.tables.append(q)
    o = Table("occupancy", "Occupancy by hour (mean people)", ["hour", *f.occupancy])
    for h in range(24):
        o.rows.append([f"{h:02d}:00", *(f.occupancy[k][h] for k in f.occupancy)])
    f.tables.append(o)
    d = Table("dwell", "Dwell by zone (loitering incidents)", ["zone", "visits", "mean s", "longest s"])
    d.rows = [[z, v["visits"], v["avg_s"], v["max_s"]] for z, v in f.dwell.items()]
    d.note = "time people stayed in a watched zone past the loitering rule's threshold (ended incidents)"
    f.tables.append(d)
    i = Table("incidents_by_hour", "Incidents by type and hour", ["hour", *f.incidents_by_hour])
    for h in range(24):
        i.rows.append([f"{h:02d}:00", *(int(f.incidents_by_hour[k][h] or 0) for k in f.incidents_by_hour)])
    f.tables.append(i)
    kinds = sorted({k for m in (*by_lane.values(), *by_operator.values()) for k in m})
    for name, title, data in (
        ("pos_by_register", "POS exceptions by register", by_lane),
        ("pos_by_operator", "POS exceptions by operator", by_operator),
    ):
        p = Table(name, title, [title.rsplit(" ", 1)[1], *kinds, "total"])
        for key in sorted(data, key=lambda k: -sum(data[k].values())):
            p.rows.append([key, *(data[key].get(k, 0) for k in kinds), sum(data[key].values())])
        p.note = "exceptions the store's POS rules found (void, no sale, refund, ...), from the hourly POS totals"
        f.tables.append(p)
    c = Table(
        "camera_health", "Camera health by day", ["camera", "day", "online %", "online s", "degraded s", "offline s"]
    )
    for camera in sorted(health_by_day):
        for day in sorted(health_by_day[camera]):
            s = health_by_day[camera][day]
            total = sum(s.values())
            c.rows.append(
                [
                    camera,
                    day,
                    round(100 * s.get("online", 0.0) / total, 1) if total else None,
                    s.get("online", 0.0),
                    s.get("degraded", 0.0),
                    s.get("offline", 0.0),
                ]
            )
    c.note = "seconds in each state, sampled every minute by the store"
    f.tables.append(c)
