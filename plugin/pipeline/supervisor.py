"""Every enabled camera, supervised: one pipeline task each, restarted with backoff when it fails (live) and stopped
at the end of the footage (files); a health monitor per live camera; and the camera's own events where configured.

The adapters that read a camera (its video, its events) are handed in as factories by the app, which alone knows
them: this module sees only the CameraSource and CameraEventSource protocols."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from plugin.config.cameras import CameraConfig, OnvifConfig
from plugin.config.service import DetectorConfig, PoseConfig
from plugin.errors import CameraAuthError, ConfigError, StoreSightError
from plugin.incidents.manager import IncidentManager
from plugin.inference.pose import PoseClient
from plugin.inference.triton import TritonInferenceClient
from plugin.insights.rollups import InsightsRecorder
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline, CrossingListener
from plugin.pipeline.camera_signals import CameraSignals
from plugin.pipeline.health import CameraHealth
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.tamper import TamperDetector
from plugin.protocols import CameraEventSource, CameraSource
from plugin.rules.base import Rule, RuleBase, RuleContext
from plugin.rules.registry import build_rule
from plugin.types import CameraSignal, Frame

log = logging.getLogger(__name__)

RESTART_START_S = 2.0
RESTART_MAX_S = 60.0
TRITON_POLL_START_S = 0.5  # a camera waiting for Triton asks again after this, doubling up to TRITON_POLL_MAX_S
TRITON_POLL_MAX_S = 2.0  # short: an embedded server restarts in seconds, and cameras should resume as soon
HEALTH_TICK_S = 1.0
SIGNAL_FRAME_MAX_AGE_S = 3.0  # a forwarded camera event gets the analysis frame as snapshot if it is this recent

SignalHandler = Callable[[CameraSignal], Awaitable[None]]
SourceFactory = Callable[[CameraConfig], CameraSource]
EventsFactory = Callable[[str, OnvifConfig, SignalHandler], CameraEventSource]


@dataclass
class CameraFleet:
    """The running cameras, as readiness, the console and the CLI read them."""

    pipelines: dict[str, CameraPipeline] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    monitors: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    health: dict[str, CameraHealth] = field(default_factory=dict)
    signals: dict[str, CameraSignals] = field(default_factory=dict)  # camera-native analytics, per camera
    events: dict[str, CameraEventSource] = field(default_factory=dict)
    event_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    fatal: StoreSightError | None = None  # what stopped a one-shot run, or a camera for good
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when every camera task has stopped

    def all_tasks(self) -> list[asyncio.Task[None]]:
        """Every task the fleet runs."""
        return [*self.tasks.values(), *self.monitors.values(), *self.event_tasks.values()]


@dataclass
class PipelineParts:
    """What every camera's pipeline is built with."""

    detector: DetectorConfig
    pose_config: PoseConfig
    rules: Sequence[RuleBase]
    client: TritonInferenceClient
    incidents: IncidentManager
    metrics: Metrics
    insights: InsightsRecorder | None
    presence: PresenceLog
    rule_context: RuleContext
    make_source: SourceFactory
    pose: PoseClient | None = None  # only when a rule needs keypoints
    crossings: CrossingListener | None = None  # store occupancy, fed by the entrance lines


class Supervisor:
    """Starts, restarts and stops the fleet's tasks."""

    def __init__(
        self,
        fleet: CameraFleet,
        cameras: Sequence[CameraConfig],
        parts: PipelineParts,
        *,
        once: bool,
        ready_timeout_s: float,
        make_events: EventsFactory | None = None,
        signal_listeners: Sequence[SignalHandler] = (),
    ) -> None:
        self.fleet = fleet
        self.cameras = {c.id: c for c in cameras}
        self.parts = parts
        self.once = once
        self.ready_timeout_s = ready_timeout_s
        self.make_events = make_events
        self.signal_listeners = list(signal_listeners)  # told of every camera signal before it is judged
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """One supervised task per enabled camera; `fleet.done` is set when all have stopped (files in --once)."""
        fleet = self.fleet
        for cam in self.cameras.values():
            if not cam.enabled:
                continue
            fleet.pipelines[cam.id] = self.new_pipeline(cam.id)
            fleet.tasks[cam.id] = asyncio.create_task(self.supervise(cam.id), name=f"camera-{cam.id}")
            if not fleet.pipelines[cam.id].source.is_file:
                fleet.monitors[cam.id] = asyncio.create_task(self.monitor_health(cam.id), name=f"health-{cam.id}")
            events = cam.onvif.events if cam.onvif is not None else None
            if events is not None and events.enabled and self.make_events is not None:
                fleet.event_tasks[cam.id] = asyncio.create_task(self.camera_events(cam.id), name=f"events-{cam.id}")

        async def watch() -> None:
            while True:  # a camera restarted with new zones (`reconfigure`) has a new task: wait for that too
                tasks = list(fleet.tasks.values())
                await asyncio.gather(*tasks, return_exceptions=True)
                if tasks == list(fleet.tasks.values()):
                    break
            fleet.done.set()

        self._watcher = asyncio.create_task(watch(), name="cameras-done")

    async def stop(self) -> None:
        """Cancel every task, then close the pipelines' sources."""
        tasks = self.fleet.all_tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._watcher is not None:
            self._watcher.cancel()
        for p in self.fleet.pipelines.values():
            await p.settled()  # the frame in hand reaches the incident manager before it closes
            await p.close()

    async def reconfigure(self, camera: CameraConfig, rules: Sequence[RuleBase]) -> None:
        """Apply a camera's new config and rules (the zone editor's save): only this camera's pipeline restarts, with
        its new zones and rules and fresh rule state; incidents its old rules held open end at its last frame. The
        other cameras, and this camera's health monitor and events subscription, run on untouched."""
        cid, fleet = camera.id, self.fleet
        if cid not in self.cameras:
            raise ConfigError(f"cameras: no camera {cid!r} is running here (a new camera needs a restart)")
        task, old = fleet.tasks.get(cid), fleet.pipelines.get(cid)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if old is not None:
            await old.settled()
            await old.finish()
            await old.close()
        self.cameras[cid] = camera
        self.parts.rules = [*(r for r in self.parts.rules if r.camera != cid), *(r for r in rules if r.camera == cid)]
        if not camera.enabled:
            fleet.pipelines.pop(cid, None)
            fleet.tasks.pop(cid, None)
            log.info("%s: disabled: its pipeline stopped", cid)
            return
        fleet.pipelines[cid] = self.new_pipeline(cid)
        fleet.tasks[cid] = asyncio.create_task(self.supervise(cid), name=f"camera-{cid}")
        log.info("%s: pipeline restarted with %d zone(s) and %d rule(s)", cid, len(camera.zones),
                 sum(1 for r in self.parts.rules if r.camera == cid))  # fmt: skip

    async def grab_frame(self, camera_id: str, timeout_s: float) -> Frame | None:
        """One frame read from the camera's source now, on its own connection (the zone editor's picture when the
        pipeline has none yet); None when none came within `timeout_s`."""
        source = self.parts.make_source(self.cameras[camera_id])
        try:
            async with asyncio.timeout(timeout_s):
                async for frame in source.frames():
                    return frame
        except TimeoutError:
            return None
        finally:
            await source.close()
        return None

    def new_pipeline(self, camera_id: str) -> CameraPipeline:
        """A fresh pipeline for one camera: its source, rules (with fresh state), tamper and motion gate."""
        parts, cam = self.parts, self.cameras[camera_id]

        def fresh_rules() -> list[Rule]:
            return [build_rule(r, parts.rule_context) for r in parts.rules if r.camera == cam.id]

        rules = fresh_rules()
        pipeline = CameraPipeline(
            cam, parts.make_source(cam), parts.client, parts.detector, rules, parts.incidents, parts.metrics,
            parts.insights,
        )  # fmt: skip
        pipeline.presence = parts.presence
        pipeline.store_occupancy = parts.crossings
        pipeline.fresh_rules = fresh_rules
        if pipeline.pose_rules:
            pipeline.pose, pipeline.pose_config = parts.pose, parts.pose_config
        if cam.tamper is not None:
            pipeline.tamper = TamperDetector(cam.id, cam.tamper)
        # camera-native motion for the gate: the events task creates the camera's state, maybe after this pipeline
        pipeline.gate.signals = lambda: self.fleet.signals.get(camera_id)
        if not self.once:  # live runs outlast a Triton outage with the camera's state kept; --once fails fast

            async def wait_for_inference(reason: str) -> None:
                await self._inference_lost(pipeline, reason)

            pipeline.wait_for_inference = wait_for_inference
        return pipeline

    async def _inference_lost(self, pipeline: CameraPipeline, reason: str) -> None:
        """Triton stopped answering mid-run (killed, restarting, an external server gone): the pipeline keeps its
        tracks, rule state and open incidents and waits here until the model answers again."""
        cam, client, metrics = pipeline.camera.id, self.parts.client, self.parts.metrics
        log.warning("%s: inference unavailable, waiting for Triton (rule state kept): %s", cam, reason)
        pipeline.status.state, pipeline.status.last_error = "waiting-for-triton", reason
        metrics.triton_up.set(0)
        started = time.monotonic()
        delay = TRITON_POLL_START_S
        while not await client.ready():
            await asyncio.sleep(delay)
            delay = min(delay * 2, TRITON_POLL_MAX_S)
        metrics.triton_up.set(1)
        pipeline.status.state, pipeline.status.last_error = "running", None
        log.warning("%s: Triton answers again after %.1f s; analysis resumes", cam, time.monotonic() - started)

    async def _wait_for_triton(self, pipeline: CameraPipeline) -> None:
        """Bounded wait for one-shot runs; live runs wait as long as it takes, showing why in readiness."""
        client, metrics = self.parts.client, self.parts.metrics
        if self.once:
            info = await client.wait_ready(self.ready_timeout_s)
        else:
            delay = 1.0
            while not await client.ready():
                pipeline.status.state = "waiting-for-triton"
                metrics.triton_up.set(0)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            assert client.info is not None
            info = client.info
        metrics.triton_up.set(1)
        pipeline.resolve_classes(info.class_names)

    async def supervise(self, camera_id: str) -> None:
        """Run one camera's pipeline; restart it with backoff when it fails (live), stop at the end (files)."""
        fleet = self.fleet
        backoff = RESTART_START_S
        while True:
            pipeline = fleet.pipelines[camera_id]
            try:
                await self._wait_for_triton(pipeline)
                await pipeline.run()
                return
            except asyncio.CancelledError:
                raise
            except StoreSightError as exc:
                pipeline.status.state, pipeline.status.last_error = "failed", str(exc)
                log.error("%s: %s", camera_id, exc)
                # rejected camera credentials are not retried either: cameras lock accounts after a few failures
                if self.once or pipeline.source.is_file or isinstance(exc, ConfigError | CameraAuthError):
                    fleet.fatal = fleet.fatal or exc
                    return
            except Exception as exc:  # a bug must not take the other cameras down: report it, restart
                pipeline.status.state, pipeline.status.last_error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("%s: pipeline crashed", camera_id)
                if self.once:
                    fleet.fatal = fleet.fatal or StoreSightError(f"{camera_id}: pipeline crashed: {exc}")
                    return
            await pipeline.close()
            pipeline.status.state = "restarting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)
            fleet.pipelines[camera_id] = self.new_pipeline(camera_id)
            fleet.pipelines[camera_id].status.last_error = pipeline.status.last_error

    async def monitor_health(self, camera_id: str) -> None:
        """Evaluate one live camera's health every second: metrics, readiness, and the camera_offline incident."""
        cam, metrics, incidents = self.cameras[camera_id], self.parts.metrics, self.parts.incidents
        health = CameraHealth(camera_id, cam.fps, cam.stall_timeout_s, cam.offline_after_s)
        self.fleet.health[camera_id] = health
        states = ("starting", "online", "degraded", "offline")
        while True:
            pipeline = self.fleet.pipelines[camera_id]
            now = time.monotonic()
            snap = health.evaluate(now, pipeline.source.status, pipeline.status.frames)
            for s in states:
                metrics.camera_state.labels(camera=camera_id, state=s).set(1 if s == snap.state else 0)
            metrics.received_fps.labels(camera=camera_id).set(snap.received_fps)
            metrics.analysed_fps.labels(camera=camera_id).set(snap.analysed_fps)
            metrics.advance(metrics.reconnects, camera_id, snap.reconnects, pipeline.source)
            for hit in health.incident_hits(now):
                incident = await incidents.handle(hit, None, None)
                if incident is not None and incident.state == "start":
                    metrics.incidents.labels(camera=camera_id, rule=hit.rule_id).inc()
            await asyncio.sleep(HEALTH_TICK_S)

    async def camera_events(self, camera_id: str) -> None:
        """Keep an events subscription to one camera: every signal updates `fleet.signals[camera_id]`, forwarded
        kinds become incidents. Restarted with backoff if the client crashes; stops for good when the camera rejects
        the login or has no event service (the client's status says which)."""
        cam = self.cameras[camera_id]
        assert cam.onvif is not None and cam.onvif.events is not None and self.make_events is not None
        events = cam.onvif.events
        signals = self.fleet.signals[camera_id] = CameraSignals(camera_id, events.forward, events.severity)
        incidents, metrics = self.parts.incidents, self.parts.metrics

        async def on_signal(signal: CameraSignal) -> None:
            for listener in self.signal_listeners:  # door alarms and access decisions of configured doors
                try:
                    await listener(signal)
                except Exception:  # the camera's other signals go on; the door event is logged as lost
                    log.exception("%s: storing an ONVIF door event failed", camera_id)
            for hit in signals.update(signal):
                frame = None
                pipeline = self.fleet.pipelines.get(camera_id)
                if hit.state == "start" and pipeline is not None and pipeline.last_frame is not None:
                    age = abs((pipeline.last_frame.captured_at - hit.started_at).total_seconds())
                    frame = pipeline.last_frame if age <= SIGNAL_FRAME_MAX_AGE_S else None
                incident = await incidents.handle(hit, frame, None)
                if incident is not None and incident.state == "start":
                    metrics.incidents.labels(camera=camera_id, rule=hit.rule_id).inc()

        backoff = RESTART_START_S
        while True:
            client = self.fleet.events[camera_id] = self.make_events(camera_id, cam.onvif, on_signal)
            try:
                await client.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end camera events silently: report it, restart
                client.crashed(f"{type(exc).__name__}: {exc}")
                log.exception("%s: ONVIF events crashed", camera_id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)
