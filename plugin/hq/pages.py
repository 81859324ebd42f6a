"""Head office's dashboards: the chain, a store, an incident (with its evidence and the verdict form), conversion
and alarm verification. Each asks the principal which stores it may show; each table downloads as CSV (?csv=name)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from plugin.hq import charts
from plugin.hq.access import principal, require_store, sees
from plugin.hq.chain import (
    alarm_verification,
    chain_rate_of,
    conversion,
    ranking_table,
    risk_score,
    store_risks,
    week_labels,
    weekly_trends,
)
from plugin.hq.db import Store
from plugin.hq.feedback import feedback_for
from plugin.hq.keys import HQ_DB
from plugin.hq.precision import precision_tables
from plugin.hq.render import page
from plugin.hq.store_page import HOURS, store_figures
from plugin.hq.tables import Period, Table, csv_response, period_from
from plugin.types import FEEDBACK_REASONS, FEEDBACK_VERDICTS

SILENT_AFTER = timedelta(hours=2)  # a store that sent nothing for this long is shown as silent


async def visible_stores(request: web.Request) -> dict[str, Store]:
    """The stores the signed-in user may see."""
    stores = await request.app[HQ_DB].stores()
    who = principal(request)
    return {sid: s for sid, s in stores.items() if sees(who, sid)}


async def the_store(request: web.Request, store_id: str | None = None) -> Store:
    """The store named in the path (or `store_id`), when this user may see it (else 404, as for a store that does
    not exist)."""
    store_id = store_id or request.match_info["store"]
    require_store(principal(request), store_id)
    store = (await request.app[HQ_DB].stores()).get(store_id)
    if store is None:
        raise web.HTTPNotFound(text=f"no store {store_id!r}")
    return store


def csv_or(request: web.Request, tables: list[Table], prefix: str) -> web.Response | None:
    """The table named by ?csv= as a download, or None when the page itself is asked for."""
    name = request.query.get("csv")
    return None if name is None else csv_response(tables, name, prefix)


async def chain_page(request: web.Request) -> web.Response:
    """Stores ranked by risk, and the chain's trends by week."""
    db, stores = request.app[HQ_DB], await visible_stores(request)
    period = period_from(request)
    risks = await store_risks(db, list(stores), period)
    chain_rate = chain_rate_of(risks)
    ranking = ranking_table(risks, chain_rate)
    trend_period = Period(min(period.start, period.end - timedelta(weeks=12)), period.end)
    weekly = await weekly_trends(db, list(stores), trend_period)
    tables = [ranking, weekly]
    if (csv := csv_or(request, tables, "chain")) is not None:
        return csv
    visitors, incidents = sum(r.visitors for r in risks), sum(r.incidents for r in risks)
    judged, confirmed = sum(r.judged for r in risks), sum(r.confirmed for r in risks)
    txns = sum(r.transactions for r in risks)
    totals = {
        "visitors": visitors,
        "incidents": incidents,
        "per_1000": incidents * 1000 / visitors if visitors else None,
        "confirmed_rate": confirmed / judged if judged else None,
        "conversion": txns / visitors if visitors else None,
    }
    now = datetime.now(UTC)
    offline = [r.id for r in risks if r.last_seen is None or now - r.last_seen > SILENT_AFTER]
    top = risks[:15]
    ranking_chart = charts.hbar(
        "Riskiest stores: risk score (incidents per 1,000 visitors x confirmed rate)",
        [r.name for r in top],
        [round(risk_score(r, chain_rate), 2) for r in top],
        "risk score",
    )
    trend_chart = charts.line(
        "By week: incidents per 1,000 visitors, conversion % and confirmed %",
        week_labels(weekly.rows),
        {
            "incidents per 1,000": [r[3] for r in weekly.rows],
            "conversion %": [None if r[7] is None else round(100 * r[7], 1) for r in weekly.rows],
            "confirmed %": [None if r[4] is None else round(100 * r[4], 1) for r in weekly.rows],
        },
    )
    return page(
        request,
        "chain.html",
        tables=tables,
        risks=risks,
        totals=totals,
        offline=offline,
        period=period,
        ranking_chart=ranking_chart,
        trend_chart=trend_chart,
    )


def _local(tz: ZoneInfo) -> Any:
    def local(t: datetime | None) -> str:
        return "" if t is None else t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    return local


async def store_view(request: web.Request) -> web.Response:
    """One store's figures."""
    store = await the_store(request)
    period = period_from(request, default_days=7)
    f = await store_figures(request.app[HQ_DB], store, period)
    by_rule, _, by_camera = await precision_tables(request.app[HQ_DB], [store.id], period)
    f.tables += [by_rule, by_camera]
    if (csv := csv_or(request, f.tables, store.id)) is not None:
        return csv
    limit_lines = {f"limit {k}": v.get("max_length") for k, v in f.limits.items()}
    wait_lines = {f"limit {k}": v.get("max_wait_s") for k, v in f.limits.items()}
    pos = next(t for t in f.tables if t.name == "pos_by_register")
    day_labels = [date.fromisoformat(d).strftime("%d %b") for d in f.health_days]
    rendered = {
        "footfall": charts.bar("Footfall by hour and entrance (visitors)", HOURS, f.footfall, stacked=True),
        "occupancy": charts.line("Occupancy by hour (mean people)", HOURS, f.occupancy),
        "queue_length": charts.line("Queue length by hour against the limit", HOURS, f.queue_length, limit_lines),
        "queue_wait": charts.line("Queue wait (s) by hour against the limit", HOURS, f.queue_wait, wait_lines),
        "incidents": charts.bar("Incidents by type and hour", HOURS, f.incidents_by_hour, stacked=True),
        "dwell": charts.bar(
            "Dwell by zone (s)",
            list(f.dwell),
            {"mean": [v["avg_s"] for v in f.dwell.values()], "longest": [v["max_s"] for v in f.dwell.values()]},
        ),
        "pos": charts.bar(
            "POS exceptions by register",
            [str(r[0]) for r in pos.rows],
            {c: [r[i + 1] for r in pos.rows] for i, c in enumerate(pos.columns[1:-1])},
            stacked=True,
        ),
        "health": charts.bar("Camera health: minutes offline or degraded by day", day_labels, f.health, stacked=True),
    }
    return page(
        request,
        "store.html",
        tables=f.tables,
        store=store,
        period=period,
        charts=rendered,
        recent=f.recent,
        local=_local(ZoneInfo(store.timezone)),
    )


async def _incident_row(request: web.Request, store: Store) -> dict[str, Any]:
    row = await request.app[HQ_DB].pool.fetchrow(
        """SELECT id, rule_id, type, camera, zone, severity, state, start_at, end_at, explanation, details,
                  snapshot IS NOT NULL AS has_snapshot FROM incidents WHERE store_id = $1 AND id = $2""",
        store.id,
        request.match_info["id"],
    )
    if row is None:
        raise web.HTTPNotFound(text="no such incident")
    return dict(row)


async def incident_view(request: web.Request) -> web.Response:
    """One incident: evidence, details, the verdict form and the verdicts given."""
    store = await the_store(request)
    incident = await _incident_row(request, store)
    async with request.app[HQ_DB].pool.acquire() as conn:
        given = await feedback_for(conn, store.id, incident["id"])
    verdicts = [(v, v.replace("_", " ")) for v in FEEDBACK_VERDICTS]
    return page(
        request,
        "incident.html",
        store=store,
        i=incident,
        feedback=given,
        verdicts=verdicts,
        reasons=FEEDBACK_REASONS,
        local=_local(ZoneInfo(store.timezone)),
    )


async def snapshot(request: web.Request) -> web.Response:
    """An incident's evidence JPEG, for those who may see the store."""
    store = await the_store(request)
    jpeg = await request.app[HQ_DB].pool.fetchval(
        "SELECT snapshot FROM incidents WHERE store_id = $1 AND id = $2", store.id, request.match_info["id"]
    )
    if jpeg is None:
        raise web.HTTPNotFound(text="no snapshot")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def conversion_page(request: web.Request) -> web.Response:
    """POS transactions per visitor, per store and per hour of the day."""
    stores = await visible_stores(request)
    period = period_from(request)
    per_store, per_hour = await conversion(request.app[HQ_DB], list(stores), period)
    tables = [per_store, per_hour]
    if (csv := csv_or(request, tables, "conversion")) is not None:
        return csv
    top = per_store.rows[:20]
    chart_a = charts.hbar(
        "Conversion by store (%)",
        [str(r[1]) for r in top],
        [None if r[4] is None else round(100 * r[4], 1) for r in top],
        "conversion %",
    )
    chart_b = charts.bar(
        "Visitors and transactions by hour of the day",
        [r[0][:2] for r in per_hour.rows],
        {"visitors": [r[1] for r in per_hour.rows], "transactions": [r[2] for r in per_hour.rows]},
    )
    return page(
        request,
        "twotables.html",
        tables=tables,
        period=period,
        charts=[chart_a, chart_b],
        heading="Conversion",
        sub="POS transactions / visitors: the stores' entrance counts against their tills",
    )


async def alarms_page(request: web.Request) -> web.Response:
    """Alarm verification per store and per hour of the day."""
    stores = await visible_stores(request)
    period = period_from(request)
    per_store, per_hour = await alarm_verification(request.app[HQ_DB], list(stores), period)
    tables = [per_store, per_hour]
    if (csv := csv_or(request, tables, "alarms")) is not None:
        return csv
    busiest = sorted(per_store.rows, key=lambda r: -r[2])[:20]
    chart_a = charts.bar(
        "Alarms per store",
        [str(r[1]) for r in busiest],
        {"verified by video": [r[3] for r in busiest], "unverified": [r[4] for r in busiest]},
        stacked=True,
    )
    chart_b = charts.bar(
        "Alarms by hour of the day",
        [r[0][:2] for r in per_hour.rows],
        {"verified by video": [r[2] for r in per_hour.rows], "unverified": [r[3] for r in per_hour.rows]},
        stacked=True,
    )
    return page(
        request,
        "twotables.html",
        tables=tables,
        period=period,
        charts=[chart_a, chart_b],
        heading="Alarm verification",
        sub="Intruder and panic alarms judged on the stores' video",
    )


async def api_stores(request: web.Request) -> web.Response:
    """The stores this user may see, as JSON."""
    stores = await visible_stores(request)
    return web.json_response([{"id": s.id, "name": s.name, "timezone": s.timezone} for s in stores.values()])


async def api_store_incidents(request: web.Request) -> web.Response:
    """A store's incidents in a period, as JSON (no pictures: each has its snapshot URL)."""
    store = await the_store(request)
    period = period_from(request, default_days=7)
    rows = await request.app[HQ_DB].fetch(
        """SELECT id, rule_id, type, camera, zone, severity, state, start_at, end_at, explanation, details,
                  snapshot IS NOT NULL AS has_snapshot FROM incidents
           WHERE store_id = $1 AND start_at >= $2 AND start_at < $3 ORDER BY start_at DESC LIMIT 5000""",
        store.id,
        datetime.combine(period.start, datetime.min.time(), UTC),
        datetime.combine(period.end, datetime.min.time(), UTC),
    )
    out = []
    for r in rows:
        doc = dict(r)
        doc["start_at"], doc["end_at"] = r["start_at"].isoformat(), r["end_at"] and r["end_at"].isoformat()
        doc["snapshot_url"] = f"/stores/{store.id}/incidents/{r['id']}/snapshot.jpg" if r["has_snapshot"] else None
        out.append(doc)
    return web.json_response(out)
