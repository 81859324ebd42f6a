"""Feedback at head office: the verdict form's POST (CSRF-checked, stored with who and when), and the precision
page that turns the verdicts into precision per rule, store and camera, and the effect of setting changes."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from aiohttp import web

from plugin.hq import charts
from plugin.hq.access import principal
from plugin.hq.chain import week_labels
from plugin.hq.feedback import Feedback, record_feedback
from plugin.hq.keys import HQ_DB
from plugin.hq.pages import csv_or, the_store, visible_stores
from plugin.hq.precision import COMPARE_WEEKS, precision_tables, threshold_changes, weekly_precision
from plugin.hq.render import page
from plugin.hq.tables import Period, period_from
from plugin.types import FEEDBACK_REASONS, FEEDBACK_VERDICTS


async def post_feedback(request: web.Request) -> web.Response:
    """A verdict from the incident page: verdict, reason, comment; stored with the signed-in user and the time (the
    login's middleware has checked the form's CSRF token)."""
    store = await the_store(request)
    form = await request.post()
    verdict, reason, comment = form.get("verdict"), form.get("reason"), form.get("comment", "")
    if verdict not in FEEDBACK_VERDICTS:
        raise web.HTTPBadRequest(text=f"verdict must be one of {', '.join(FEEDBACK_VERDICTS)}")
    if reason not in FEEDBACK_REASONS:
        raise web.HTTPBadRequest(text=f"reason must be one of {', '.join(FEEDBACK_REASONS)}")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise web.HTTPBadRequest(text="comment: at most 2000 characters")
    db = request.app[HQ_DB]
    row = await db.pool.fetchrow(
        "SELECT id, rule_id, type, camera, start_at FROM incidents WHERE store_id = $1 AND id = $2",
        store.id,
        request.match_info["id"],
    )
    if row is None:
        raise web.HTTPNotFound(text="no such incident")
    fb = Feedback(
        store.id,
        row["id"],
        verdict,
        reason,
        comment.strip(),
        principal(request).name,
        "hq",
        datetime.now(UTC),
        row["rule_id"],
        row["type"],
        row["camera"],
        row["start_at"],
    )
    async with db.pool.acquire() as conn, conn.transaction():
        await record_feedback(conn, fb)
    raise web.HTTPSeeOther(f"/stores/{store.id}/incidents/{row['id']}#feedback")


async def precision_page(request: web.Request) -> web.Response:
    """Precision per rule, store and camera; by week; around each change of a rule's settings (?store= narrows)."""
    stores = list(await visible_stores(request))
    if "store" in request.query:
        stores = [(await the_store(request, request.query["store"])).id]  # the store pages' own check
    period = period_from(request, default_days=91)
    db = request.app[HQ_DB]
    tables = await precision_tables(db, stores, period)
    weekly = await weekly_precision(db, stores, period)
    changes = await threshold_changes(db, stores, Period(period.start, period.end))
    tables += [weekly, changes]
    if (csv := csv_or(request, tables, "precision")) is not None:
        return csv
    by_rule = tables[0].rows[:15]
    chart_rules = charts.hbar(
        "Least precise rules first (% confirmed of judged)",
        [f"{r[1]} ({r[0]})" for r in by_rule],
        [None if r[-1] is None else round(100 * r[-1], 1) for r in by_rule],
        "precision %",
    )
    weeks = sorted({r[0] for r in weekly.rows})
    series: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(weeks))
    for r in weekly.rows:
        series[r[1]][weeks.index(r[0])] = None if r[3] is None else round(100 * r[3], 1)
    chart_weeks = charts.line("Precision by week and type (%)", week_labels([[w] for w in weeks]), dict(series))
    shown = changes.rows[-10:]
    chart_changes = charts.bar(
        f"Precision {COMPARE_WEEKS} weeks before and after each setting change (%)",
        [f"{r[0]} {r[2]:%d %b}" for r in shown],
        {
            "before": [None if r[4] is None else round(100 * r[4], 1) for r in shown],
            "after": [None if r[5] is None else round(100 * r[5], 1) for r in shown],
        },
    )
    return page(
        request,
        "twotables.html",
        tables=tables,
        period=period,
        charts=[chart_rules, chart_weeks, chart_changes],
        heading="Precision from feedback",
        sub="What people said about the incidents: which rule on which camera needs its threshold changed, "
        "and what a change did",
    )
