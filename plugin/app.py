"""The aiohttp Application owns the program: each long-lived resource is a cleanup context, started in
dependency order (store, inference, sinks + outbox, cameras) and closed in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from adapters.business.alarm.sia_dc09 import SiaDc09Receiver
from adapters.business.pos.intake import PosIntake
from adapters.cameras.onvif.device import OnvifSource
from adapters.cameras.onvif.events import OnvifEventsClient
from adapters.cameras.opencv import OpenCVSource
from adapters.sinks.registry import BY_KEY as SINKS_BY_KEY
from plugin.config.root import Config, SinkConfig
from plugin.errors import CameraAuthError, ConfigError, StoreSightError
from plugin.fusion.access.service import AccessService
from plugin.fusion.alarms import AlarmVerifier, PanelStates
from plugin.fusion.hub import BusinessHub
from plugin.fusion.store_occupancy import ONCE_TICK_S, StoreOccupancyService
from plugin.incidents.database import AsyncStore
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.incidents.outbox import OutboxWorker
from plugin.inference.pose import PoseClient
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient
from plugin.insights.rollups import InsightsRecorder
from plugin.insights.system_health import SystemHealthMonitor
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.pipeline.camera_signals import CameraSignals
from plugin.pipeline.health import CameraHealth
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.tamper import TamperDetector
from plugin.protocols import CameraSource, IncidentSink, SinkRefs
from plugin.rules.base import RuleContext
from plugin.rules.registry import build_rule
from plugin.types import SYSTEM_CAMERA, CameraSignal

log = logging.getLogger(__name__)

RESTART_START_S = 2.0
RESTART_MAX_S = 60.0


@dataclass
class Runtime:
    """Everything the contexts build, reachable from handlers and the CLI."""

    config: Config
    once: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    store: AsyncStore | None = None
    triton: EmbeddedTriton | None = None
    client: TritonInferenceClient | None = None
    pose: PoseClient | None = None  # only when a rule needs keypoints (fall, aggression, shelf_sweep)
    sinks: dict[str, IncidentSink] = field(default_factory=dict)
    outbox: OutboxWorker | None = None
    insights: InsightsRecorder | None = None
    presence: PresenceLog = field(default_factory=PresenceLog)
    business: BusinessHub | None = None
    panels: PanelStates = field(default_factory=PanelStates)  # alarm panels' armed state, for `armed_by` rules
    alarm_receivers: dict[str, SiaDc09Receiver] = field(default_factory=dict)
    alarms: AlarmVerifier | None = None
    pos: PosIntake | None = None  # the `pos:` section's intake, exceptions and fusion
    access: AccessService | None = None  # the `access:` section's door events, tailgating and door alarms
    occupancy: StoreOccupancyService | None = None  # the `store_occupancy:` counts, fed by the entrance lines
    incidents: IncidentManager | None = None
    pipelines: dict[str, CameraPipeline] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    monitors: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    health: dict[str, CameraHealth] = field(default_factory=dict)
    signals: dict[str, CameraSignals] = field(default_factory=dict)  # camera-native analytics, per camera
    events: dict[str, OnvifEventsClient] = field(default_factory=dict)
    event_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    system: SystemHealthMonitor | None = None
    token: str = ""
    fatal: StoreSightError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def storage(self) -> Path:
        """The data directory."""
        return self.config.storage.path


RUNTIME = web.AppKey("runtime", Runtime)


def api_token(config: Config) -> str:
    """The API token: config, then $STORESIGHT_API_TOKEN, then one generated once and kept in the data dir."""
    if config.web.token:
        return config.web.token
    env = os.environ.get("STORESIGHT_API_TOKEN")
    if env:
        return env
    path = config.storage.path / "api_token"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("generated an API token in %s", path)
    return token


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SQLite store."""
    rt = app[RUNTIME]
    rt.storage.mkdir(parents=True, exist_ok=True)
    rt.token = api_token(rt.config)
    rt.store = AsyncStore(rt.storage / "storesight.db")
    rt.insights = InsightsRecorder(rt.store)
    rt.business = BusinessHub(rt.store)
    flusher = asyncio.create_task(rt.insights.run(), name="insights")
    yield
    flusher.cancel()
    await asyncio.gather(flusher, return_exceptions=True)
    await rt.insights.flush()
    await rt.store.close()


async def inference_ctx(app: web.Application) -> AsyncIterator[None]:
    """The embedded Triton (when no URL is configured) and the shared inference client."""
    rt = app[RUNTIME]
    tc = rt.config.triton
    url = tc.url
    if url is None:
        rt.triton = EmbeddedTriton(
            model_repository=(tc.model_repository or DEFAULT_MODEL_REPOSITORY).resolve(),
            cache_dir=rt.storage.resolve() / "triton",
        )
        rt.triton.start()
        try:
            await asyncio.to_thread(rt.triton.wait_ready, tc.model, tc.ready_timeout_s)
        except BaseException:
            rt.triton.stop()
            raise
        url = rt.triton.grpc_url
    rt.client = TritonInferenceClient(url, tc.model, tc.request_timeout_s, shared_memory=tc.shared_memory)
    if any(r.uses_pose for r in rt.config.rules):
        if rt.triton is not None:  # a missing MoveNet file is a clear start error, not silently idle pose rules
            try:
                await asyncio.to_thread(rt.triton.wait_ready, rt.config.pose.model, tc.ready_timeout_s)
            except BaseException:
                await rt.client.close()
                rt.triton.stop()
                raise
        rt.pose = PoseClient(url, rt.config.pose.model, tc.request_timeout_s)
    yield
    if rt.pose is not None:
        await rt.pose.close()
    await rt.client.close()  # before the server: Triton's shutdown waits on open connections
    if rt.triton is not None:
        await asyncio.to_thread(rt.triton.stop)


def build_sink(config: SinkConfig, refs: SinkRefs) -> IncidentSink:
    """The adapter for one sink config (its registry entry, by `kind`); `refs` keeps what a VMS sink created."""
    return SINKS_BY_KEY[config.kind].build(config, refs)


async def sinks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sinks, the incident manager and the outbox worker."""
    rt = app[RUNTIME]
    assert rt.store is not None
    rt.sinks = {s.id: build_sink(s, rt.store) for s in rt.config.sinks}
    rt.outbox = OutboxWorker(rt.store, rt.sinks, rt.metrics, rt.config.outbox)
    rt.incidents = IncidentManager(
        rt.store, rt.storage / "evidence", Explainer(rt.config.site.timezone), list(rt.sinks),
        on_saved=lambda _incident: rt.outbox.notify() if rt.outbox else None,
    )  # fmt: skip
    await rt.incidents.close_left_open(datetime.now(UTC), keep_cameras=(SYSTEM_CAMERA,))
    task = asyncio.create_task(rt.outbox.run(), name="outbox")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # SIGTERM drains: give in-flight and due deliveries a last chance before closing the sinks
    if rt.sinks:
        await rt.outbox.flush(timeout_s=5.0)
    for sink in rt.sinks.values():
        await sink.close()


async def alarms_ctx(app: web.Application) -> AsyncIterator[None]:
    """Alarm panels: their armed state (replayed from the store, for `armed_by` rules), and, except in one-shot
    runs, the receivers and the video verification of their alarms (after sinks: verified alarms are incidents)."""
    rt = app[RUNTIME]
    panels = rt.config.alarm_panels
    if not panels:
        yield
        return
    assert rt.store is not None and rt.business is not None and rt.incidents is not None
    replayed = await rt.panels.load(rt.store, [p.id for p in panels])
    log.info("alarm panels: %d stored arm/disarm reports replayed", replayed)
    if rt.once:
        yield
        return
    verifier = rt.alarms = AlarmVerifier(rt.config, rt.presence, rt.incidents, rt.panels)
    rt.business.subscribe(verifier.on_event)
    try:
        for panel in panels:
            receiver = rt.alarm_receivers[panel.id] = SiaDc09Receiver(panel, rt.business, rt.config.site.id)
            await receiver.start()
    except BaseException:
        for receiver in rt.alarm_receivers.values():
            await receiver.close()
        raise
    yield
    for receiver in rt.alarm_receivers.values():
        await receiver.close()
    await verifier.close()  # pending alarms are judged now, on the video there is, rather than dropped


async def pos_ctx(app: web.Application) -> AsyncIterator[None]:
    """Point of sale (after sinks: exceptions and fused findings are incidents): the drop folder, the receipt-text
    listeners and the XProtect Transact feeds; none in one-shot runs. The HTTP intake answers 404 without it."""
    rt = app[RUNTIME]
    if rt.config.pos is None or rt.once:
        yield
        return
    assert rt.business is not None and rt.incidents is not None
    intake = PosIntake(rt.config.pos, rt.config.site, rt.business, rt.presence, rt.incidents, rt.metrics)
    await intake.start()
    rt.pos = intake
    yield
    rt.pos = None
    await intake.close()


async def access_ctx(app: web.Application) -> AsyncIterator[None]:
    """Access control (after sinks: tailgating and door alarms are incidents; before cameras: their ONVIF door
    events feed it); none in one-shot runs. The HTTP intake answers 404 without it."""
    rt = app[RUNTIME]
    if rt.config.access is None or rt.once:
        yield
        return
    assert rt.business is not None and rt.incidents is not None
    service = AccessService(rt.config.access, rt.config.site.id, rt.business, rt.presence, rt.incidents, rt.metrics)
    rt.access = service
    yield
    rt.access = None
    await service.close()


async def store_occupancy_ctx(app: web.Application) -> AsyncIterator[None]:
    """Store occupancy (after sinks: overcrowding is an incident; before cameras: their crossings feed it): the
    counts carry on from the store; live runs tick them with the wall clock so closing resets them even when
    nobody crosses. At the end open overcrowding incidents close (live: now; `--once`: at the footage's end)."""
    rt = app[RUNTIME]
    if not rt.config.store_occupancy:
        yield
        return
    assert rt.store is not None and rt.incidents is not None
    service = StoreOccupancyService(
        rt.config.store_occupancy, rt.config.site.timezone, rt.store, rt.incidents, rt.insights
    )
    await service.load()
    rt.occupancy = service

    def media_clock() -> datetime | None:
        """`--once`: the media time every running file has reached (a lagging camera's crossings are still due)."""
        times = [t for p in rt.pipelines.values() if p.status.state == "running" and (t := p.media_time()) is not None]
        return min(times, default=None)

    if rt.once:
        task = asyncio.create_task(service.run(media_clock, ONCE_TICK_S), name="store-occupancy")
    else:
        task = asyncio.create_task(service.run(lambda: datetime.now(UTC)), name="store-occupancy")

    def ended(t: asyncio.Task[None]) -> None:
        # the counts go on with every crossing; only the reset and durations without crossings wait for them
        if not t.cancelled() and t.exception() is not None:
            log.error("store occupancy clock stopped", exc_info=t.exception())

    task.add_done_callback(ended)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    media_end = [t for p in rt.pipelines.values() if (t := p.media_time()) is not None]
    await service.finish(max(media_end, default=None) if rt.once else datetime.now(UTC))
    rt.occupancy = None


async def system_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """StoreSight's own health as system incidents; not in one-shot runs, which fail fast and say why instead."""
    rt = app[RUNTIME]
    if rt.once or not rt.config.system_health.enabled:
        yield
        return
    assert rt.store is not None and rt.incidents is not None
    monitor = rt.system = SystemHealthMonitor(
        rt.config.system_health, rt.config.storage, rt.config.site.id, rt.incidents, rt.store, rt.sinks, rt.metrics,
        client=rt.client, triton_url=rt.client.url if rt.client else "", model=rt.config.triton.model,
        cameras=lambda: len(rt.pipelines), request_timeout_s=rt.config.triton.request_timeout_s,
    )  # fmt: skip
    task = asyncio.create_task(monitor.run(), name="system-health")

    def ended(t: asyncio.Task[None]) -> None:
        # run() catches every failure itself; should it end anyway, say so where operators look
        if not t.cancelled() and t.exception() is not None:
            monitor.error = f"monitor stopped: {t.exception()!r}"
            log.error("system health monitor stopped", exc_info=t.exception())

    task.add_done_callback(ended)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _wait_for_triton(rt: Runtime, pipeline: CameraPipeline) -> None:
    """Bounded wait for one-shot runs; live runs wait as long as it takes, showing why in readiness."""
    assert rt.client is not None
    if rt.once:
        info = await rt.client.wait_ready(rt.config.triton.ready_timeout_s)
    else:
        delay = 1.0
        while not await rt.client.ready():
            pipeline.status.state = "waiting-for-triton"
            rt.metrics.triton_up.set(0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        assert rt.client.info is not None
        info = rt.client.info
    rt.metrics.triton_up.set(1)
    pipeline.resolve_classes(info.class_names)


async def _supervise(rt: Runtime, camera_id: str) -> None:
    """Run one camera's pipeline; restart it with backoff when it fails (live), stop at the end (files)."""
    backoff = RESTART_START_S
    while True:
        pipeline = rt.pipelines[camera_id]
        try:
            await _wait_for_triton(rt, pipeline)
            await pipeline.run()
            return
        except asyncio.CancelledError:
            raise
        except StoreSightError as exc:
            pipeline.status.state, pipeline.status.last_error = "failed", str(exc)
            log.error("%s: %s", camera_id, exc)
            # rejected camera credentials are not retried either: cameras lock accounts after a few failures
            if rt.once or pipeline.source.is_file or isinstance(exc, ConfigError | CameraAuthError):
                rt.fatal = rt.fatal or exc
                return
        except Exception as exc:  # a bug must not take the other cameras down: report it, restart
            pipeline.status.state, pipeline.status.last_error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("%s: pipeline crashed", camera_id)
            if rt.once:
                rt.fatal = rt.fatal or StoreSightError(f"{camera_id}: pipeline crashed: {exc}")
                return
        await pipeline.close()
        pipeline.status.state = "restarting"
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RESTART_MAX_S)
        rt.pipelines[camera_id] = _new_pipeline(rt, camera_id)
        rt.pipelines[camera_id].status.last_error = pipeline.status.last_error


def _new_pipeline(rt: Runtime, camera_id: str) -> CameraPipeline:
    assert rt.client is not None and rt.incidents is not None
    cam = rt.config.camera(camera_id)
    source: CameraSource
    if cam.onvif is not None:
        # asks the camera for its analysis stream URI each time the pipeline starts, then reads it with OpenCV
        source = OnvifSource(cam.id, cam.onvif, cam.fps)
    else:
        assert cam.source is not None  # the config requires exactly one of source and onvif
        source = OpenCVSource(
            cam.id, cam.source, cam.fps, realtime=cam.realtime, start_time=cam.start_time,
            stall_timeout_s=cam.stall_timeout_s,
        )  # fmt: skip
    context = RuleContext(panels=rt.panels)
    rules = [build_rule(r, context) for r in rt.config.rules if r.camera == cam.id]
    pipeline = CameraPipeline(cam, source, rt.client, rt.config.detector, rules, rt.incidents, rt.metrics, rt.insights)
    pipeline.presence = rt.presence
    pipeline.store_occupancy = rt.occupancy
    if pipeline.pose_rules:
        pipeline.pose, pipeline.pose_config = rt.pose, rt.config.pose
    if cam.tamper is not None:
        pipeline.tamper = TamperDetector(cam.id, cam.tamper)
    # camera-native motion for the gate: the events task creates the camera's state, maybe after this pipeline
    pipeline.gate.signals = lambda: rt.signals.get(camera_id)
    return pipeline


HEALTH_TICK_S = 1.0


async def _monitor_health(rt: Runtime, camera_id: str) -> None:
    """Evaluate one live camera's health every second: metrics, readiness, and the camera_offline incident."""
    cam = rt.config.camera(camera_id)
    health = rt.health[camera_id] = CameraHealth(camera_id, cam.fps, cam.stall_timeout_s, cam.offline_after_s)
    states = ("starting", "online", "degraded", "offline")
    while True:
        pipeline = rt.pipelines[camera_id]
        now = time.monotonic()
        snap = health.evaluate(now, pipeline.source.status, pipeline.status.frames)
        for s in states:
            rt.metrics.camera_state.labels(camera=camera_id, state=s).set(1 if s == snap.state else 0)
        rt.metrics.received_fps.labels(camera=camera_id).set(snap.received_fps)
        rt.metrics.analysed_fps.labels(camera=camera_id).set(snap.analysed_fps)
        rt.metrics.reconnects.labels(camera=camera_id).set(snap.reconnects)
        assert rt.incidents is not None
        for hit in health.incident_hits(now):
            incident = await rt.incidents.handle(hit, None, None)
            if incident is not None and incident.state == "start":
                rt.metrics.incidents.labels(camera=camera_id, rule=hit.rule_id).inc()
        await asyncio.sleep(HEALTH_TICK_S)


SIGNAL_FRAME_MAX_AGE_S = 3.0  # a forwarded camera event gets the analysis frame as snapshot if it is this recent


async def camera_events(rt: Runtime, camera_id: str) -> None:
    """Keep an ONVIF events subscription to one camera: every signal updates `rt.signals[camera_id]`, forwarded
    kinds become incidents. Restarted with backoff if the client crashes; stops for good when the camera rejects
    the login or has no event service (the client's status says which)."""
    cam = rt.config.camera(camera_id)
    assert cam.onvif is not None and cam.onvif.events is not None and rt.incidents is not None
    events = cam.onvif.events
    signals = rt.signals[camera_id] = CameraSignals(camera_id, events.forward, events.severity)
    incidents = rt.incidents

    async def on_signal(signal: CameraSignal) -> None:
        if rt.access is not None:  # door alarms and access decisions of configured doors: stored as door events
            try:
                await rt.access.on_signal(signal)
            except Exception:  # the camera's other signals go on; the door event is logged as lost
                log.exception("%s: storing an ONVIF door event failed", camera_id)
        for hit in signals.update(signal):
            frame = None
            pipeline = rt.pipelines.get(camera_id)
            if hit.state == "start" and pipeline is not None and pipeline.last_frame is not None:
                age = abs((pipeline.last_frame.captured_at - hit.started_at).total_seconds())
                frame = pipeline.last_frame if age <= SIGNAL_FRAME_MAX_AGE_S else None
            incident = await incidents.handle(hit, frame, None)
            if incident is not None and incident.state == "start":
                rt.metrics.incidents.labels(camera=camera_id, rule=hit.rule_id).inc()

    backoff = RESTART_START_S
    while True:
        client = rt.events[camera_id] = OnvifEventsClient(camera_id, cam.onvif, on_signal)
        try:
            await client.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not end camera events silently: report it, restart
            client.status.state, client.status.last_error = "reconnecting", f"{type(exc).__name__}: {exc}"
            log.exception("%s: ONVIF events crashed", camera_id)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RESTART_MAX_S)


async def cameras_ctx(app: web.Application) -> AsyncIterator[None]:
    """One supervised task per enabled camera; `done` is set when all have stopped (files in --once)."""
    rt = app[RUNTIME]
    assert rt.client is not None
    if rt.once:
        # a one-shot run fails early and clearly when Triton is missing, before any camera starts
        await rt.client.wait_ready(rt.config.triton.ready_timeout_s)
    for cam in rt.config.cameras:
        if cam.enabled:
            rt.pipelines[cam.id] = _new_pipeline(rt, cam.id)
            rt.tasks[cam.id] = asyncio.create_task(_supervise(rt, cam.id), name=f"camera-{cam.id}")
            if not rt.pipelines[cam.id].source.is_file:
                rt.monitors[cam.id] = asyncio.create_task(_monitor_health(rt, cam.id), name=f"health-{cam.id}")
            if cam.onvif is not None and cam.onvif.events is not None and cam.onvif.events.enabled:
                rt.event_tasks[cam.id] = asyncio.create_task(camera_events(rt, cam.id), name=f"events-{cam.id}")

    async def watch() -> None:
        await asyncio.gather(*rt.tasks.values(), return_exceptions=True)
        rt.done.set()

    watcher = asyncio.create_task(watch(), name="cameras-done")
    yield
    for task in [*rt.tasks.values(), *rt.monitors.values(), *rt.event_tasks.values()]:
        task.cancel()
    await asyncio.gather(*rt.tasks.values(), *rt.monitors.values(), *rt.event_tasks.values(), return_exceptions=True)
    watcher.cancel()
    for p in rt.pipelines.values():
        await p.close()


def build_app(config: Config, once: bool = False) -> web.Application:
    """The application with every context registered (routes come from plugin.web)."""
    from plugin.web.routes import setup_routes

    app = web.Application()
    app[RUNTIME] = Runtime(config=config, once=once)
    contexts = [store_ctx, inference_ctx, sinks_ctx, system_health_ctx, alarms_ctx, pos_ctx, access_ctx]
    app.cleanup_ctx.extend([*contexts, store_occupancy_ctx, cameras_ctx])
    setup_routes(app)
    return app
