"""One camera's pipeline: frames -> detector -> tracker -> rules -> incidents."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from plugin.config.cameras import CameraConfig
from plugin.config.service import DetectorConfig, PoseConfig
from plugin.errors import ConfigError, InferenceUnavailable, ModelError
from plugin.incidents.manager import IncidentManager
from plugin.inference.pose import PoseClient
from plugin.insights.rollups import InsightsRecorder
from plugin.metrics import Metrics
from plugin.pipeline.motion import GateDecision, MotionGate
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.tamper import TamperDetector
from plugin.pipeline.tracking import Tracker, TrackerConfig
from plugin.protocols import CameraSource, InferenceClient
from plugin.rules.base import Measurement, Observation, Rule, RuleOutput
from plugin.rules.staff import StaffFilter
from plugin.rules.zones import PolygonZone
from plugin.types import Detections, FloatArray, Frame

log = logging.getLogger(__name__)

OBJECT_MAX_AGE_S = 5.0  # a still object the detector misses for a few seconds keeps its track (people: 1.5 s)
# a live frame's wall-clock step and monotonic step differ by more than this: the wall clock jumped (an NTP step, an
# operator setting the time). Both stamps are taken together, so outside a jump they differ by microseconds.
CLOCK_JUMP_S = 2.0


class CrossingListener(Protocol):
    """Told of every line crossing (a line_crossing rule's Measurement with its track): store occupancy."""

    async def on_measurement(self, measurement: Measurement, frame: Frame) -> None:
        """Count the crossing."""
        ...


@dataclass
class PipelineStatus:
    """What /readyz, the console and progress show for one camera."""

    state: str = "starting"  # starting | waiting-for-triton | running | finished | failed | restarting
    last_error: str | None = None
    frames: int = 0
    incidents: int = 0
    started_monotonic: float = 0.0
    media_processed_s: float = 0.0
    # motion gating: frames the detector ran on and frames it skipped (frames = detected + skipped), and the time
    # the gate itself took
    frames_detected: int = 0
    frames_skipped: int = 0
    gate_seconds: float = 0.0
    people: int = 0  # confirmed tracked people in the last analysed frame
    # the latest value of each gauge a rule measures (a queue's `queue_length`), by (rule id, metric): live state
    gauges: dict[tuple[str, str], float] = field(default_factory=dict)
    # Triton went away under this camera (live runs wait for it with the pipeline's state kept): how often, how long
    inference_waits: int = 0
    inference_wait_s: float = 0.0
    clock_jumps: int = 0  # live sources: the wall clock stepped (NTP) and the rules started over


class CameraPipeline:
    """Runs until the source ends (files) or is cancelled (live)."""

    def __init__(
        self,
        camera: CameraConfig,
        source: CameraSource,
        client: InferenceClient,
        detector: DetectorConfig,
        rules: Sequence[Rule],
        incidents: IncidentManager,
        metrics: Metrics,
        insights: InsightsRecorder | None = None,
    ) -> None:
        self.camera = camera
        self.source = source
        self.client = client
        self.detector = detector
        self.rules = list(rules)
        self.incidents = incidents
        self.metrics = metrics
        self.zones = {z.id: PolygonZone(z) for z in camera.zones}
        self.class_ids: npt.NDArray[np.int32] | None = None
        self.class_names: tuple[str, ...] = ()
        self.insights = insights
        self.store_occupancy: CrossingListener | None = None  # set by the app: the entrance lines' counts
        self.tamper: TamperDetector | None = None
        self.presence: PresenceLog | None = None
        self.tracker = Tracker()
        # objects a rule watches (blocked_exit): their own tracker, patient with still objects that flicker
        self.object_tracker = Tracker(TrackerConfig(max_age_s=OBJECT_MAX_AGE_S))
        self.object_ids = np.zeros(0, np.int32)
        self._objects = Detections.empty()
        # the app sets gate.signals for cameras with ONVIF events (camera-native motion)
        self.gate = MotionGate(camera, [r.rule_config for r in self.rules])
        self._held = Detections.empty()  # the last tracked detections, what a skipped frame shows the rules
        self._seen = Detections.empty()  # the last detected frame's detections, unconfirmed tracks' included
        self._keypoints: dict[int, FloatArray] = {}  # the last detected frame's poses, likewise
        self.staff = StaffFilter(camera.staff_zones)
        self.status = PipelineStatus()
        self.last_frame: Frame | None = None
        self._processing: asyncio.Future[None] | None = None  # the frame in hand (run() shields it from a cancel)
        self._finished = False
        # pose: set by the app when a rule of this camera needs keypoints; run only on the tracks those rules name
        self.pose: PoseClient | None = None
        self.pose_config = PoseConfig()
        self.pose_rules: list[Rule] = [r for r in self.rules if r.needs_pose]
        self._pose_error: str | None = None
        for rule in self.rules:  # pose rules and blocked_exit look at zone geometry themselves
            rule.bind_zones(self.zones)
        # live runs (set by the supervisor): Triton unavailable mid-frame waits here until it is back, and the frame
        # is tried again, so tracks, rule state and open incidents survive an outage; None: the error stops the camera
        self.wait_for_inference: Callable[[str], Awaitable[None]] | None = None
        # fresh rule instances for this camera (set by the supervisor): a clock jump starts the rules over
        self.fresh_rules: Callable[[], list[Rule]] | None = None

    def resolve_classes(self, class_names: Sequence[str]) -> None:
        """Map the configured class names to the model's class ids (read from Triton at start)."""
        unknown = [c for c in self.detector.classes if c not in class_names]
        if unknown:
            known = ", ".join(class_names[:8])
            raise ConfigError(f"detector.classes: the model has no class {unknown} (it has {known}, ...)")
        self.class_ids = np.asarray([list(class_names).index(c) for c in self.detector.classes], np.int32)
        self.class_names = tuple(class_names)
        self.object_ids = self._object_class_ids(class_names)

    def _object_class_ids(self, class_names: Sequence[str]) -> npt.NDArray[np.int32]:
        """The model's ids of the object classes rules watch (blocked_exit's object_classes), checked like
        detector.classes: a name the model does not have stops the camera with the rule and key named."""
        wanted: set[int] = set()
        for rule in self.rules:
            for k, name in enumerate(rule.object_classes):
                if name not in class_names:
                    known = ", ".join(class_names[:8])
                    raise ConfigError(
                        f"rule {rule.rule_config.id!r}: object_classes[{k}]: the model has no class {name!r} "
                        f"(it has {known}, ...)"
                    )
                wanted.add(list(class_names).index(name))
        return np.asarray(sorted(wanted), np.int32)

    def _filter(self, dets: Detections) -> Detections:
        assert self.class_ids is not None, "resolve_classes() first"
        keep = np.isin(dets.class_ids, self.class_ids) & (dets.scores >= self.detector.min_score)
        return dets[keep]

    def _track_objects(self, dets: Detections, t: float) -> Detections:
        """Tracked detections of the watched object classes, on their own tracker: kept apart from `detections`
        (other rules see only detector.classes) and from the people's ids."""
        if not len(self.object_ids):
            return self._objects
        keep = np.isin(dets.class_ids, self.object_ids) & (dets.scores >= self.detector.min_score)
        return self.object_tracker.update(dets[keep], t)

    async def run(self) -> None:
        """Process frames until the source ends."""
        cam = self.camera.id
        self.status.state = "running"
        self.status.started_monotonic = time.monotonic()
        try:
            async for frame in self.source.frames():
                # shielded: a cancel (shutdown, or the camera's zones replaced) lands between frames, never while a
                # worker thread is inside the rules; `settled()` waits for the frame in hand
                self._processing = asyncio.ensure_future(self.process(frame))
                await asyncio.shield(self._processing)
        finally:
            self.metrics.camera_up.labels(camera=cam).set(0)
        await self.finish()
        self.status.state = "finished"

    async def settled(self) -> None:
        """Wait for the frame being processed when the run was cancelled (its rules are then safe to touch)."""
        if self._processing is not None:
            await asyncio.gather(self._processing, return_exceptions=True)

    async def finish(self) -> None:
        """End what the rules and tamper hold open, at the last analysed frame's time: the footage ended, or this
        pipeline is replaced (its zones or rules changed) and a fresh one starts with fresh rule state."""
        if self.last_frame is None or self._finished:
            return
        self._finished = True
        t_end = self.last_frame.captured_at
        closing = [h for r in self.rules for h in r.finish(t_end)]
        if self.tamper is not None:
            closing.extend(self.tamper.finish(t_end))
        await self._apply(self.last_frame, closing)

    async def process(self, frame: Frame) -> None:
        """One frame through the motion gate, detector, tracker and rules.

        The synchronous per-frame work (the gate's pixel comparison, tracking, zones, rules and tamper, some of it
        OpenCV on whole frames) runs in worker threads, so the event loop only moves data between the sources,
        Triton and the store. One camera's state is never touched by two threads at once: each step is awaited."""
        cam = self.camera.id
        last = self.last_frame
        if last is not None and not self.source.is_file:
            jump = (frame.captured_at - last.captured_at).total_seconds() - (frame.monotonic - last.monotonic)
            if abs(jump) > CLOCK_JUMP_S:
                await self._clock_jumped(last, jump)
        # most frames of a busy view are decided without pixels (moving people): no trip to a worker thread
        decision = self._decide(frame, quick=True)
        if decision is None:
            decision = await asyncio.to_thread(self._decide_with_pixels, frame)
        dets = await self._detect(frame) if decision.detect else None
        if self.pose_rules:  # keypoints come between tracking and the rules: two trips to a worker thread
            obs, customers = await asyncio.to_thread(self._observe, frame, dets)
            if dets is not None:  # a skipped frame shows the same people, unmoved: the last keypoints still hold
                self._keypoints = await self._poses(frame, obs, customers)
            keypoints = self._keypoints
            if keypoints:
                same = customers is obs
                obs = replace(obs, keypoints=keypoints)
                customers = obs if same else replace(customers, keypoints=keypoints)
            outputs = await asyncio.to_thread(self._evaluate, frame, obs, customers)
        else:  # one trip: each costs ~0.1 ms of hand-over
            obs, outputs = await asyncio.to_thread(self._observe_and_evaluate, frame, dets)
        tracked = obs.detections
        if self.presence is not None and tracked.track_ids is not None:
            self.presence.record(frame, obs.inside, tracked.track_ids, tracked.xyxy)
        self.last_frame = frame
        self.status.frames += 1
        if frame.pts_s is not None:
            self.status.media_processed_s = frame.pts_s
        self.metrics.frames.labels(camera=cam).inc()
        self.metrics.camera_up.labels(camera=cam).set(1)
        self.metrics.people.labels(camera=cam).set(len(tracked))
        self.status.people = len(tracked)
        self.metrics.advance(self.metrics.frames_dropped, cam, self.source.status.frames_dropped, self.source)
        if outputs:
            await self._apply(frame, outputs)

    async def _clock_jumped(self, last: Frame, jump_s: float) -> None:
        """The wall clock stepped between two live frames. Rules measure durations on frame times: backward, they
        go negative, and the open incident would never end nor a new one open until the clock caught up; forward,
        the step looks like a gap in which every track is lost. So what is open ends at the last frame before the
        jump (its true time), and the rules, trackers, tamper baseline, motion gate and this camera's presence
        start over, as after a restart; incidents after the jump carry the new (corrected) time."""
        cam = self.camera.id
        log.warning(
            "%s: the wall clock jumped %+.1f s; open incidents end at %s and the rules start over", cam, jump_s,
            last.captured_at.isoformat(),
        )  # fmt: skip
        self.status.clock_jumps += 1
        t_end = last.captured_at
        closing = [h for r in self.rules for h in r.finish(t_end)]
        if self.tamper is not None:
            closing.extend(self.tamper.finish(t_end))
        await self._apply(last, closing)
        if self.fresh_rules is not None:
            self.rules = self.fresh_rules()
            for rule in self.rules:
                rule.bind_zones(self.zones)
            self.pose_rules = [r for r in self.rules if r.needs_pose]
        self.tracker = Tracker()
        self.object_tracker = Tracker(TrackerConfig(max_age_s=OBJECT_MAX_AGE_S))
        self._held, self._seen, self._objects = Detections.empty(), Detections.empty(), Detections.empty()
        self._keypoints = {}
        if self.tamper is not None and self.camera.tamper is not None:
            self.tamper = TamperDetector(cam, self.camera.tamper)
        gate = MotionGate(self.camera, [r.rule_config for r in self.rules])
        gate.signals = self.gate.signals
        self.gate = gate
        if self.presence is not None:
            self.presence.forget(cam)
        self.last_frame = None

    def _decide_with_pixels(self, frame: Frame) -> GateDecision:
        """The pixel comparison, once the quick checks found no reason to detect (worker thread)."""
        decision = self._decide(frame, quick=False)
        assert decision is not None  # only a quick decision can be undecided
        return decision

    def _decide(self, frame: Frame, quick: bool) -> GateDecision | None:
        """The motion gate's verdict on this frame: `quick`, the checks that need no pixel work (on the event loop;
        None when they do not decide), else the pixel comparison (worker thread)."""
        g0 = time.perf_counter()
        track_checks = self.gate.quick_decision
        decision = track_checks(frame, self.tracker.activity) if quick else self.gate.pixel_decision(frame)
        self.status.gate_seconds += time.perf_counter() - g0
        if decision is None:
            return None
        outcome = "detect" if decision.detect else "skip"
        self.metrics.gate_frames.labels(camera=self.camera.id, decision=outcome, reason=decision.reason).inc()
        return decision

    async def _detect(self, frame: Frame) -> Detections:
        while True:
            t0 = time.perf_counter()
            try:
                dets = (await self.client.detect([frame.image]))[0]
            except InferenceUnavailable as exc:
                if self.wait_for_inference is None:
                    raise
                waited = time.monotonic()
                self.status.inference_waits += 1
                await self.wait_for_inference(str(exc))
                self.status.inference_wait_s += time.monotonic() - waited
                continue
            self.metrics.detect_seconds.labels(camera=self.camera.id).observe(time.perf_counter() - t0)
            return dets

    def _observe(self, frame: Frame, dets: Detections | None) -> tuple[Observation, Observation]:
        """Track this frame's detections, or hold the tracks seen last where they were when the gate skipped the
        detector (kept alive, not moved); then zones and the staff filter (worker thread)."""
        t = frame.captured_at.timestamp()
        if dets is None:
            self.tracker.hold(t)
            self.object_tracker.hold(t)
            self.status.frames_skipped += 1
        else:
            self._seen = self._filter(dets)
            self._held = self.tracker.update(self._seen, t)
            self._objects = self._track_objects(dets, t)
            self.gate.detected(frame)
            self.status.frames_detected += 1
        tracked = self._held
        inside = {zid: z.contains(tracked, frame.width, frame.height) for zid, z in self.zones.items()}
        obs = Observation(
            self.camera.id, frame.captured_at, tracked, inside, frame.width, frame.height, self.class_names,
            image=frame.image, objects=self._objects,
        )  # fmt: skip
        return obs, self.staff.customers(obs)  # customers: once per frame, for every rule that excludes staff

    def _observe_and_evaluate(self, frame: Frame, dets: Detections | None) -> tuple[Observation, list[RuleOutput]]:
        obs, customers = self._observe(frame, dets)
        return obs, self._evaluate(frame, obs, customers)

    def _evaluate(self, frame: Frame, obs: Observation, customers: Observation) -> list[RuleOutput]:
        """Every rule on this frame, then tamper (worker thread: rules are synchronous and own their state)."""
        outputs = [out for r in self.rules for out in r.update(customers if r.rule_config.excludes_staff() else obs)]
        if self.tamper is not None:
            outputs.extend(self.tamper.update(frame))
        return outputs

    async def _poses(self, frame: Frame, obs: Observation, customers: Observation) -> dict[int, FloatArray]:
        """Keypoints for the tracks the pose rules ask for: the largest `max_persons` boxes tall enough to pose."""
        if self.pose is None:
            return {}
        wanted: set[int] = set()
        for rule in self.pose_rules:
            wanted.update(rule.pose_tracks(customers if rule.rule_config.excludes_staff() else obs))
        dets = obs.detections
        if not wanted or dets.track_ids is None:
            return {}
        xy = dets.xyxy
        heights = xy[:, 3] - xy[:, 1]
        rows = [
            i
            for i, tid in enumerate(dets.track_ids.tolist())
            if tid in wanted and heights[i] >= self.pose_config.min_box_height_px
        ]
        rows.sort(key=lambda i: -float((xy[i, 2] - xy[i, 0]) * heights[i]))
        rows = rows[: self.pose_config.max_persons]
        if not rows:
            return {}
        try:
            keypoints = await self.pose.estimate(frame.image, xy[rows])
        except (InferenceUnavailable, ModelError) as exc:
            # the detector and the other rules carry on; pose rules see no keypoints until the model answers
            if self._pose_error != str(exc):
                log.warning("%s: pose unavailable, pose rules paused: %s", self.camera.id, exc)
            self._pose_error = str(exc)
            return {}
        if self._pose_error is not None:
            log.info("%s: pose available again", self.camera.id)
            self._pose_error = None
        return {int(dets.track_ids[i]): keypoints[k] for k, i in enumerate(rows)}

    async def _apply(self, frame: Frame, outputs: Sequence[RuleOutput]) -> None:
        for hit in outputs:
            if isinstance(hit, Measurement):
                if hit.kind == "gauge":
                    self.status.gauges[(hit.rule_id, hit.metric)] = hit.value
                if self.insights is not None:
                    self.insights.add(hit)
                if self.presence is not None and hit.track_id is not None:  # a line crossing: kept for fusion
                    self.presence.record_crossing(hit.camera, hit.rule_id, hit.t, hit.metric, hit.track_id)
                if self.store_occupancy is not None and hit.track_id is not None:  # a line crossing: store count
                    await self.store_occupancy.on_measurement(hit, frame)
                continue
            zone = self.zones.get(hit.zone) if hit.zone else None
            opening = hit.state == "start"
            people = self._people(frame) if opening else None
            incident = await self.incidents.handle(hit, frame if opening else None, zone, people=people)
            if incident is not None and incident.state == "start":
                self.status.incidents += 1
                self.metrics.incidents.labels(camera=hit.camera, rule=hit.rule_id).inc()

    def _people(self, frame: Frame) -> list[tuple[float, float, float, float]]:
        """The people's boxes in 0..1 of the frame, tracked or only just detected (what a blurred copy of its
        evidence blurs: someone the tracker has not confirmed yet still has a face)."""
        w, h = float(frame.width), float(frame.height)
        boxes = np.concatenate([self._held.xyxy, self._seen.xyxy]) if len(self._seen) else self._held.xyxy
        return [(float(b[0]) / w, float(b[1]) / h, float(b[2]) / w, float(b[3]) / h) for b in boxes]

    def media_time(self) -> datetime | None:
        """Capture time of the last processed frame."""
        return None if self.last_frame is None else self.last_frame.captured_at

    async def close(self) -> None:
        """Close the source."""
        await self.source.close()
        await asyncio.sleep(0)
