"""One camera's pipeline: frames -> detector -> tracker -> rules -> incidents."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from plugin.config import CameraConfig, DetectorConfig, PoseConfig
from plugin.errors import ConfigError, InferenceUnavailable, ModelError
from plugin.incidents import IncidentManager
from plugin.inference import InferenceClient
from plugin.insights import InsightsRecorder
from plugin.metrics import Metrics
from plugin.pose import PoseClient
from plugin.presence import PresenceLog
from plugin.rules import Measurement, Observation, Rule, RuleOutput, StaffFilter
from plugin.rules.posture import PoseRule
from plugin.sources import CameraSource
from plugin.tamper import TamperDetector
from plugin.tracking import Tracker
from plugin.types import Detections, FloatArray, Frame
from plugin.zones import PolygonZone

log = logging.getLogger(__name__)


@dataclass
class PipelineStatus:
    """What /readyz, the console and progress show for one camera."""

    state: str = "starting"  # starting | waiting-for-triton | running | finished | failed | restarting
    last_error: str | None = None
    frames: int = 0
    incidents: int = 0
    started_monotonic: float = 0.0
    media_processed_s: float = 0.0


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
        self.tamper: TamperDetector | None = None
        self.presence: PresenceLog | None = None
        self.tracker = Tracker()
        self.staff = StaffFilter(camera.staff_zones)
        self.status = PipelineStatus()
        self.last_frame: Frame | None = None
        # pose: set by the app when a rule of this camera needs keypoints; run only on the tracks those rules name
        self.pose: PoseClient | None = None
        self.pose_config = PoseConfig()
        self.pose_rules: list[PoseRule] = [r for r in self.rules if getattr(r, "needs_pose", False)]  # type: ignore[misc]
        self._pose_error: str | None = None
        for rule in self.pose_rules:
            bind = getattr(rule, "bind_zones", None)
            if bind is not None:
                bind(self.zones)

    def resolve_classes(self, class_names: Sequence[str]) -> None:
        """Map the configured class names to the model's class ids (read from Triton at start)."""
        unknown = [c for c in self.detector.classes if c not in class_names]
        if unknown:
            known = ", ".join(class_names[:8])
            raise ConfigError(f"detector.classes: the model has no class {unknown} (it has {known}, ...)")
        self.class_ids = np.asarray([list(class_names).index(c) for c in self.detector.classes], np.int32)
        self.class_names = tuple(class_names)

    def _filter(self, dets: Detections) -> Detections:
        assert self.class_ids is not None, "resolve_classes() first"
        keep = np.isin(dets.class_ids, self.class_ids) & (dets.scores >= self.detector.min_score)
        return dets[keep]

    async def run(self) -> None:
        """Process frames until the source ends."""
        cam = self.camera.id
        self.status.state = "running"
        self.status.started_monotonic = time.monotonic()
        try:
            async for frame in self.source.frames():
                await self.process(frame)
        finally:
            self.metrics.camera_up.labels(camera=cam).set(0)
        if self.last_frame is not None:
            t_end = self.last_frame.captured_at
            closing = [h for r in self.rules for h in r.finish(t_end)]
            if self.tamper is not None:
                closing.extend(self.tamper.finish(t_end))
            await self._apply(self.last_frame, closing)
        self.status.state = "finished"

    async def process(self, frame: Frame) -> None:
        """One frame through detector, tracker and rules."""
        cam = self.camera.id
        t0 = time.perf_counter()
        dets = (await self.client.detect([frame.image]))[0]
        self.metrics.detect_seconds.labels(camera=cam).observe(time.perf_counter() - t0)
        tracked = self.tracker.update(self._filter(dets), frame.captured_at.timestamp())
        inside = {zid: z.contains(tracked, frame.width, frame.height) for zid, z in self.zones.items()}
        obs = Observation(cam, frame.captured_at, tracked, inside, frame.width, frame.height, self.class_names)
        if self.presence is not None and tracked.track_ids is not None:
            self.presence.record(frame, inside, tracked.track_ids)
        customers = self.staff.customers(obs)  # once per frame, for every rule that excludes staff
        if self.pose_rules:
            keypoints = await self._poses(frame, obs, customers)
            if keypoints:
                same = customers is obs
                obs = replace(obs, keypoints=keypoints)
                customers = obs if same else replace(customers, keypoints=keypoints)
        outputs = [out for r in self.rules for out in r.update(customers if r.rule_config.excludes_staff() else obs)]
        if self.tamper is not None:
            outputs.extend(self.tamper.update(frame))
        self.last_frame = frame
        self.status.frames += 1
        if frame.pts_s is not None:
            self.status.media_processed_s = frame.pts_s
        self.metrics.frames.labels(camera=cam).inc()
        self.metrics.camera_up.labels(camera=cam).set(1)
        self.metrics.people.labels(camera=cam).set(len(tracked))
        self.metrics.frames_dropped.labels(camera=cam).set(self.source.status.frames_dropped)
        if outputs:
            await self._apply(frame, outputs)

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
                if self.insights is not None:
                    self.insights.add(hit)
                if self.presence is not None and hit.track_id is not None:  # a line crossing: kept for fusion
                    self.presence.record_crossing(hit.camera, hit.rule_id, hit.t, hit.metric, hit.track_id)
                continue
            zone = self.zones.get(hit.zone) if hit.zone else None
            incident = await self.incidents.handle(hit, frame if hit.state == "start" else None, zone)
            if incident is not None and incident.state == "start":
                self.status.incidents += 1
                self.metrics.incidents.labels(camera=hit.camera, rule=hit.rule_id).inc()

    def media_time(self) -> datetime | None:
        """Capture time of the last processed frame."""
        return None if self.last_frame is None else self.last_frame.captured_at

    async def close(self) -> None:
        """Close the source."""
        await self.source.close()
        await asyncio.sleep(0)
