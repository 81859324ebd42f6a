"""The aiohttp Application owns the program: each long-lived resource is a cleanup context, started in dependency
order (database, inference, sinks + outbox, business inputs, cameras) and closed in reverse. Each context stores
what it builds under its typed key (plugin/web/keys.py). This module is also where adapters meet the bridge: it
alone picks the camera sources, sinks and business inputs a config names."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from adapters.business.access.webhook import events_handler as access_events_handler
from adapters.business.alarm.sia_dc09 import SiaDc09Receiver
from adapters.business.pos.poslog import PosLogDropFolder, PosLogReader, poslog_handler
from adapters.business.pos.receipt_text import ReceiptTextServer
from adapters.business.pos.transact import TransactServer
from adapters.business.pos.webhook import events_handler as pos_events_handler
from adapters.cameras.registry import camera_source, events_source
from adapters.sinks.registry import BY_KEY as SINKS_BY_KEY
from plugin.config.root import Config, SinkConfig
from plugin.config.service import MIN_TOKEN_LENGTH
from plugin.errors import ConfigError, StoreSightError
from plugin.fusion.access.service import AccessService
from plugin.fusion.alarms import AlarmVerifier, PanelStates
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.service import PosService
from plugin.fusion.store_occupancy import ONCE_TICK_S, StoreOccupancyService
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.incidents.outbox import OutboxWorker
from plugin.incidents.retention import Retention
from plugin.inference.pose import PoseClient
from plugin.inference.repository import default_model_repository
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient
from plugin.insights.hq_feed import HourlyRecords
from plugin.insights.rollups import InsightsRecorder
from plugin.insights.system_health import SystemHealthMonitor
from plugin.metrics import Metrics
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.supervisor import CameraFleet, PipelineParts, Supervisor
from plugin.private import install_key, private_dir
from plugin.protocols import BusinessEventSource, IncidentSink, LiveStateSink, RecordSink, SinkRefs
from plugin.rules.base import RuleContext
from plugin.types import SYSTEM_CAMERA
from plugin.web.auth.middleware import add_route
from plugin.web.auth.roles import BRIDGE_ROLES, INGEST
from plugin.web.auth.service import ApiToken, Auth, AuthSettings
from plugin.web.auth.sqlite import SqliteAuthStore
from plugin.web.auth.transport import default_allowed_hosts
from plugin.web.auth.users import first_admin
from plugin.web.keys import (
    ACCESS,
    ALARMS,
    AUTH,
    CAMERAS,
    CONFIG,
    CONFIG_FILE,
    DATABASE,
    EMBEDDED_TRITON,
    HOURLY,
    HUB,
    INCIDENTS,
    INFERENCE,
    INSIGHTS,
    METRICS,
    OCCUPANCY,
    ONCE,
    OUTBOX,
    PANELS,
    POS,
    POS_INPUTS,
    POSE,
    PRESENCE,
    RECORD_SINKS,
    RETENTION,
    SINKS,
    SUPERVISOR,
    SYSTEM,
)
from plugin.web.routes import setup_routes
from plugin.web.status import live_state

log = logging.getLogger(__name__)

LIVE_STATE_S = 2.0  # how often the live state is handed to sinks that show it (they send only what changed)


API_TOKEN_ENV = "STORESIGHT_API_TOKEN"


def api_token(config: Config) -> str:
    """The admin API token: config, then $STORESIGHT_API_TOKEN, then one generated once and kept in the data dir;
    one shorter than 16 characters is refused, naming where it came from."""
    if config.web.token:
        return config.web.token
    env = os.environ.get(API_TOKEN_ENV)
    if env:
        if len(env.strip()) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"${API_TOKEN_ENV}: a token needs at least {MIN_TOKEN_LENGTH} characters")
        return env.strip()
    path = config.storage.path / "api_token"
    if path.is_file():
        token = path.read_text().strip()
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{path}: a token needs at least {MIN_TOKEN_LENGTH} characters (delete it: a new one "
                              "is generated)")  # fmt: skip
        return token
    private_dir(path.parent)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("generated an API token in %s", path)
    return token


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SQLite database, the insights recorder and the business hub."""
    config = app[CONFIG]
    private_dir(config.storage.path, warn_if_open=True)  # evidence of people, secrets: the owner's alone
    db = app[DATABASE] = AsyncDatabase(config.storage.path / "storesight.db")
    insights = app[INSIGHTS] = InsightsRecorder(db)
    app[HUB] = BusinessHub(db)
    flusher = asyncio.create_task(insights.run(), name="insights")
    yield
    flusher.cancel()
    await asyncio.gather(flusher, return_exceptions=True)
    await insights.flush()
    await db.close()


def auth_settings(config: Config) -> AuthSettings:
    """The console's sign-in rules from the `web` section."""
    w = config.web
    return AuthSettings(
        title=f"StoreSight · {config.site.name or config.site.id}",
        allowed_hosts=default_allowed_hosts(w.host, w.allowed_hosts), tls=w.tls is not None, store_id=config.site.id,
        session_max_age=timedelta(hours=w.session_hours), session_idle=timedelta(minutes=w.session_idle_minutes),
    )  # fmt: skip


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sign-in, tokens and the audit log on the database (after it); the first admin when there is no user."""
    config = app[CONFIG]
    store = SqliteAuthStore(app[DATABASE])
    tokens = [ApiToken.of("api-token", BRIDGE_ROLES["admin"], api_token(config))]
    tokens += [ApiToken.of(t.name, BRIDGE_ROLES[t.role], t.token) for t in config.web.tokens]
    if not app[ONCE]:
        await first_admin(store, BRIDGE_ROLES, "admin", config.storage.path)
    app[AUTH] = Auth(store, auth_settings(config), BRIDGE_ROLES, tokens)
    yield


async def inference_ctx(app: web.Application) -> AsyncIterator[None]:
    """The embedded Triton (when no URL is configured) and the shared inference client."""
    config = app[CONFIG]
    tc = config.triton
    url = tc.url
    triton = app[EMBEDDED_TRITON] = None
    if url is None:
        triton = app[EMBEDDED_TRITON] = EmbeddedTriton(
            model_repository=(tc.model_repository or default_model_repository()).resolve(),
            cache_dir=config.storage.path.resolve() / "triton",
        )
        triton.start()
        try:
            await asyncio.to_thread(triton.wait_ready, tc.model, tc.ready_timeout_s)
        except BaseException:
            triton.stop()
            raise
        url = triton.grpc_url
    client = app[INFERENCE] = TritonInferenceClient(url, tc.model, tc.request_timeout_s, shared_memory=tc.shared_memory)
    pose = app[POSE] = None
    if any(r.uses_pose for r in config.rules):
        if triton is not None:  # a missing MoveNet file is a clear start error, not silently idle pose rules
            try:
                await asyncio.to_thread(triton.wait_ready, config.pose.model, tc.ready_timeout_s)
            except BaseException:
                await client.close()
                triton.stop()
                raise
        pose = app[POSE] = PoseClient(url, config.pose.model, tc.request_timeout_s)
    # the embedded server is restarted whenever it dies (crash, OOM, kill -9); cameras wait for it and resume
    keeper = None if triton is None else asyncio.create_task(triton.keep_running(tc.model, tc.ready_timeout_s))
    yield
    if keeper is not None:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    if pose is not None:
        await pose.close()
    await client.close()  # before the server: Triton's shutdown waits on open connections
    if triton is not None:
        await asyncio.to_thread(triton.stop)


def build_sink(config: SinkConfig, refs: SinkRefs) -> IncidentSink:
    """The adapter for one sink config (its registry entry, by `kind`); `refs` keeps what a VMS sink created."""
    return SINKS_BY_KEY[config.kind].build(config, refs)


async def sinks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sinks, the incident manager and the outbox worker."""
    config, db = app[CONFIG], app[DATABASE]
    sinks = app[SINKS] = {s.id: build_sink(s, db) for s in config.sinks}
    app[RECORD_SINKS] = [sid for sid, sink in sinks.items() if isinstance(sink, RecordSink)]
    privacy = {s.id: s.privacy for s in config.sinks}
    outbox = app[OUTBOX] = OutboxWorker(db, sinks, app[METRICS], config.outbox, privacy=privacy)
    incidents = app[INCIDENTS] = IncidentManager(
        db, config.storage.path / "evidence", Explainer(config.site.timezone, config.site.language),
        list(sinks),
        on_saved=lambda _incident: outbox.notify(), blurred_copies="blur" in privacy.values(),
    )  # fmt: skip
    await incidents.close_left_open(datetime.now(UTC), keep_cameras=(SYSTEM_CAMERA,))
    task = asyncio.create_task(outbox.run(), name="outbox")
    retries = asyncio.create_task(incidents.run(), name="incident-retries")
    yield
    retries.cancel()
    task.cancel()
    await asyncio.gather(task, retries, return_exceptions=True)
    await incidents.flush_unsaved()  # a last try for incidents the database did not take (lost at exit otherwise)
    # SIGTERM drains: give in-flight and due deliveries a last chance before closing the sinks
    if sinks:
        await outbox.flush(timeout_s=5.0)
    for sink in sinks.values():
        await sink.close()


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """The purge of what `storage.retention` no longer keeps, in the background (not in one-shot runs: a forensic
    review of old footage must not delete anything)."""
    config = app[CONFIG]
    app[RETENTION] = None
    if app[ONCE]:
        yield
        return
    storage = config.storage
    pos_folders = [] if config.pos is None or config.pos.file_drop is None else config.pos.file_drop.kept_folders()
    retention = Retention(
        storage.retention, app[DATABASE], storage.path / "evidence", pos_folders, triton_dir=storage.path / "triton"
    )
    app[RETENTION] = retention
    task = asyncio.create_task(retention.run(), name="retention")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def hourly_records_ctx(app: web.Application) -> AsyncIterator[None]:
    """With a record sink (head office) and not in one-shot runs: camera health sampled into the roll-ups, and each
    finished hour's roll-ups, POS totals and camera health queued for it (plugin/insights/hq_feed.py)."""
    config, record_sinks = app[CONFIG], app[RECORD_SINKS]
    app[HOURLY] = None
    if not record_sinks or app[ONCE]:
        yield
        return
    fleet, outbox = app[CAMERAS], app[OUTBOX]
    limits = {r.id: {"max_length": getattr(r, "max_length", None), "max_wait_s": getattr(r, "max_wait_s", None)}
              for r in config.rules if r.type == "queue"}  # fmt: skip
    hourly = app[HOURLY] = HourlyRecords(
        app[DATABASE], app[INSIGHTS], record_sinks, outbox.notify,
        health=lambda: {cid: h.snapshot.state for cid, h in fleet.health.items()},
        limits=limits, rules={r.id: r.model_dump(mode="json") for r in config.rules},
    )  # fmt: skip
    task = asyncio.create_task(hourly.run(), name="hourly-records")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _start_all(sources: list[BusinessEventSource]) -> None:
    """Start each business input in order; on a failure close those already started."""
    started: list[BusinessEventSource] = []
    try:
        for source in sources:
            await source.start()
            started.append(source)
    except BaseException:
        for source in reversed(started):
            await source.close()
        raise


async def alarms_ctx(app: web.Application) -> AsyncIterator[None]:
    """Alarm panels: their armed state (replayed from the database, for `armed_by` rules), and, except in one-shot
    runs, the receivers and the video verification of their alarms (after sinks: verified alarms are incidents)."""
    config, panels = app[CONFIG], app[PANELS]
    app[ALARMS] = None
    if not config.alarm_panels:
        yield
        return
    replayed = await panels.load(app[DATABASE], [p.id for p in config.alarm_panels])
    log.info("alarm panels: %d stored arm/disarm reports replayed", replayed)
    if app[ONCE]:
        yield
        return
    verifier = app[ALARMS] = AlarmVerifier(config.alarm_panels, config.cameras, app[PRESENCE], app[INCIDENTS], panels)
    hub = app[HUB]
    hub.subscribe(verifier.on_event)
    receivers: list[BusinessEventSource] = [SiaDc09Receiver(p, hub, config.site.id) for p in config.alarm_panels]
    await _start_all(receivers)
    yield
    for receiver in receivers:
        await receiver.close()
    await verifier.close()  # pending alarms are judged now, on the video there is, rather than dropped


async def pos_ctx(app: web.Application) -> AsyncIterator[None]:
    """Point of sale (after sinks: exceptions and fused findings are incidents): the service, the drop folder, the
    receipt-text listeners and the XProtect Transact feeds; none in one-shot runs. The HTTP intake answers 404
    without it."""
    config = app[CONFIG]
    app[POS], app[POS_INPUTS] = None, []
    if config.pos is None or app[ONCE]:
        yield
        return
    site = config.site
    service = PosService(config.pos, site.id, site.timezone, app[HUB], app[PRESENCE], app[INCIDENTS], app[METRICS])
    await service.start()  # seeds the rules from stored transactions
    reader = PosLogReader(config.pos, service.tz)
    drop = None if config.pos.file_drop is None else PosLogDropFolder(config.pos.file_drop, service, reader)
    # Transact first: it must see the first transaction
    listeners: list[BusinessEventSource] = [TransactServer(feed, service) for feed in config.pos.transact]
    # one dead-letter file for every text feed: each record names its feed and peer
    dead_letters = config.storage.path / "dead-letter" / "pos-text.jsonl"
    listeners += [ReceiptTextServer(feed, service, dead_letters) for feed in config.pos.text]
    if drop is not None:
        listeners.append(drop)
    await _start_all(listeners)
    app[POS], app[POS_INPUTS] = service, listeners
    yield
    for listener in reversed(listeners):  # intake first, then the judgements still waiting for video
        await listener.close()
    await service.close()


async def access_ctx(app: web.Application) -> AsyncIterator[None]:
    """Access control (after sinks: tailgating and door alarms are incidents; before cameras: their ONVIF door
    events feed it); none in one-shot runs. The HTTP intake answers 404 without it."""
    config = app[CONFIG]
    app[ACCESS] = None
    if config.access is None or app[ONCE]:
        yield
        return
    service = AccessService(
        config.access, config.site.id, app[HUB], app[PRESENCE], app[INCIDENTS], app[METRICS],
        key=install_key(config.storage.path),
    )  # fmt: skip
    app[ACCESS] = service
    yield
    await service.close()


async def store_occupancy_ctx(app: web.Application) -> AsyncIterator[None]:
    """Store occupancy (after sinks: overcrowding is an incident; before cameras: their crossings feed it): the
    counts carry on from the database; live runs tick them with the wall clock so closing resets them even when
    nobody crosses. At the end open overcrowding incidents close (live: now; `--once`: at the footage's end)."""
    config = app[CONFIG]
    app[OCCUPANCY] = None
    if not config.store_occupancy:
        yield
        return
    fleet = app[CAMERAS]
    service = StoreOccupancyService(
        config.store_occupancy, config.site.timezone, app[DATABASE], app[INCIDENTS], app[INSIGHTS]
    )
    await service.load()
    app[OCCUPANCY] = service

    def media_clock() -> datetime | None:
        """`--once`: the media time every running file has reached (a lagging camera's crossings are still due)."""
        running = fleet.pipelines.values()
        times = [t for p in running if p.status.state == "running" and (t := p.media_time()) is not None]
        return min(times, default=None)

    once = app[ONCE]
    if once:
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
    media_end = [t for p in fleet.pipelines.values() if (t := p.media_time()) is not None]
    await service.finish(max(media_end, default=None) if once else datetime.now(UTC))


async def system_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """StoreSight's own health as system incidents; not in one-shot runs, which fail fast and say why instead."""
    config = app[CONFIG]
    app[SYSTEM] = None
    if app[ONCE] or not config.system_health.enabled:
        yield
        return
    client, fleet, sinks = app[INFERENCE], app[CAMERAS], app[SINKS]
    monitor = app[SYSTEM] = SystemHealthMonitor(
        config.system_health, config.storage, config.site.id, app[INCIDENTS], app[DATABASE], sinks,
        app[METRICS], client=client, triton_url=client.url, model=config.triton.model,
        cameras=lambda: len(fleet.pipelines), request_timeout_s=config.triton.request_timeout_s,
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


async def cameras_ctx(app: web.Application) -> AsyncIterator[None]:
    """One supervised task per enabled camera (plugin/pipeline/supervisor.py); the fleet's `done` is set when all
    have stopped (files in --once)."""
    config, client, once = app[CONFIG], app[INFERENCE], app[ONCE]
    if once:
        # a one-shot run fails early and clearly when Triton is missing, before any camera starts
        await client.wait_ready(config.triton.ready_timeout_s)
    parts = PipelineParts(
        detector=config.detector, pose_config=config.pose, rules=config.rules, client=client,
        incidents=app[INCIDENTS], metrics=app[METRICS], insights=app[INSIGHTS], presence=app[PRESENCE],
        rule_context=RuleContext(panels=app[PANELS]), make_source=camera_source, pose=app[POSE],
        crossings=app[OCCUPANCY],
    )  # fmt: skip
    access = app[ACCESS]
    supervisor = Supervisor(
        app[CAMERAS], config.cameras, parts, once=once, ready_timeout_s=config.triton.ready_timeout_s,
        make_events=events_source, signal_listeners=[access.on_signal] if access is not None else [],
    )  # fmt: skip
    app[SUPERVISOR] = supervisor
    supervisor.start()
    yield
    await supervisor.stop()


async def live_state_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store's live state (cameras, people, queues, store occupancy), handed every LIVE_STATE_S to the sinks
    configured to show it (the MQTT sink's Home Assistant discovery); not in one-shot runs. Best effort: a sink that
    cannot take one state gets the next."""
    showing = [s for s in app[SINKS].values() if isinstance(s, LiveStateSink) and s.wants_live_state]
    if app[ONCE] or not showing:
        yield
        return

    async def run() -> None:
        failing: dict[str, str] = {}
        while True:
            state = live_state(app)
            for sink in showing:
                try:
                    async with asyncio.timeout(LIVE_STATE_S * 5):
                        await sink.publish_live(state)
                except (StoreSightError, TimeoutError) as exc:
                    if failing.get(sink.id) != str(exc):  # said once per distinct failure, not every tick
                        log.warning("%s: live state not published: %s", sink.id, exc or "timed out")
                    failing[sink.id] = str(exc)
                    continue
                if failing.pop(sink.id, None) is not None:
                    log.info("%s: live state published again", sink.id)
            await asyncio.sleep(LIVE_STATE_S)

    task = asyncio.create_task(run(), name="live-state")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def new_app(config: Config, once: bool = False, config_file: Path | None = None) -> web.Application:
    """An application holding the eager resources, with no context and no route yet (tests add the ones they
    need; `build_app` adds them all). `config_file`: where `config` was read from, for the zone editor."""
    app = web.Application()
    app[CONFIG] = config
    app[CONFIG_FILE] = config_file
    app[ONCE] = once
    app[METRICS] = Metrics()
    app[PRESENCE] = PresenceLog()
    app[PANELS] = PanelStates()
    app[CAMERAS] = CameraFleet()
    return app


def add_intake_routes(app: web.Application) -> None:
    """The HTTP business inputs (POSLog, POS JSON, door events): adapters, answering 404 while their service is
    not running. Each answers 202 once what it took is stored; each needs the INGEST permission."""

    add_route(app, "POST", "/api/pos/poslog", poslog_handler(lambda: app.get(POS)), INGEST)
    add_route(app, "POST", "/api/pos/events", pos_events_handler(lambda: app.get(POS)), INGEST)
    add_route(app, "POST", "/api/access/events", access_events_handler(lambda: app.get(ACCESS)), INGEST)


def build_app(config: Config, once: bool = False, config_file: Path | None = None) -> web.Application:
    """The application with every context and route registered."""
    app = new_app(config, once, config_file)
    app.cleanup_ctx.extend([
        database_ctx, auth_ctx, inference_ctx, sinks_ctx, retention_ctx, hourly_records_ctx, system_health_ctx,
        alarms_ctx, pos_ctx, access_ctx, store_occupancy_ctx, cameras_ctx, live_state_ctx,
    ])  # fmt: skip
    setup_routes(app)
    add_intake_routes(app)
    return app
