"""Aggression: two or more people close together while wrists or elbows move fast, sustained for a short time.

For every posed person, the speed of each wrist and elbow relative to their own torso centre is measured between
consecutive pose samples, in person heights per second (a punch or shove reaches about 2-4, a walking arm swing
stays under 1). A pair of people is close when their box centres are at most `max_distance` mean person heights
apart. A close pair where either person moves a limb at `min_limb_speed` or more is a fast sample; an episode of
fast samples (no calm gap over `max_gap_s`) lasting `min_duration_s` with `min_fast_samples` of them opens an
incident for that pair; it closes when the pair has been calm for `max_gap_s`.

Trade-offs and limits (validated on constructed keypoint sequences only; no shared clip shows a fight):
- It sees vigorous arm movement next to someone, not intent: people hugging, high-fiving, handing over goods in a
  hurry, or a child's tantrum next to a parent can fire it; `min_duration_s` and `min_fast_samples` trade missed
  short scuffles against these. Route it to a human, never to an automatic response.
- Speeds need consecutive samples of the same person within 1 s: at the usual 5-10 analysed frames per second a
  fast punch spans one or two samples and can be under-measured; the rule needs sustained movement for that reason.
- Occlusion between people swaps or drops wrists (MoveNet is a single-person model run on each person's crop, and
  the other person's arms are in the crop too); the score threshold drops most of these, not all.
- Three or more people fighting open one incident per close pair.
- Pose only runs on at most `pose.max_persons` people per frame, and only on people with someone else nearby.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from plugin.rules.base import (
    BaseRule,
    Observation,
    RuleContext,
    RuleHit,
    RuleOutput,
)
from plugin.rules.posture import (
    LIMBS,
    Keypoints,
    PoseRuleBase,
    box_centre,
    box_size,
    joint_speeds,
    person_rows,
    relative_joints,
)


class AggressionRuleConfig(PoseRuleBase):
    """Two or more people close together while wrists or elbows move fast, sustained for `min_duration_s`."""

    type: Literal["aggression"]
    zone: str | None = Field(default=None, description="only people in this zone; default the whole view")
    max_distance: float = Field(
        default=1.0, gt=0, description="close: box centres at most this many (mean) person heights apart"
    )
    min_limb_speed: float = Field(
        default=1.5,
        gt=0,
        description="fast: a wrist or elbow moving this many person heights per second relative to its own body "
        "(a punch or shove ~2-4; walking arm swing < 1)",
    )
    min_duration_s: float = Field(default=1.0, ge=0, description="fast movement sustained this long")
    min_fast_samples: int = Field(default=3, ge=1, description="and seen in at least this many analysed frames")
    max_gap_s: float = Field(default=1.0, gt=0, description="a calm spell longer than this ends the episode")
    severity: Literal["info", "warning", "critical"] = "critical"


Box = tuple[float, float, float, float]


@dataclass
class _Sample:
    t: datetime
    limbs: Keypoints


@dataclass
class _Episode:
    first_fast: datetime
    last_fast: datetime
    fast_samples: int
    peak_speed: float
    box: Box
    fired: bool = False


class AggressionRule(BaseRule):
    """Limb speeds per person, closeness per pair, episodes per pair."""

    config_model = AggressionRuleConfig
    needs_pose: ClassVar[bool] = True

    def __init__(self, config: AggressionRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self._last: dict[int, _Sample] = {}
        self._episodes: dict[tuple[int, int], _Episode] = {}
        self._cooldown_until: dict[tuple[int, int], datetime] = {}

    def _people(self, obs: Observation) -> list[tuple[int, int]]:
        rows = person_rows(obs)
        if self.config.zone is None:
            return rows
        mask = obs.inside.get(self.config.zone, np.zeros(len(obs.detections), bool))
        return [(i, tid) for i, tid in rows if mask[i]]

    def _close_pairs(self, obs: Observation, rows: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
        """(row a, track a, row b, track b) of people close enough, a's track id below b's."""
        xy = obs.detections.xyxy
        out = []
        for k, (i, a) in enumerate(rows):
            for j, b in rows[k + 1 :]:
                (ax, ay), (bx, by) = box_centre(xy[i]), box_centre(xy[j])
                scale = (box_size(xy[i]) + box_size(xy[j])) / 2.0
                if math.hypot(ax - bx, ay - by) <= self.config.max_distance * scale:
                    out.append((i, a, j, b) if a < b else (j, b, i, a))
        return out

    def pose_tracks(self, obs: Observation) -> list[int]:
        """People with someone else close by."""
        return sorted({tid for _, a, _, b in self._close_pairs(obs, self._people(obs)) for tid in (a, b)})

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Measure limb speeds, update the episodes of close pairs, open and close incidents."""
        cfg = self.config
        hits: list[RuleOutput] = []
        rows = self._people(obs)
        speed: dict[int, float] = {}
        for i, tid in rows:
            kp = obs.keypoints.get(tid)
            if kp is None:
                continue
            box = obs.detections.xyxy[i]
            limbs = relative_joints(kp, box, LIMBS, cfg.min_keypoint_score)
            prev = self._last.get(tid)
            if prev is not None:
                s = joint_speeds(prev.limbs, limbs, (obs.t - prev.t).total_seconds(), box_size(box))
                if not np.isnan(s).all():
                    speed[tid] = float(np.nanmax(s))
            self._last[tid] = _Sample(obs.t, limbs)
        for i, a, j, b in self._close_pairs(obs, rows):
            fastest = max(speed.get(a, 0.0), speed.get(b, 0.0))
            if fastest < cfg.min_limb_speed:
                continue
            union = _union(obs.detections.xyxy[i], obs.detections.xyxy[j])
            ep = self._episodes.get((a, b))
            if ep is not None and obs.t - ep.last_fast > timedelta(seconds=cfg.max_gap_s):
                hits.extend(self._close((a, b), ep, obs.camera))
                ep = None
            if ep is None:
                ep = self._episodes[(a, b)] = _Episode(obs.t, obs.t, 0, 0.0, union)
            ep.last_fast, ep.box = obs.t, union
            ep.fast_samples += 1
            ep.peak_speed = max(ep.peak_speed, fastest)
            if (
                not ep.fired
                and (obs.t - ep.first_fast).total_seconds() >= cfg.min_duration_s
                and ep.fast_samples >= cfg.min_fast_samples
                and obs.t >= self._cooldown_until.get((a, b), obs.t)
                and (cfg.schedule is None or cfg.schedule.is_active(obs.t))
            ):
                ep.fired = True
                hits.append(self._hit("start", (a, b), ep, obs.camera, obs.t))
        for pair, ep in list(self._episodes.items()):
            if obs.t - ep.last_fast > timedelta(seconds=cfg.max_gap_s):
                hits.extend(self._close(pair, ep, obs.camera))
        for pair, until in list(self._cooldown_until.items()):
            if obs.t >= until:
                del self._cooldown_until[pair]
        stale = timedelta(seconds=max(cfg.exit_grace_s, cfg.max_gap_s) + 1.0)
        for tid, sample in list(self._last.items()):
            if obs.t - sample.t > stale:
                del self._last[tid]
        return hits

    def _close(self, pair: tuple[int, int], ep: _Episode, camera: str) -> list[RuleOutput]:
        del self._episodes[pair]
        if not ep.fired:
            return []
        self._cooldown_until[pair] = ep.last_fast + timedelta(seconds=self.config.cooldown_s)
        return [self._hit("end", pair, ep, camera, ep.last_fast)]

    def _hit(
        self, state: Literal["start", "end"], pair: tuple[int, int], ep: _Episode, camera: str, at: datetime
    ) -> RuleHit:
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key=f"{pair[0]}-{pair[1]}-{ep.first_fast.timestamp():.3f}",
            state=state,
            camera=camera,
            zone=self.config.zone,
            track_ids=pair,
            started_at=ep.first_fast,
            at=at,
            severity=self.config.severity,
            facts={
                "track_ids": f"#{pair[0]} and #{pair[1]}",
                "pair": [pair[0], pair[1]],  # for the explanations in other languages
                "duration_s": (ep.last_fast - ep.first_fast).total_seconds(),
                "fast_samples": ep.fast_samples,
                "peak_speed": round(ep.peak_speed, 1),
                "min_limb_speed": self.config.min_limb_speed,
            },
            box=ep.box,
        )

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close open episodes at their last fast sample."""
        hits: list[RuleOutput] = []
        for pair, ep in list(self._episodes.items()):
            hits.extend(self._close(pair, ep, self.config.camera))
        return hits


def _union(a: Sequence[float], b: Sequence[float]) -> Box:
    return (
        float(min(a[0], b[0])),
        float(min(a[1], b[1])),
        float(max(a[2], b[2])),
        float(max(a[3], b[3])),
    )
