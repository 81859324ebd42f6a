"""The chain's figures: stores ranked by risk, weekly trends, conversion per store and hour, alarm verification.
Every figure is read from the day and hour tables ingest keeps current; each table says how it was computed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from plugin.hq.db import HqDatabase
from plugin.hq.tables import Period, Table

# The chain pages read store_days' totals, kept by triggers from the day tables (schema/003_store_day_totals.sql:
# system and camera-offline incidents are StoreSight's own health, not a risk in the store)
ALARM_TYPES = ("alarm_verified", "alarm_unverified")


def utc_bounds(period: Period) -> tuple[datetime, datetime]:
    """The period's days as UTC instants (verdicts and incidents are stored by instant)."""
    return datetime.combine(period.start, time(), UTC), datetime.combine(period.end, time(), UTC)


def _rate(num: float, den: float, scale: float = 1.0) -> float | None:
    return None if not den else num * scale / den


@dataclass
class StoreRisk:
    """One store's line in the ranking."""

    id: str
    name: str
    visitors: int
    incidents: int
    exceptions: int
    alarms: int
    confirmed: int
    judged: int
    transactions: int
    last_seen: datetime | None

    @property
    def per_1000(self) -> float | None:
        """Incidents per 1,000 visitors."""
        return _rate(self.incidents, self.visitors, 1000.0)

    @property
    def confirmed_rate(self) -> float | None:
        """Confirmed among the incidents judged confirmed or false alarm."""
        return _rate(self.confirmed, self.judged)


async def store_risks(db: HqDatabase, stores: list[str], period: Period) -> list[StoreRisk]:
    """Each store's figures over the period, riskiest first (see `risk_score`)."""
    rows = await db.fetch(
        """WITH d AS (SELECT store_id, sum(visitors) AS visitors, sum(transactions) AS transactions,
                              sum(incidents) AS incidents, sum(exceptions) AS exceptions, sum(alarms) AS alarms,
                              sum(confirmed) AS confirmed, sum(judged) AS judged
                       FROM store_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3) GROUP BY store_id)
            SELECT s.id, s.name, s.last_seen, coalesce(d.visitors, 0) AS visitors,
                   coalesce(d.transactions, 0) AS transactions, coalesce(d.incidents, 0) AS incidents,
                   coalesce(d.exceptions, 0) AS exceptions, coalesce(d.alarms, 0) AS alarms,
                   coalesce(d.confirmed, 0) AS confirmed, coalesce(d.judged, 0) AS judged
            FROM stores s LEFT JOIN d ON d.store_id = s.id
            WHERE s.id = ANY($3)""",
        period.start,
        period.end,
        stores,
    )
    risks = [
        StoreRisk(
            r["id"],
            r["name"],
            int(r["visitors"]),
            int(r["incidents"]),
            int(r["exceptions"]),
            int(r["alarms"]),
            int(r["confirmed"]),
            int(r["judged"]),
            int(r["transactions"]),
            r["last_seen"],
        )
        for r in rows
    ]
    chain_rate = _rate(sum(r.confirmed for r in risks), sum(r.judged for r in risks)) or 1.0
    risks.sort(key=lambda r: (-risk_score(r, chain_rate), r.id))
    return risks


def risk_score(r: StoreRisk, chain_rate: float) -> float:
    """Confirmed incidents per 1,000 visitors, estimated: incidents per 1,000 visitors times the store's confirmed
    rate (the chain's where nothing was judged), so a store whose alerts are mostly false alarms ranks lower."""
    rate = r.confirmed_rate if r.confirmed_rate is not None else chain_rate
    return (r.per_1000 or 0.0) * rate


def ranking_table(risks: list[StoreRisk], chain_rate: float) -> Table:
    """The ranking as a table."""
    t = Table(
        "ranking",
        "Stores ranked by risk",
        [
            "store",
            "name",
            "visitors",
            "incidents",
            "per 1,000 visitors",
            "judged",
            "confirmed",
            "confirmed rate",
            "POS exceptions",
            "alarms",
            "risk score",
            "last record",
        ],
    )
    for r in risks:
        t.rows.append(
            [
                r.id,
                r.name,
                r.visitors,
                r.incidents,
                r.per_1000,
                r.judged,
                r.confirmed,
                r.confirmed_rate,
                r.exceptions,
                r.alarms,
                risk_score(r, chain_rate),
                r.last_seen,
            ]
        )
    t.note = (
        "visitors: in-crossings of the store's counting lines (hourly roll-ups); incidents: every incident but "
        "StoreSight's own health; confirmed rate: confirmed / (confirmed + false alarm), latest verdict per "
        "incident; risk score: per 1,000 visitors x confirmed rate (the chain's rate where none was judged)"
    )
    return t


async def weekly_trends(db: HqDatabase, stores: list[str], period: Period) -> Table:
    """Per week (Monday first) over the visible stores: visitors, incidents, per 1,000, exceptions, conversion."""
    rows = await db.fetch(
        """SELECT date_trunc('week', day)::date AS week, sum(visitors) AS visitors,
                  sum(transactions) AS transactions, sum(incidents) AS incidents, sum(exceptions) AS exceptions,
                  sum(confirmed) AS confirmed, sum(judged) AS judged
           FROM store_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3) GROUP BY 1 ORDER BY 1""",
        period.start,
        period.end,
        stores,
    )
    t = Table(
        "weekly",
        "Trends by week",
        [
            "week",
            "visitors",
            "incidents",
            "per 1,000 visitors",
            "confirmed rate",
            "POS exceptions",
            "transactions",
            "conversion",
        ],
    )
    for r in rows:
        t.rows.append(
            [
                r["week"],
                int(r["visitors"]),
                int(r["incidents"]),
                _rate(r["incidents"], r["visitors"], 1000.0),
                _rate(r["confirmed"], r["judged"]),
                int(r["exceptions"]),
                int(r["transactions"]),
                _rate(r["transactions"], r["visitors"]),
            ]
        )
    t.note = "weeks start on Monday (the stores' own days); conversion: POS transactions / visitors"
    return t


async def conversion(db: HqDatabase, stores: list[str], period: Period) -> tuple[Table, Table]:
    """Conversion per store over the period, and per local hour of the day over the visible stores."""
    t0, t1 = utc_bounds(period)
    per_store = await db.fetch(
        """SELECT s.id, s.name, coalesce(sum(d.visitors), 0) AS visitors, coalesce(sum(d.transactions), 0) AS txns
           FROM stores s LEFT JOIN store_days d ON d.store_id = s.id AND d.day >= $1 AND d.day < $2
           WHERE s.id = ANY($3) GROUP BY s.id, s.name ORDER BY s.id""",
        period.start,
        period.end,
        stores,
    )
    by_hour = await db.fetch(
        """SELECT extract(hour FROM h.hour AT TIME ZONE s.timezone)::int AS local_hour, sum(h.visitors) AS visitors,
                  sum(h.transactions) AS txns
           FROM store_hours h JOIN stores s ON s.id = h.store_id
           WHERE h.hour >= $1 AND h.hour < $2 AND h.store_id = ANY($3) GROUP BY 1 ORDER BY 1""",
        t0,
        t1,
        stores,
    )
    a = Table(
        "conversion_by_store", "Conversion per store", ["store", "name", "visitors", "transactions", "conversion"]
    )
    for r in per_store:
        a.rows.append([r["id"], r["name"], int(r["visitors"]), int(r["txns"]), _rate(r["txns"], r["visitors"])])
    a.rows.sort(key=lambda row: -(row[4] or 0.0))
    b = Table(
        "conversion_by_hour",
        "Conversion per hour of the day (store time)",
        ["hour", "visitors", "transactions", "conversion"],
    )
    for r in by_hour:
        b.rows.append(
            [f"{r['local_hour']:02d}:00", int(r["visitors"]), int(r["txns"]), _rate(r["txns"], r["visitors"])]
        )
    a.note = b.note = (
        "conversion: POS transactions / visitors; visitors from the entrance lines' in-crossings, "
        "transactions from the POS hourly totals"
    )
    return a, b


async def alarm_verification(db: HqDatabase, stores: list[str], period: Period) -> tuple[Table, Table]:
    """Alarms received, verified by video and unverified, per store and per local hour of the day."""
    t0, t1 = utc_bounds(period)
    per_store = await db.fetch(
        """SELECT s.id, s.name, coalesce(sum(t.incidents) FILTER (WHERE t.type = 'alarm_verified'), 0) AS verified,
                  coalesce(sum(t.incidents) FILTER (WHERE t.type = 'alarm_unverified'), 0) AS unverified
           FROM stores s LEFT JOIN day_types t ON t.store_id = s.id AND t.day >= $1 AND t.day < $2
                AND t.type = ANY($4)
           WHERE s.id = ANY($3) GROUP BY s.id, s.name ORDER BY s.id""",
        period.start,
        period.end,
        stores,
        list(ALARM_TYPES),
    )
    by_hour = await db.fetch(
        """SELECT extract(hour FROM i.start_at AT TIME ZONE s.timezone)::int AS local_hour,
                  count(*) FILTER (WHERE i.type = 'alarm_verified') AS verified,
                  count(*) FILTER (WHERE i.type = 'alarm_unverified') AS unverified
           FROM incidents i JOIN stores s ON s.id = i.store_id
           WHERE i.start_at >= $1 AND i.start_at < $2 AND i.store_id = ANY($3) AND i.type = ANY($4)
           GROUP BY 1 ORDER BY 1""",
        t0,
        t1,
        stores,
        list(ALARM_TYPES),
    )
    a = Table(
        "alarms_by_store",
        "Alarms per store",
        ["store", "name", "received", "verified by video", "unverified", "verified share"],
    )
    for r in per_store:
        v, u = int(r["verified"]), int(r["unverified"])
        a.rows.append([r["id"], r["name"], v + u, v, u, _rate(v, v + u)])
    b = Table(
        "alarms_by_hour",
        "Alarms per hour of the day (store time)",
        ["hour", "received", "verified by video", "unverified"],
    )
    for r in by_hour:
        b.rows.append(
            [
                f"{r['local_hour']:02d}:00",
                int(r["verified"]) + int(r["unverified"]),
                int(r["verified"]),
                int(r["unverified"]),
            ]
        )
    a.note = b.note = (
        "received: alarm-panel alarms the stores judged on video (incidents alarm_verified and "
        "alarm_unverified); verified: people seen in the alarm's zones in its window"
    )
    return a, b


def chain_rate_of(risks: list[StoreRisk]) -> float:
    """The chain's confirmed rate (1.0 while nothing was judged)."""
    return _rate(sum(r.confirmed for r in risks), sum(r.judged for r in risks)) or 1.0


def week_labels(rows: list[list[Any]]) -> list[str]:
    """A weekly table's first column as short labels."""
    return [f"{r[0]:%d %b}" if hasattr(r[0], "strftime") else str(r[0]) for r in rows]


def days_between(start: datetime, end: datetime) -> list[datetime]:
    """Every midnight in [start, end)."""
    out, t = [], start
    while t < end:
        out.append(t)
        t += timedelta(days=1)
    return out
