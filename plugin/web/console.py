"""The console: the incidents page and the evidence snapshots it shows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from plugin.types import FEEDBACK_REASONS, FEEDBACK_VERDICTS
from plugin.web.api import public
from plugin.web.auth.handlers import page_context
from plugin.web.auth.middleware import principal_of
from plugin.web.auth.roles import CONFIG_WRITE, FEEDBACK_WRITE
from plugin.web.keys import CAMERAS, CONFIG, DATABASE

TEMPLATES = Path(__file__).parent / "templates"
_PAGE_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
)


async def snapshot(request: web.Request) -> web.StreamResponse:
    """The evidence JPEG of an incident (looked up by id: no file path ever comes from the request)."""
    db = request.app[DATABASE]
    row = await db.call(db.sync.incident, request.match_info["id"])
    if row is None or not row.get("snapshot"):
        raise web.HTTPNotFound(text="no snapshot")
    # FileResponse answers 404 itself when the file is gone
    return web.FileResponse(row["snapshot"], headers={"Cache-Control": "private, max-age=3600"})


async def page(request: web.Request) -> web.Response:
    """The incidents page."""
    app = request.app
    db, config, fleet = app[DATABASE], app[CONFIG], app[CAMERAS]
    rows = await db.call(db.sync.incidents, 200, None)
    tz = ZoneInfo(config.site.timezone)

    def local(iso: str | None) -> str:
        return "" if not iso else datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    cameras = [
        {
            "id": cid,
            "state": fleet.health[cid].snapshot.state if cid in fleet.health else p.status.state,
            "frames": p.status.frames,
            "incidents": p.status.incidents,
        }
        for cid, p in fleet.pipelines.items()
    ]
    incidents = [public(r) for r in rows]
    given = await db.call(db.sync.feedback_of, [doc["id"] for doc in incidents])
    for doc in incidents:  # the verdicts given here, newest last, for the line under each incident
        doc["feedback"] = given[doc["id"]]
    who = principal_of(request)
    html = _PAGE_ENV.get_template("incidents.html").render(
        site=config.site,
        incidents=incidents,
        local=local,
        cameras=cameras,
        reasons=FEEDBACK_REASONS,
        verdicts=FEEDBACK_VERDICTS,
        can_judge=who is not None and who.can(FEEDBACK_WRITE),
        can_edit_zones=who is not None and who.can(CONFIG_WRITE),
        **page_context(request),
    )
    return web.Response(text=html, content_type="text/html")
