"""Shelf sweep: one person makes `min_reaches` fast reach-ins into a shelf zone within `window_s`.

A reach-in is a wrist (either) seen outside the shelf zone in one pose sample and inside it in the next (within
1 s), moving at `min_reach_speed` or more person heights per second relative to the person's torso. Sweeping goods
off a shelf into a bag is many such reaches in a few seconds; browsing is a few slow ones. The incident is an
instant event (opens and closes at once) with the number of reaches; the person is then quiet for `cooldown_s`.
The shelf zone is drawn over the shelf front in the image (where hands go in), not on the floor.

Trade-offs and limits (validated on constructed keypoint sequences only; no shared clip shows a sweep):
- A hand inside a shelf is often hidden: MoveNet then reports the wrist with a low score or guesses it on the arm.
  A reach counts only when the wrist is confident on both sides of the zone edge, so deep, hidden reaches are
  missed and the rule under-counts rather than over-counts. Cameras looking along the aisle see more wrists than
  cameras looking at the shelf from behind the shopper.
- Restocking staff make exactly this movement: the rule excludes staff tracks by default (the camera's
  `staff_zones`), which is only as good as that staff detection.
- A track switch in the middle of a sweep splits the reaches between two ids; neither may reach `min_reaches`.
- Pose runs only on people whose box touches the shelf zone's bounding box, at most `pose.max_persons` per frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from plugin.rules.base import (
    EXCLUDE_STAFF,
    BaseRule,
    CustomerRuleBase,
    Observation,
    RuleContext,
    RuleHit,
    RuleOutput,
)
from plugin.rules.posture import (
    MAX_SAMPLE_GAP_S,
    WRISTS,
    Keypoints,
    PoseRuleBase,
    box_size,
    joint_speeds,
    person_rows,
    relative_joints,
)
from plugin.rules.zones import PolygonZone


class ShelfSweepRuleConfig(PoseRuleBase, CustomerRuleBase):
    """One person makes `min_reaches` fast wrist reach-ins into a shelf zone within `window_s`."""

    type: Literal["shelf_sweep"]
    shelf_zone: str = Field(description="the shelf front as a polygon: a wrist entering it is a reach-in")
    min_reaches: int = Field(default=4, ge=2)
    window_s: float = Field(default=10.0, gt=0)
    min_reach_speed: float = Field(
        default=0.8,
        gt=0,
        description="fast: the wrist entered moving this many person heights per second relative to the body; "
        "browsing hands move slower",
    )
    exclude_staff: bool = Field(default=True, description=EXCLUDE_STAFF + " (restocking)")
    severity: Literal["info", "warning", "critical"] = "critical"


@dataclass
class _Track:
    t: datetime
    wrists: Keypoints  # relative to the torso, for speeds
    inside: list[bool | None]  # per wrist: in the shelf zone, None when not confident
    reaches: deque[tuple[datetime, float]] = field(default_factory=deque)  # (time, speed)
    quiet_until: datetime | None = None


class ShelfSweepRule(BaseRule):
    """Counts fast wrist entries into the shelf zone per track in a sliding window."""

    config_model = ShelfSweepRuleConfig
    needs_pose: ClassVar[bool] = True

    def __init__(self, config: ShelfSweepRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.shelf: PolygonZone | None = None
        self._tracks: dict[int, _Track] = {}

    def bind_zones(self, zones: Mapping[str, PolygonZone]) -> None:
        """The camera's zone geometry (the pipeline calls this once): the shelf zone is tested on wrists."""
        self.shelf = zones[self.config.shelf_zone]

    def pose_tracks(self, obs: Observation) -> list[int]:
        """People whose box touches the shelf zone's bounding box."""
        if self.shelf is None or not obs.width:
            return []
        poly = self.shelf.polygon_px(obs.width, obs.height)
        zx1, zy1 = poly.min(axis=0)
        zx2, zy2 = poly.max(axis=0)
        xy = obs.detections.xyxy
        return [
            tid
            for i, tid in person_rows(obs)
            if xy[i, 0] <= zx2 and xy[i, 2] >= zx1 and xy[i, 1] <= zy2 and xy[i, 3] >= zy1
        ]

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Detect reach-ins; fire when a person's window holds enough of them."""
        cfg = self.config
        hits: list[RuleOutput] = []
        if self.shelf is None or not obs.width:
            return hits
        window = timedelta(seconds=cfg.window_s)
        for i, tid in person_rows(obs):
            kp = obs.keypoints.get(tid)
            if kp is None:
                continue
            box = obs.detections.xyxy[i]
            wrists = relative_joints(kp, box, WRISTS, cfg.min_keypoint_score)
            pts = kp[list(WRISTS), :2].astype(np.float32)
            in_zone = self.shelf.contains_points(pts, obs.width, obs.height)
            inside: list[bool | None] = [bool(in_zone[k]) if wrists[k, 2] > 0 else None for k in range(len(WRISTS))]
            st = self._tracks.get(tid)
            if st is None:
                self._tracks[tid] = _Track(obs.t, wrists, inside)
                continue
            dt = (obs.t - st.t).total_seconds()
            speeds = joint_speeds(st.wrists, wrists, dt, box_size(box))
            for k in range(len(WRISTS)):
                entered = st.inside[k] is False and inside[k] is True
                if entered and not np.isnan(speeds[k]) and speeds[k] >= cfg.min_reach_speed:
                    st.reaches.append((obs.t, float(speeds[k])))
            st.t, st.wrists, st.inside = obs.t, wrists, inside
            while st.reaches and obs.t - st.reaches[0][0] > window:
                st.reaches.popleft()
            if (
                len(st.reaches) >= cfg.min_reaches
                and (st.quiet_until is None or obs.t >= st.quiet_until)
                and (cfg.schedule is None or cfg.schedule.is_active(obs.t))
            ):
                hits.extend(self._fire(tid, st, obs, box))
        stale = timedelta(seconds=max(cfg.window_s, cfg.cooldown_s, MAX_SAMPLE_GAP_S))
        for tid, st in list(self._tracks.items()):
            if obs.t - st.t > stale:
                del self._tracks[tid]
        return hits

    def _fire(self, tid: int, st: _Track, obs: Observation, box: Sequence[float]) -> list[RuleOutput]:
        reaches = list(st.reaches)
        st.reaches.clear()
        st.quiet_until = obs.t + timedelta(seconds=self.config.cooldown_s)
        first, last = reaches[0][0], reaches[-1][0]
        x1, y1, x2, y2 = (float(v) for v in box)
        common = {
            "rule_id": self.config.id,
            "type": self.type_key,
            "key": f"{tid}-{first.timestamp():.3f}",
            "camera": obs.camera,
            "zone": self.config.shelf_zone,
            "track_ids": (tid,),
            "started_at": first,
            "severity": self.config.severity,
            "facts": {
                "track_id": tid,
                "reaches": len(reaches),
                "span_s": (last - first).total_seconds(),
                "min_reaches": self.config.min_reaches,
                "window_s": self.config.window_s,
                "peak_speed": round(max(s for _, s in reaches), 1),
            },
            "box": (x1, y1, x2, y2),
        }
        # an instant event: it opens and closes at once (the start carries the snapshot)
        return [RuleHit(state="start", at=last, **common), RuleHit(state="end", at=last, **common)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Nothing stays open."""
        return []
