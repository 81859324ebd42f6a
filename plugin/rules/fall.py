"""Fall: a person seen upright is then seen lying, and stays down for `min_down_s`.

Posture per pose sample, from MoveNet keypoints and the tracker's box:
- upright: the torso (hips' middle to shoulders' middle) within `upright_max_deg` of vertical and the box taller
  than wide (width / height below `lying_min_aspect`);
- lying: the torso at least `lying_min_deg` from vertical and the box at least `lying_min_aspect` wide for its
  height; both must agree, so a person bending over a shelf (torso tilted, box still tall) is not lying;
- anything else (no confident shoulder or hip, in between) is unclear and changes nothing.
A fall is lying that begins within `fall_within_s` of the last upright sample of the same track; the incident opens
once the person has been down `min_down_s` and closes when they are seen upright again or their track is lost.

Trade-offs and limits (validated on constructed keypoint sequences only; no shared clip shows a fall):
- A person lying along the camera's line of sight (feet towards the lens) keeps a vertical, short torso and a tall
  box: it is not recognised. Ceiling-mounted cameras looking straight down make every torso "lying": do not use it
  there. Side and high-corner views, typical in retail, work best.
- The rule needs the track to survive the fall. Detectors trained mostly on upright people (YOLOX on COCO) lose
  lying people more often; a track lost before `min_down_s` fires nothing, and a new track that is born lying is
  not a fall (nobody saw it upright): that also keeps people already sitting or lying on a floor display quiet.
- Sitting down on the floor can pass for a fall when the torso leans far back; `min_down_s` and the box shape keep
  most of these out, not all.
- Pose only runs on at most `pose.max_persons` people per frame; in a crowd a fall outside them is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from plugin.config.base import PathError
from plugin.rules.base import (
    BaseRule,
    Observation,
    RuleContext,
    RuleHit,
    RuleOutput,
)
from plugin.rules.posture import PoseRuleBase, person_rows, torso_angle_deg


class FallRuleConfig(PoseRuleBase):
    """A person goes from upright to lying (torso angle and box shape) and stays down for `min_down_s`."""

    type: Literal["fall"]
    min_down_s: float = Field(default=5.0, ge=0, description="seconds lying before it fires: a quick bend does not")
    upright_max_deg: float = Field(default=30.0, gt=0, lt=90, description="torso within this of vertical = upright")
    lying_min_deg: float = Field(default=60.0, gt=0, lt=90, description="torso at least this far from vertical = lying")
    lying_min_aspect: float = Field(
        default=0.9, gt=0, description="box width / height at least this, as well as the torso angle, = lying"
    )
    fall_within_s: float = Field(
        default=4.0, gt=0, description="lying must begin within this of the last upright sight: a fall, not a nap"
    )
    severity: Literal["info", "warning", "critical"] = "critical"

    @model_validator(mode="after")
    def _angles_ordered(self) -> FallRuleConfig:
        if self.upright_max_deg >= self.lying_min_deg:
            raise PathError("upright_max_deg", "must be below lying_min_deg")
        return self


Box = tuple[float, float, float, float]


@dataclass
class _Track:
    last_seen: datetime
    box: Box
    last_upright: datetime | None = None
    down_since: datetime | None = None
    last_down: datetime | None = None
    angle: float = 0.0
    aspect: float = 0.0
    fired: bool = False


class FallRule(BaseRule):
    """Per-track posture state machine: upright -> lying (within fall_within_s) -> down for min_down_s -> incident."""

    config_model = FallRuleConfig
    needs_pose: ClassVar[bool] = True

    def __init__(self, config: FallRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self._tracks: dict[int, _Track] = {}
        self._cooldown_until: dict[int, datetime] = {}

    def pose_tracks(self, obs: Observation) -> list[int]:
        """Every person: a fall can happen anywhere in view."""
        return [tid for _, tid in person_rows(obs)]

    def posture(self, angle: float | None, box: Box) -> Literal["upright", "lying", "unclear"]:
        """Classify one sample (see the module docstring)."""
        if angle is None:
            return "unclear"
        aspect = (box[2] - box[0]) / max(box[3] - box[1], 1.0)
        if angle <= self.config.upright_max_deg and aspect < self.config.lying_min_aspect:
            return "upright"
        if angle >= self.config.lying_min_deg and aspect >= self.config.lying_min_aspect:
            return "lying"
        return "unclear"

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance every posed person's state; open or close incidents."""
        cfg = self.config
        hits: list[RuleOutput] = []
        for i, tid in person_rows(obs):
            x1, y1, x2, y2 = (float(v) for v in obs.detections.xyxy[i])
            box = (x1, y1, x2, y2)
            st = self._tracks.get(tid)
            if st is None:
                st = self._tracks[tid] = _Track(last_seen=obs.t, box=box)
            st.last_seen, st.box = obs.t, box
            kp = obs.keypoints.get(tid)
            if kp is None:
                continue
            angle = torso_angle_deg(kp, cfg.min_keypoint_score)
            state = self.posture(angle, box)
            if state == "upright":
                if st.fired:
                    hits.append(self._hit("end", tid, st, obs))
                    self._cooldown_until[tid] = obs.t + timedelta(seconds=cfg.cooldown_s)
                st.last_upright, st.down_since, st.last_down, st.fired = obs.t, None, None, False
            elif state == "lying":
                assert angle is not None
                st.angle, st.aspect = angle, (x2 - x1) / max(y2 - y1, 1.0)
                if st.down_since is None:
                    recent = st.last_upright is not None and obs.t - st.last_upright <= timedelta(
                        seconds=cfg.fall_within_s
                    )
                    if not recent:
                        continue
                    st.down_since = obs.t
                st.last_down = obs.t
                down_s = (obs.t - st.down_since).total_seconds()
                if (
                    not st.fired
                    and down_s >= cfg.min_down_s
                    and obs.t >= self._cooldown_until.get(tid, obs.t)
                    and (cfg.schedule is None or cfg.schedule.is_active(obs.t))
                ):
                    st.fired = True
                    hits.append(self._hit("start", tid, st, obs))
        grace = timedelta(seconds=cfg.exit_grace_s)
        for tid, st in list(self._tracks.items()):
            if obs.t - st.last_seen > grace:
                hits.extend(self._drop(tid, st, obs.camera))
        for tid, until in list(self._cooldown_until.items()):
            if obs.t >= until:
                del self._cooldown_until[tid]
        return hits

    def _drop(self, tid: int, st: _Track, camera: str) -> list[RuleOutput]:
        del self._tracks[tid]
        if not st.fired:
            return []
        self._cooldown_until[tid] = st.last_seen + timedelta(seconds=self.config.cooldown_s)
        return [self._hit("end", tid, st, None, camera=camera, at=st.last_seen)]

    def _hit(
        self,
        state: Literal["start", "end"],
        tid: int,
        st: _Track,
        obs: Observation | None,
        camera: str = "",
        at: datetime | None = None,
    ) -> RuleHit:
        assert st.down_since is not None
        when = at if at is not None else obs.t if obs is not None else st.last_seen
        down_until = st.last_down or when
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key=f"{tid}-{st.down_since.timestamp():.3f}",
            state=state,
            camera=obs.camera if obs is not None else camera,
            zone=None,
            track_ids=(tid,),
            started_at=st.down_since,
            at=when,
            severity=self.config.severity,
            facts={
                "track_id": tid,
                "down_s": (down_until - st.down_since).total_seconds(),
                "threshold_s": self.config.min_down_s,
                "torso_deg": st.angle,
                "aspect": st.aspect,
                "got_up": state == "end" and obs is not None,
            },
            box=st.box,
        )

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close open incidents at each person's last sighting."""
        hits: list[RuleOutput] = []
        for tid, st in list(self._tracks.items()):
            hits.extend(self._drop(tid, st, self.config.camera))
        return hits
