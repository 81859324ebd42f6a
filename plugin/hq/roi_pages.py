"""The ROI report as a page and as a PDF: WeasyPrint renders the same HTML (the charts are inline SVG), so the two
never disagree."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

from aiohttp import web

from plugin.hq import charts
from plugin.hq.access import all_stores, principal
from plugin.hq.keys import HQ_CONFIG, HQ_DB
from plugin.hq.pages import csv_or, the_store, visible_stores
from plugin.hq.render import page, render_html
from plugin.hq.roi import RoiReport, previous_full, report_period, roi_report


async def _report(request: web.Request) -> RoiReport:
    kind = request.query.get("period", "month")
    try:
        at = date.fromisoformat(request.query["at"]) if "at" in request.query else None
    except ValueError:
        raise web.HTTPBadRequest(text=f"at: {request.query['at']!r} is not a date (YYYY-MM-DD)") from None
    period = report_period(kind, at or previous_full(kind, datetime.now().date()))
    if "store" in request.query:
        store = await the_store(request, request.query["store"])
        stores, scope = [store.id], f"{store.name} ({store.id})"
    else:
        stores = list(await visible_stores(request))
        scope = "the chain" if all_stores(principal(request)) else "your stores"
        scope += f" ({len(stores)} stores)"
    return await roi_report(request.app[HQ_DB], stores, scope, kind, period, request.app[HQ_CONFIG].roi)


def _charts(rep: RoiReport) -> list[str]:
    rows = [r for r in rep.tables[0].rows if r[3]]
    return [
        charts.bar("Confirmed incidents by type", [str(r[0]) for r in rows], {"confirmed": [r[3] for r in rows]}),
        charts.bar(
            f"Loss prevented by type ({rep.currency})",
            [str(r[0]) for r in rows],
            {"loss prevented": [round(r[5], 2) for r in rows]},
        ),
    ]


async def roi_page(request: web.Request) -> web.Response:
    """The report as a page (?period=week|month&at=YYYY-MM-DD&store=ID)."""
    rep = await _report(request)
    if (csv := csv_or(request, rep.tables, "roi")) is not None:
        return csv
    stores = await visible_stores(request)
    return page(
        request,
        "roi.html",
        tables=rep.tables,
        rep=rep,
        charts=_charts(rep),
        pdf=False,
        stores=stores,
        store_id=request.query.get("store", ""),
    )


async def roi_pdf(request: web.Request) -> web.Response:
    """The same report as a PDF."""
    rep = await _report(request)
    who = principal(request)
    html = render_html(
        "roi.html", principal=who, all_stores=all_stores(who), path=request.path, tables=rep.tables, rep=rep,
        charts=_charts(rep), pdf=True, stores={}, store_id="", query="", nonce="", csrf="", csrf_field="",
        logout="", user=who, can_audit=False, audit_page="",
    )  # fmt: skip
    pdf = await asyncio.to_thread(_render_pdf, html)
    name = f"storesight-roi-{rep.kind}-{rep.period.start.isoformat()}.pdf"
    return web.Response(
        body=pdf, content_type="application/pdf", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _render_pdf(html: str) -> bytes:
    # imported here: WeasyPrint loads Pango at import, which only the PDF needs
    import weasyprint

    pdf: bytes = weasyprint.HTML(string=html).write_pdf()
    return pdf
