"""A synthetic chain for head office's tests, benchmark and demo: what a store with 16 cameras sends each hour
(roll-ups, POS totals, camera health) and its incidents, deterministic per store and hour. Shapes follow the bridge's
own records (plugin/insights/hq_feed.py, the incident JSON); the numbers follow a store's day (opening 08-20 local,
lunch and after-work peaks)."""

from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

CAMERAS = 16
ENTRANCES = ("entrance-main", "entrance-side")
LANES = ("1", "2", "3", "4")
OPEN, CLOSE = 8, 20
INCIDENTS_PER_CAMERA_DAY = 4.0  # after tuning, a realistic alert volume for loss prevention
# incident type -> (share, rule, chance a person confirms it when judged)
TYPES: dict[str, tuple[float, str, float]] = {
    "loitering": (0.30, "aisle-dwell", 0.35),
    "pos_void": (0.15, "pos.void", 0.55),
    "pos_no_sale": (0.10, "pos.no_sale", 0.6),
    "pos_refund": (0.05, "pos.refund", 0.5),
    "sweep": (0.08, "shelf-sweep", 0.7),
    "queue": (0.17, "queue-1", 0.9),
    "tailgating": (0.07, "staff-door", 0.45),
    "alarm_verified": (0.03, "panel-1", 0.85),
    "alarm_unverified": (0.05, "panel-1", 0.1),
}
REASON_CONFIRMED = ("theft_seen", "policy_breach", "safety")
REASON_FALSE = ("staff_activity", "customer_normal", "detection_error", "camera_problem")


def _shape(local_hour: int) -> float:
    """The share of a day's visitors in a local hour: zero when closed, lunch and after-work peaks."""
    if not OPEN <= local_hour < CLOSE:
        return 0.0
    return 0.5 + math.exp(-((local_hour - 12.5) ** 2) / 3) + 1.2 * math.exp(-((local_hour - 17.5) ** 2) / 2.5)


@dataclass(frozen=True)
class SynthStore:
    """One synthetic store: its size sets its footfall, its risk its incident rate."""

    id: str
    name: str
    timezone: str
    size: float  # visitors per open hour at a flat rate
    risk: float  # incident rate factor

    @classmethod
    def make(cls, n: int) -> SynthStore:
        """Store number n (deterministic)."""
        rng = random.Random(n)
        tz = ("Europe/Berlin", "Europe/Paris", "Europe/London", "Europe/Madrid")[n % 4]
        city = ("Berlin", "Paris", "London", "Madrid")[n % 4]
        return cls(f"store-{n:03d}", f"{city} {n:03d}", tz, rng.uniform(60, 260), rng.uniform(0.4, 2.2))


def _rng(store: SynthStore, hour: datetime, salt: str) -> random.Random:
    return random.Random(f"{store.id}|{hour.isoformat()}|{salt}")


def hour_records(store: SynthStore, hour: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """The three hourly records (kind, key, data) a store sends for a finished UTC hour."""
    local = hour.astimezone(ZoneInfo(store.timezone)).hour
    rng = _rng(store, hour, "hour")
    visitors = int(store.size * _shape(local) * rng.uniform(0.8, 1.2))
    rows: list[dict[str, Any]] = []
    split = rng.uniform(0.55, 0.8)
    for entrance, share in zip(ENTRANCES, (split, 1 - split), strict=True):
        n = round(visitors * share)
        if n:
            cam = f"cam-{entrance}"
            rows.append({"camera": cam, "rule_id": entrance, "metric": "in", "key": "person", "count": float(n)})
            rows.append({"camera": cam, "rule_id": entrance, "metric": "out", "key": "person", "count": float(n)})
    if visitors:
        mean_people = visitors * 0.35
        rows.append(
            {
                "camera": "cam-floor",
                "rule_id": "floor-occupancy",
                "metric": "people",
                "key": "floor",
                "total": mean_people * 3600,
                "n": 3600,
                "peak": mean_people * 1.6,
                "last": mean_people,
            }
        )
        q = visitors * 0.02
        rows.append(
            {
                "camera": "cam-tills",
                "rule_id": "queue-1",
                "metric": "queue_length",
                "key": "tills",
                "total": q * 3600,
                "n": 3600,
                "peak": round(q * 2.2),
                "last": q,
            }
        )
        rows.append(
            {
                "camera": "cam-tills",
                "rule_id": "queue-1",
                "metric": "queue_wait_s",
                "key": "tills",
                "total": q * 45 * 3600,
                "n": 3600,
                "peak": q * 45 * 2.2,
                "last": q * 45,
            }
        )
    limits = {"queue-1": {"max_length": 5, "max_wait_s": 180.0}}
    rules = {
        "queue-1": {"type": "queue", "max_length": 5, "max_wait_s": 180.0},
        "aisle-dwell": {"type": "loitering", "min_dwell_s": 90.0 if hour.month % 2 else 60.0},
    }
    transactions = int(visitors * rng.uniform(0.25, 0.4))
    pos_rows = []
    for i, lane in enumerate(LANES):
        share = transactions // len(LANES) + (1 if i < transactions % len(LANES) else 0)
        if share:
            exceptions = {"void": 1} if rng.random() < 0.15 else {}
            pos_rows.append(
                {
                    "lane": lane,
                    "operator": f"op{(i + local) % 9 + 1}",
                    "transactions": share,
                    "amount": round(share * rng.uniform(18, 32), 2),
                    "exceptions": exceptions,
                }
            )
    health: dict[str, dict[str, float]] = {}
    for c in range(CAMERAS):
        off = 600.0 if rng.random() < 0.01 else 0.0
        health[f"cam{c + 1:02d}"] = {"online": 3600.0 - off} | ({"offline": off} if off else {})
    key = hour.isoformat()
    return [
        ("rollup", f"rollup:{key}", {"hour": key, "rows": rows, "limits": limits, "rules": rules}),
        ("pos", f"pos:{key}", {"hour": key, "rows": pos_rows}),
        ("camera_health", f"camera_health:{key}", {"hour": key, "cameras": health}),
    ]


def hour_incidents(store: SynthStore, hour: datetime, snapshot: bytes | None) -> list[dict[str, Any]]:
    """The incidents starting in a UTC hour, each as its end state (start and end follow from it)."""
    local = hour.astimezone(ZoneInfo(store.timezone)).hour
    rng = _rng(store, hour, "incidents")
    open_share = _shape(local) / 1.5 if OPEN <= local < CLOSE else 0.02
    rate = CAMERAS * INCIDENTS_PER_CAMERA_DAY / 12 * store.risk * open_share
    count = _poisson(rng, rate)
    out = []
    names, weights = list(TYPES), [t[0] for t in TYPES.values()]
    for k in range(count):
        typ = rng.choices(names, weights)[0]
        if not OPEN <= local < CLOSE and not typ.startswith("alarm"):
            typ = rng.choice(("alarm_verified", "alarm_unverified"))
        start = hour + timedelta(seconds=rng.uniform(0, 3500))
        length = rng.uniform(20, 400) if typ in ("loitering", "queue") else rng.uniform(2, 30)
        camera = f"cam{rng.randrange(CAMERAS) + 1:02d}"
        details: dict[str, Any] = {"caption": typ.replace("_", " ")}
        if typ == "loitering":
            details["dwell_s"] = round(length, 1)
        if typ.startswith("pos_"):
            details |= {
                "lane": rng.choice(LANES),
                "operator": f"op{rng.randrange(9) + 1}",
                "amount": round(rng.uniform(5, 120), 2),
            }
        out.append(
            {
                "id": f"{store.id}-{hour:%Y%m%d%H}-{k}",
                "rule_id": TYPES[typ][1],
                "type": typ,
                "camera": camera,
                "zone": "aisle-3" if typ == "loitering" else None,
                "severity": "critical" if typ in ("alarm_verified", "sweep") else "warning",
                "state": "end",
                "seq": 1,
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=length)).isoformat(),
                "explanation": f"{typ.replace('_', ' ').capitalize()} on {camera}",
                "track_ids": [k + 1],
                "details": details,
                "snapshot_jpeg": None if snapshot is None else base64.b64encode(snapshot).decode("ascii"),
            }
        )
    return out


def verdict_for(store: SynthStore, incident: dict[str, Any]) -> tuple[str, str] | None:
    """The verdict a person gave an incident (about a third are judged), or None."""
    rng = random.Random(f"{incident['id']}|verdict")
    if rng.random() > 0.35:
        return None
    p = TYPES[incident["type"]][2]
    if incident["type"] == "loitering" and datetime.fromisoformat(incident["start"]).month % 2:
        p = min(1.0, p + 0.25)  # the months with the longer dwell threshold: fewer false alarms
    roll = rng.random()
    if roll < 0.1:
        return "unsure", "not_visible"
    if roll < 0.1 + 0.9 * p:
        return "confirmed", rng.choice(REASON_CONFIRMED)
    return "false_alarm", rng.choice(REASON_FALSE)


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1
