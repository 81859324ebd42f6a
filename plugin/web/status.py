"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plugin.errors import InferenceUnavailable
from plugin.protocols import CameraLive, LiveState
from plugin.redact import redact_url
from plugin.web.auth.middleware import principal_of
from plugin.web.auth.roles import STATUS_READ
from plugin.web.keys import (
    CAMERAS,
    CONFIG,
    DATABASE,
    EMBEDDED_TRITON,
    INCIDENTS,
    INFERENCE,
    METRICS,
    OCCUPANCY,
    OUTBOX,
    POSE,
    SINKS,
    SYSTEM,
)

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


def _camera(request: web.Request, cam_id: str) -> dict[str, Any]:
    """One camera's readiness and counters."""
    fleet = request.app[CAMERAS]
    p = fleet.pipelines[cam_id]
    src = p.source.status
    health = fleet.health.get(cam_id)
    snap = health.snapshot if health is not None else None
    age = None if snap is None else snap.last_frame_age_s
    live_ok = p.status.state == "running" and src.connected and (snap is None or snap.state != "offline")
    ok = p.status.state == "finished" if p.source.is_file else live_ok
    camera: dict[str, Any] = {
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
        camera["ready"] = True  # a file being analysed is healthy
    if cam_id in fleet.events:  # the camera's own analytics; they do not decide readiness
        signals = fleet.signals.get(cam_id)
        camera["events"] = fleet.events[cam_id].describe() | (signals.describe() if signals else {})
    return camera


def _triton(request: web.Request, ready: bool) -> dict[str, Any]:
    """The inference server: ready, where, and for the embedded one its restarts."""
    client, embedded = request.app[INFERENCE], request.app[EMBEDDED_TRITON]
    out: dict[str, Any] = {"ready": ready, "url": client.url, "embedded": embedded is not None}
    if not ready and client.last_error:
        out["error"] = redact_url(client.last_error)
    if embedded is not None:
        out["restarts"] = embedded.restarts
        out["last_exit"] = embedded.last_exit
    return out


async def readyz(request: web.Request) -> web.Response:
    """Ready when Triton answers with the model loaded, every live camera delivers, the database takes writes and
    no sink is failing; the details (database, cameras, sinks, system health) only with STATUS_READ."""
    app = request.app
    client, db, system = app[INFERENCE], app[DATABASE], app[SYSTEM]
    outbox, incidents = app.get(OUTBOX), app.get(INCIDENTS)
    triton_ok = await client.ready()
    app[METRICS].triton_up.set(1 if triton_ok else 0)
    cameras = {cam_id: _camera(request, cam_id) for cam_id in app[CAMERAS].pipelines}
    try:
        counts = await db.call(db.sync.outbox_counts)
    except sqlite3.Error:  # recorded in db.health, shown below
        counts = {}
    outbox_errors = {} if outbox is None else outbox.errors
    sinks = {
        sid: {
            "ready": s.health.ok and sid not in outbox_errors,
            "auth_failed": s.health.auth_failed,
            "error": None if s.health.last_error is None else redact_url(s.health.last_error),
            # the sink's worker itself cannot go on (the database failing): deliveries wait, and resume by themselves
            "outbox_error": outbox_errors.get(sid),
            "pending": counts.get(sid, {}).get("pending", 0),
            "dead_letters": counts.get(sid, {}).get("dead", 0),
        }
        for sid, s in app[SINKS].items()
    }
    health = db.health
    unsaved = 0 if incidents is None else incidents.unsaved
    database = {
        "ready": health.ok and unsaved == 0,
        "error": health.error or (None if incidents is None else incidents.store_error),
        "failing_since": None if health.since is None else health.since.isoformat(),
        "failures": health.failures,
        "unsaved_incidents": unsaved,  # kept in memory until the database takes them
    }
    ready = (
        triton_ok
        and database["ready"]
        and all(c["ready"] for c in cameras.values())
        and all(s["ready"] for s in sinks.values())
    )
    status = 200 if ready else 503
    principal = principal_of(request)
    if principal is None or not principal.can(STATUS_READ):
        # a load balancer's or orchestrator's probe: the answer, not the cameras' addresses and the sinks' errors
        return web.json_response({"ready": ready}, status=status)
    body = {
        "ready": ready,
        "triton": _triton(request, triton_ok),
        "database": database,
        "cameras": cameras,
        "sinks": sinks,
        # StoreSight's own health conditions (the system_* incidents); informative, readiness does not wait on them
        "system": system.snapshot() if system is not None else None,
    }
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    app = request.app
    await app[OUTBOX].refresh_metrics()
    await _refresh_triton_stats(app)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _refresh_triton_stats(app: web.Application) -> None:
    """Triton's queue and compute totals of the detector (and the pose model when a rule uses it), for this scrape;
    when Triton does not answer the last numbers stay (storesight_triton_ready says it is down)."""
    config = app[CONFIG]
    models = [config.triton.model] + ([config.pose.model] if app[POSE] is not None else [])
    try:
        async with asyncio.timeout(config.triton.request_timeout_s):
            stats = await app[INFERENCE].statistics(models)
    except (InferenceUnavailable, TimeoutError) as exc:
        log.debug("metrics: no Triton statistics: %s", exc)
        return
    app[METRICS].triton_stats.update(stats)


def live_state(app: web.Application) -> LiveState:
    """The store now, for sinks that show live state: each enabled camera's health (the pipeline's state where no
    health monitor runs, i.e. files), people in view and queue lengths, and each store occupancy count."""
    config, fleet, occupancy = app[CONFIG], app[CAMERAS], app[OCCUPANCY]
    cameras = []
    for cam in config.cameras:
        if not cam.enabled:
            continue
        pipeline, health = fleet.pipelines.get(cam.id), fleet.health.get(cam.id)
        state = health.snapshot.state if health is not None else pipeline.status.state if pipeline else "starting"
        # every queue rule of the camera from the start (0 until it measured), so its entity always has a value
        queues = {r.id: 0 for r in config.rules if r.type == "queue" and r.camera == cam.id}
        if pipeline is not None:
            for (rule_id, metric), value in pipeline.status.gauges.items():
                if metric == "queue_length":
                    queues[rule_id] = int(value)
        cameras.append(CameraLive(cam.id, state, pipeline.status.people if pipeline else 0, queues))
    counts = {} if occupancy is None else {c.config.id: c.state.people for c in occupancy.counts}
    return LiveState(config.site.id, config.site.name, tuple(cameras), counts)
