"""The ROI report: for a store or the chain, over a week or a month, what StoreSight's alerts were worth, each figure
with the arithmetic that produced it from stored data: incidents confirmed by type, the loss they prevented (the
configured value per type), alarm dispatches avoided by video verification (the configured fee), queue minutes above
the limit, conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from aiohttp import web

from plugin.hq.config import RoiConfig
from plugin.hq.db import HqDatabase
from plugin.hq.tables import Period, Table


def report_period(kind: str, at: date) -> Period:
    """The week (Monday first) or calendar month that holds `at`."""
    if kind == "week":
        start = at - timedelta(days=at.weekday())
        return Period(start, start + timedelta(days=7))
    if kind == "month":
        start = at.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return Period(start, end)
    raise web.HTTPBadRequest(text="period must be week or month")


def previous_full(kind: str, today: date) -> date:
    """A day in the last finished week or month (the default report)."""
    if kind == "week":
        return today - timedelta(days=today.weekday() + 7)
    return today.replace(day=1) - timedelta(days=1)


@dataclass
class Figure:
    """One figure of the report and how it was computed."""

    label: str
    value: float | int | None
    unit: str
    how: str


@dataclass
class RoiReport:
    """The figures, and the tables behind them."""

    scope: str
    period: Period
    kind: str
    currency: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


async def roi_report(
    db: HqDatabase, stores: list[str], scope: str, kind: str, period: Period, roi: RoiConfig
) -> RoiReport:
    """Compute the report for the stores over the period."""
    rep = RoiReport(scope, period, kind, roi.currency)
    confirmed = await db.fetch(
        """SELECT type, sum(confirmed) AS confirmed, sum(confirmed + false_alarm + unsure) AS judged
           FROM verdict_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3)
           GROUP BY type ORDER BY type""",
        period.start,
        period.end,
        stores,
    )
    counts = await db.fetch(
        """SELECT type, sum(incidents) AS incidents, sum(seconds) AS seconds FROM day_types
           WHERE day >= $1 AND day < $2 AND store_id = ANY($3) GROUP BY type""",
        period.start,
        period.end,
        stores,
    )
    by_type = {r["type"]: (int(r["incidents"]), float(r["seconds"])) for r in counts}
    days = await db.pool.fetchrow(
        """SELECT coalesce(sum(visitors), 0) AS visitors, coalesce(sum(transactions), 0) AS transactions
           FROM store_days WHERE day >= $1 AND day < $2 AND store_id = ANY($3)""",
        period.start,
        period.end,
        stores,
    )
    assert days is not None
    t = Table(
        "confirmed_by_type",
        "Incidents confirmed by type, and the loss they prevented",
        [
            "type",
            "incidents",
            "judged",
            "confirmed",
            f"value each ({roi.currency})",
            f"loss prevented ({roi.currency})",
        ],
    )
    total_confirmed, total_loss = 0, 0.0
    for r in confirmed:
        value = roi.loss_per_incident.get(r["type"], roi.default_loss)
        n = int(r["confirmed"])
        if r["type"] in ("alarm_unverified",):
            continue  # an unverified alarm confirmed later is counted under dispatches below
        total_confirmed += n
        total_loss += n * value
        t.rows.append([r["type"], by_type.get(r["type"], (0, 0.0))[0], int(r["judged"]), n, value, n * value])
    t.note = (
        "confirmed: incidents whose latest verdict is confirmed, by the store day the incident started; value "
        "each: roi.loss_per_incident in the head-office config (roi.default_loss for a type not listed)"
    )
    rep.tables.append(t)
    rep.figures.append(
        Figure(
            "Incidents confirmed",
            total_confirmed,
            "",
            f"sum of the confirmed column: {' + '.join(str(r[3]) for r in t.rows) or '0'}",
        )
    )
    rep.figures.append(
        Figure(
            "Estimated loss prevented",
            round(total_loss, 2),
            roi.currency,
            " + ".join(f"{r[3]} x {r[4]:g} ({r[0]})" for r in t.rows if r[3]) or "no confirmed incident",
        )
    )
    unverified = by_type.get("alarm_unverified", (0, 0.0))[0]
    verified = by_type.get("alarm_verified", (0, 0.0))[0]
    later_real = next((int(r["confirmed"]) for r in confirmed if r["type"] == "alarm_unverified"), 0)
    avoided = max(unverified - later_real, 0)
    rep.figures.append(
        Figure(
            "Alarm dispatches avoided",
            avoided,
            "",
            f"{unverified} alarms video found no one for, less {later_real} a person later confirmed as real "
            f"({verified} verified alarms were dispatched)",
        )
    )
    rep.figures.append(
        Figure(
            "Dispatch fees avoided",
            round(avoided * roi.dispatch_fee, 2),
            roi.currency,
            f"{avoided} x {roi.dispatch_fee:g} (roi.dispatch_fee)",
        )
    )
    queue_n, queue_s = by_type.get("queue", (0, 0.0))
    rep.figures.append(
        Figure(
            "Queue minutes above the limit",
            round(queue_s / 60.0, 1),
            "min",
            f"the summed length of {queue_n} queue incidents (a queue rule fires while a queue stays over its "
            "length or wait limit)",
        )
    )
    visitors, txns = int(days["visitors"]), int(days["transactions"])
    rep.figures.append(
        Figure(
            "Conversion",
            None if not visitors else round(100.0 * txns / visitors, 1),
            "%",
            f"{txns:,} POS transactions / {visitors:,} visitors (entrance lines' in-crossings)",
        )
    )
    return rep
