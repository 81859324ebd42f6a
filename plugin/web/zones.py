"""The zone editor (admins): a camera's picture with its zones and lines drawn on it, edited with the mouse in
the browser (static/zone-editor.js), saved into the config file (plugin/config/writer.py: round-trip, validated as
`check-config` validates, atomic, with a backup) and applied by restarting that camera's pipeline alone
(`Supervisor.reconfigure`). Every save, refused or not, is in the audit log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import cv2
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from plugin.config.loader import load_config
from plugin.config.root import Config
from plugin.config.writer import GeometryRefused, LineEdit, ZoneEdit, save_camera_geometry
from plugin.errors import ConfigError, StoreSightError
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.web.auth.handlers import page_context
from plugin.web.auth.middleware import mark_audited, principal_of
from plugin.web.auth.store import AuditEntry
from plugin.web.keys import AUTH, CAMERAS, CONFIG, CONFIG_FILE, SUPERVISOR

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
)
SCRIPT = "zone-editor.js"
GRAB_TIMEOUT_S = 10.0  # a live picture when the pipeline has none yet: a camera that sends none by then is down
PICTURE_QUALITY = 85
MAX_BODY = 256 * 1024  # a camera's zones and lines are a few KB
MAX_POINTS = 64
# held while the file is rewritten and the camera restarted: two saves apply in the order they were written
SAVE_LOCK = web.AppKey("zone_editor_save_lock", asyncio.Lock)


def _camera_id(request: web.Request, config: Config) -> str:
    cid = request.match_info["camera"]
    if cid not in {c.id for c in config.cameras}:
        raise web.HTTPNotFound(text=f"no camera {cid!r} in the config")
    return cid


def _current(request: web.Request) -> tuple[Config, Path | None]:
    """The config as the file now says (what a save rewrites), else the one the bridge started with."""
    path = request.app[CONFIG_FILE]
    if path is None:
        return request.app[CONFIG], None
    try:
        return load_config(path), path
    except ConfigError as exc:
        raise web.HTTPConflict(text=f"the config file does not load, so the editor cannot show it:\n{exc}") from None


def shape_users(config: Config, camera_id: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What uses each zone and each line of a camera: rules, staff_zones, doors, POS lanes, alarm panels and
    store occupancy counts, each as a short label."""
    zones: dict[str, list[str]] = defaultdict(list)
    lines: dict[str, list[str]] = defaultdict(list)
    for rule in config.rules:
        if rule.camera == camera_id:
            for _, zone in rule.zone_refs():
                zones[zone].append(f"rule {rule.id} ({rule.type})")
    camera = config.camera(camera_id)
    for zone in camera.staff_zones:
        zones[zone].append("staff_zones (tracks starting here are staff)")
    if config.access is not None:
        for door in config.access.doors:
            if door.camera == camera_id:
                if door.zone is not None:
                    zones[door.zone].append(f"access door {door.id}")
                lines[door.line_rule].append(f"access door {door.id}")
    if config.pos is not None:
        for lane in config.pos.lanes:
            if lane.camera == camera_id:
                for lane_zone in (lane.customer_zone, lane.staff_zone):
                    if lane_zone is not None:
                        zones[lane_zone].append(f"POS lane {lane.id}")
    for panel in config.alarm_panels:
        for account in panel.accounts:
            for panel_zone, views in account.zone_map.items():
                for view in views:
                    if view.camera == camera_id:
                        zones[view.zone].append(f"alarm panel {panel.id} zone {panel_zone}")
    for store in config.store_occupancy:
        for line in store.lines:
            lines[line].append(f"store occupancy {store.id}")
    return zones, lines


def geometry(config: Config, camera_id: str) -> dict[str, Any]:
    """A camera's zones and lines as the editor reads them, with what uses each."""
    zone_users, line_users = shape_users(config, camera_id)
    camera = config.camera(camera_id)
    lines = [r for r in config.rules if isinstance(r, LineCrossingRuleConfig) and r.camera == camera_id]
    return {
        "camera": camera_id,
        "zones": [{"id": z.id, "polygon": z.polygon, "used_by": zone_users.get(z.id, [])} for z in camera.zones],
        "lines": [
            {
                "id": r.id,
                "line": r.line,
                "in_side": r.in_side,
                "used_by": [f"rule {r.id} (line_crossing)", *line_users.get(r.id, [])],
            }
            for r in lines
        ],
    }


async def editor_page(request: web.Request) -> web.Response:
    """The zone editor page of one camera (the drawing is done by the static script)."""
    config = request.app[CONFIG]
    cid = _camera_id(request, config)
    camera = config.camera(cid)
    html = PAGE_ENV.get_template("zones.html").render(
        site=config.site, camera=camera, script=f"/static/{SCRIPT}", **page_context(request)
    )
    return web.Response(text=html, content_type="text/html")


async def editor_script(request: web.Request) -> web.StreamResponse:
    """The editor's JavaScript, served from here (the page's CSP allows scripts from this origin only)."""
    return web.FileResponse(STATIC / SCRIPT, headers={"Content-Type": "text/javascript; charset=utf-8"})


async def picture(request: web.Request) -> web.Response:
    """The camera's latest analysed frame as JPEG, else one read from its source now."""
    app = request.app
    cid = _camera_id(request, app[CONFIG])
    pipeline = app[CAMERAS].pipelines.get(cid)
    frame = pipeline.last_frame if pipeline is not None else None
    where = "analysed"
    if frame is None:
        supervisor = app.get(SUPERVISOR)
        if supervisor is None:
            raise web.HTTPServiceUnavailable(text="the cameras are not running")
        try:
            frame = await supervisor.grab_frame(cid, GRAB_TIMEOUT_S)
        except StoreSightError as exc:
            raise web.HTTPBadGateway(text=f"{cid}: no picture from the camera: {exc}") from None
        where = "live"
    if frame is None:
        raise web.HTTPGatewayTimeout(text=f"{cid}: the camera sent no picture within {GRAB_TIMEOUT_S:.0f} s")
    ok, data = await asyncio.to_thread(cv2.imencode, ".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, PICTURE_QUALITY])
    if not ok:
        raise web.HTTPInternalServerError(text="JPEG encoding failed")
    headers = {"X-StoreSight-Picture": where, "X-StoreSight-Captured": frame.captured_at.isoformat()}
    return web.Response(body=data.tobytes(), content_type="image/jpeg", headers=headers)


async def api_geometry(request: web.Request) -> web.Response:
    """A camera's zones and lines, as the config file has them, and what uses each."""
    config, path = _current(request)
    cid = _camera_id(request, config)
    doc = geometry(config, cid)
    doc["editable"] = path is not None
    doc["file"] = None if path is None else str(path)
    return web.json_response(doc)


class BadBody(ValueError):
    """The request body is not the editor's document; the message names the field."""


def _points(value: Any, where: str, least: int, most: int) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not least <= len(value) <= most:
        raise BadBody(f"{where}: a list of {least} to {most} [x, y] points")
    out = []
    for k, p in enumerate(value):
        ok = isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)
        if not ok:
            raise BadBody(f"{where}[{k}]: a point is [x, y], two numbers")
        out.append((float(p[0]), float(p[1])))
    return out


def _was(item: dict[str, Any], where: str) -> str | None:
    was = item.get("was")
    if was is not None and not isinstance(was, str):
        raise BadBody(f"{where}.was: the id the shape had in the file, or null for a new one")
    return was


def parse_edits(body: Any) -> tuple[list[ZoneEdit], list[LineEdit]]:
    """The editor's JSON ({"zones": [{id, polygon, was}], "lines": [{id, line, in_side, was}]}) as edits; the
    values themselves are judged by the config models when the file is validated."""
    if not isinstance(body, dict) or set(body) != {"zones", "lines"}:
        raise BadBody('the body is {"zones": [...], "lines": [...]}')
    zones, lines = body["zones"], body["lines"]
    if not isinstance(zones, list) or not isinstance(lines, list):
        raise BadBody("zones and lines are lists")
    zone_edits, line_edits = [], []
    for k, z in enumerate(zones):
        where = f"zones[{k}]"
        if not isinstance(z, dict) or set(z) - {"id", "polygon", "was"} or not isinstance(z.get("id"), str):
            raise BadBody(f"{where}: {{id, polygon, was}} with a text id")
        zone_edits.append(
            ZoneEdit(z["id"], _points(z.get("polygon"), f"{where}.polygon", 0, MAX_POINTS), _was(z, where))
        )
    for k, ln in enumerate(lines):
        where = f"lines[{k}]"
        if not isinstance(ln, dict) or set(ln) - {"id", "line", "in_side", "was"} or not isinstance(ln.get("id"), str):
            raise BadBody(f"{where}: {{id, line, in_side, was}} with a text id")
        a, b = _points(ln.get("line"), f"{where}.line", 2, 2)
        side = ln.get("in_side")
        if side not in ("left", "right"):
            raise BadBody(f"{where}.in_side: left or right")
        line_edits.append(LineEdit(ln["id"], (a, b), cast(Literal["left", "right"], side), _was(ln, where)))
    return zone_edits, line_edits


def _problems(exc: GeometryRefused) -> list[dict[str, str | None]]:
    """Each problem with the shape it belongs to (the longest key path of a shape it starts with), if any."""
    out: list[dict[str, str | None]] = []
    for path, message in exc.problems:
        owners = [p for p in exc.shapes if path == p or path.startswith((f"{p}.", f"{p}["))]
        shape = exc.shapes[max(owners, key=len)] if owners else None
        out.append({"path": path, "message": message, "shape": shape})
    return out


async def api_save(request: web.Request) -> web.Response:
    """Save a camera's zones and lines into the config file and restart that camera's pipeline with them."""
    app = request.app
    mark_audited(request)  # this handler writes its own row, saying what changed
    cid = request.match_info["camera"]
    outcome, detail = "500", None
    try:
        response, outcome, detail = await _save(request, cid)
        return response
    finally:
        principal = principal_of(request)
        await app[AUTH].audit(
            AuditEntry(
                datetime.now(UTC), principal.name if principal else "anonymous", principal.kind if principal else
                "anonymous", principal.role.name if principal else None, "zones-save", f"camera {cid}"[:500],
                outcome, request.remote, detail,
            )
        )  # fmt: skip


async def _save(request: web.Request, cid: str) -> tuple[web.Response, str, str | None]:
    app = request.app
    path = app[CONFIG_FILE]
    if path is None:
        return _error(409, "this bridge was not started from a config file: nothing to save into"), "409", None
    if cid not in {c.id for c in app[CONFIG].cameras}:
        return _error(404, f"no camera {cid!r} in the config"), "404", None
    supervisor = app.get(SUPERVISOR)  # None: the cameras are not running here; the file applies at the next start
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, f"the body is over {MAX_BODY} bytes"), "413", None
    try:
        zones, lines = parse_edits(json.loads(await request.text()))
    except (ValueError, BadBody) as exc:
        message = str(exc) if isinstance(exc, BadBody) else "the body must be JSON"
        return _error(400, message), "400", message
    summary = "zones " + ", ".join(z.id for z in zones) + "; lines " + ", ".join(ln.id for ln in lines)
    async with app[SAVE_LOCK]:
        try:
            saved = await asyncio.to_thread(save_camera_geometry, path, cid, zones, lines)
        except GeometryRefused as exc:
            problems = _problems(exc)
            log.info("%s: zone editor: change refused: %s", cid, exc)
            body = {"error": "the config models refuse this change: nothing was written", "problems": problems}
            return web.json_response(body, status=422), "422", f"{summary}; refused: {exc}"[:2000]
        except ConfigError as exc:
            return _error(409, str(exc)), "409", str(exc)[:2000]
        applied = "the cameras are not running here: it applies when they start"
        if supervisor is not None:
            rules = [r for r in saved.config.rules if r.camera == cid]
            try:
                await supervisor.reconfigure(saved.config.camera(cid), rules)
            except Exception as exc:  # the file is written: say so, and that the bridge must be restarted to apply it
                log.exception("%s: zone editor: saved into %s, but the camera did not restart", cid, path)
                message = (
                    f"saved into {path} (backup {saved.backup}), but the camera did not restart ({exc}): restart the "
                    "bridge to apply it"
                )
                return _error(500, message), "500", f"{summary}; saved, not applied: {exc}"[:2000]
            applied = "the camera's pipeline restarted with it"
    log.info("%s: zone editor: %s saved into %s (backup %s); %s", cid, summary, path, saved.backup, applied)
    body = {"saved": str(path), "backup": str(saved.backup), "applied": applied, **geometry(saved.config, cid)}
    return web.json_response(body), "200", summary[:2000]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
