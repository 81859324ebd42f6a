"""HTTP: health, readiness, Prometheus metrics, the incidents JSON API (token) and the incidents page."""

from __future__ import annotations

import hmac
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.business.access.webhook import events_handler as access_events_handler
from adapters.business.pos.poslog import poslog_handler
from adapters.business.pos.webhook import events_handler
from plugin.app import RUNTIME, Runtime
from plugin.fusion.pos.service import PosService
from plugin.redact import redact_url

TEMPLATES = Path(__file__).parent / "templates"
_PAGE_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
)


def _rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Triton answers with the model loaded, every live camera delivers and no sink is failing."""
    rt = _rt(request)
    triton_ok = bool(rt.client is not None and await rt.client.ready())
    rt.metrics.triton_up.set(1 if triton_ok else 0)
    cameras: dict[str, Any] = {}
    for cam_id, p in rt.pipelines.items():
        src = p.source.status
        health = rt.health.get(cam_id)
        snap = health.snapshot if health is not None else None
        age = None if snap is None else snap.last_frame_age_s
        live_ok = p.status.state == "running" and src.connected and (snap is None or snap.state != "offline")
        ok = p.status.state == "finished" if p.source.is_file else live_ok
        cameras[cam_id] = {
            "ready": ok,
            "state": p.status.state,
            "health": None if snap is None else snap.state,
            "health_reason": None if snap is None or snap.reason is None else redact_url(snap.reason),
            "received_fps": None if snap is None else round(snap.received_fps, 2),
            "analysed_fps": None if snap is None else round(snap.analysed_fps, 2),
            "last_frame_age_s": None if age is None else round(age, 1),
            "reconnects": src.reconnects,
            "source": redact_url(p.camera.describe_source()),
            "connected": src.connected,
            "frames_analysed": p.status.frames,
            # motion gating: analysed frames the detector ran on, and those it skipped (nothing moved)
            "frames_detected": p.status.frames_detected,
            "frames_skipped": p.status.frames_skipped,
            "frames_dropped": src.frames_dropped,
            "incidents": p.status.incidents,
            "error": None if p.status.last_error is None else redact_url(p.status.last_error),
        }
        if p.source.is_file and p.status.state in ("running", "starting"):
            cameras[cam_id]["ready"] = True  # a file being analysed is healthy
        if cam_id in rt.events:  # the camera's own analytics; they do not decide readiness
            signals = rt.signals.get(cam_id)
            cameras[cam_id]["events"] = rt.events[cam_id].describe() | (signals.describe() if signals else {})
    counts = await rt.store.call(rt.store.sync.outbox_counts) if rt.store is not None else {}
    sinks = {
        sid: {
            "ready": s.health.ok,
            "auth_failed": s.health.auth_failed,
            "error": None if s.health.last_error is None else redact_url(s.health.last_error),
            "pending": counts.get(sid, {}).get("pending", 0),
            "dead_letters": counts.get(sid, {}).get("dead", 0),
        }
        for sid, s in rt.sinks.items()
    }
    ready = triton_ok and all(c["ready"] for c in cameras.values()) and all(s["ready"] for s in sinks.values())
    body = {
        "ready": ready,
        "triton": {"ready": triton_ok, "url": rt.client.url if rt.client else None, "embedded": rt.triton is not None},
        "cameras": cameras,
        "sinks": sinks,
        # StoreSight's own health conditions (the system_* incidents); informative, readiness does not wait on them
        "system": rt.system.snapshot() if rt.system is not None else None,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    rt = _rt(request)
    if rt.outbox is not None:
        await rt.outbox.refresh_metrics()
    body = generate_latest(rt.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _authorised(request: web.Request) -> bool:
    rt = _rt(request)
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    return bool(given) and hmac.compare_digest(given.encode(), rt.token.encode())


@web.middleware
async def api_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every /api route needs the bearer token."""
    if request.path.startswith("/api/") and not _authorised(request):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    response: web.StreamResponse = await handler(request)
    return response


def _public(doc: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """The JSON incident with a URL for its snapshot next to the file path."""
    out = dict(doc)
    out["snapshot_url"] = f"/snapshots/{doc['id']}.jpg" if doc.get("snapshot") else None
    return out


async def api_incidents(request: web.Request) -> web.Response:
    """Stored incidents, newest first (?camera=, ?limit=)."""
    rt = _rt(request)
    assert rt.store is not None
    try:
        limit = max(1, min(int(request.query.get("limit", "200")), 5000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    rows = await rt.store.call(rt.store.sync.incidents, limit, request.query.get("camera"))
    return web.json_response([_public(r, request) for r in rows])


async def api_incident(request: web.Request) -> web.Response:
    """One incident."""
    rt = _rt(request)
    assert rt.store is not None
    row = await rt.store.call(rt.store.sync.incident, request.match_info["id"])
    if row is None:
        raise web.HTTPNotFound(text="no such incident")
    return web.json_response(_public(row, request))


async def api_outbox(request: web.Request) -> web.Response:
    """Deliveries, optionally by state (?state=pending|delivered|dead)."""
    rt = _rt(request)
    assert rt.store is not None
    state = request.query.get("state")
    if state not in (None, "pending", "delivered", "dead"):
        raise web.HTTPBadRequest(text="state must be pending, delivered or dead")
    return web.json_response(await rt.store.call(rt.store.sync.deliveries, state))


async def api_outbox_retry(request: web.Request) -> web.Response:
    """Requeue dead letters: body {"sink": ..., "delivery_key": ...}, both optional (all when empty)."""
    rt = _rt(request)
    assert rt.store is not None
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict) or set(body) - {"sink", "delivery_key"}:
        raise web.HTTPBadRequest(text='body may only have "sink" and "delivery_key"')
    n = await rt.store.call(rt.store.sync.retry_dead, body.get("sink"), body.get("delivery_key"))
    if rt.outbox is not None:
        rt.outbox.notify()
    return web.json_response({"requeued": n})


async def snapshot(request: web.Request) -> web.StreamResponse:
    """The evidence JPEG of an incident (looked up by id: no file path ever comes from the request)."""
    rt = _rt(request)
    assert rt.store is not None
    row = await rt.store.call(rt.store.sync.incident, request.match_info["id"])
    if row is None or not row.get("snapshot"):
        raise web.HTTPNotFound(text="no snapshot")
    # FileResponse answers 404 itself when the file is gone
    return web.FileResponse(row["snapshot"], headers={"Cache-Control": "private, max-age=3600"})


async def page(request: web.Request) -> web.Response:
    """The incidents page."""
    rt = _rt(request)
    assert rt.store is not None
    rows = await rt.store.call(rt.store.sync.incidents, 200, None)
    tz = ZoneInfo(rt.config.site.timezone)

    def local(iso: str | None) -> str:
        return "" if not iso else datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    cameras = [
        {
            "id": cid,
            "state": rt.health[cid].snapshot.state if cid in rt.health else p.status.state,
            "frames": p.status.frames,
            "incidents": p.status.incidents,
        }
        for cid, p in rt.pipelines.items()
    ]
    html = _PAGE_ENV.get_template("incidents.html").render(
        site=rt.config.site, incidents=[_public(r, request) for r in rows], local=local, cameras=cameras
    )
    return web.Response(text=html, content_type="text/html")


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.middlewares.append(api_auth)
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/incidents", api_incidents)
    app.router.add_get("/api/incidents/{id}", api_incident)
    app.router.add_get("/api/outbox", api_outbox)
    app.router.add_post("/api/outbox/retry", api_outbox_retry)
    app.router.add_get("/snapshots/{id}.jpg", snapshot)
    rt = app[RUNTIME]

    def pos_service() -> PosService | None:
        return None if rt.pos is None else rt.pos.service

    app.router.add_post("/api/pos/poslog", poslog_handler(pos_service))  # POSLog XML; 202 once stored
    app.router.add_post("/api/pos/events", events_handler(pos_service))  # JSON transactions; 202 once stored
    # door events from access-control software; 202 once stored
    app.router.add_post("/api/access/events", access_events_handler(lambda: rt.access))
