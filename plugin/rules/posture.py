"""Geometry on MoveNet keypoints shared by the pose rules (fall, aggression, shelf_sweep).

Keypoints are float32 [17,3] rows of (x, y, score) in frame pixels (Observation.keypoints). Speeds are measured in
person heights per second (the longer side of the person's box), so the same threshold holds near and far from the
camera; limb speeds are taken relative to the torso's centre, so walking or being jostled by the tracker's box is
not limb movement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from plugin.inference.pose import L_ELBOW, L_HIP, L_SHOULDER, L_WRIST, R_ELBOW, R_HIP, R_SHOULDER, R_WRIST
from plugin.rules.base import Observation, RuleBase

Keypoints = npt.NDArray[np.float32]
LIMBS = (L_WRIST, R_WRIST, L_ELBOW, R_ELBOW)
WRISTS = (L_WRIST, R_WRIST)
TORSO = (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP)
MAX_SAMPLE_GAP_S = 1.0  # two pose samples further apart than this say nothing about speed


_MIN_KP = "keypoints below this MoveNet score are ignored; higher drops more noise and more real joints"


class PoseRuleBase(RuleBase):
    """Fields every pose rule has (the keypoints come from the `pose` model, only for the people a rule needs)."""

    uses_pose: ClassVar[bool] = True

    min_keypoint_score: float = Field(default=0.3, gt=0, lt=1, description=_MIN_KP)


def person_rows(obs: Observation) -> list[tuple[int, int]]:
    """(row, track id) of the people in the observation (every row when the model's class names are unknown)."""
    dets = obs.detections
    if dets.track_ids is None:
        return []
    person = obs.class_names.index("person") if "person" in obs.class_names else None
    return [
        (i, int(tid))
        for i, tid in enumerate(dets.track_ids.tolist())
        if person is None or int(dets.class_ids[i]) == person
    ]


def box_size(box: Sequence[float]) -> float:
    """A person's height in pixels for normalising speeds: the longer side of the box (lying people too)."""
    return max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]), 1.0)


def box_centre(box: Sequence[float]) -> tuple[float, float]:
    """Centre of an x1,y1,x2,y2 box."""
    return (float(box[0]) + float(box[2])) / 2.0, (float(box[1]) + float(box[3])) / 2.0


def _mid(kp: Keypoints, joints: Sequence[int], min_score: float) -> npt.NDArray[np.float32] | None:
    rows = kp[list(joints)]
    ok = rows[:, 2] >= min_score
    if not ok.any():
        return None
    mid: npt.NDArray[np.float32] = rows[ok, :2].mean(axis=0)
    return mid


def torso_angle_deg(kp: Keypoints, min_score: float) -> float | None:
    """Angle between the torso (hips' middle to shoulders' middle) and the vertical: 0 upright, 90 lying; None when
    no shoulder or no hip is confident."""
    shoulders = _mid(kp, (L_SHOULDER, R_SHOULDER), min_score)
    hips = _mid(kp, (L_HIP, R_HIP), min_score)
    if shoulders is None or hips is None:
        return None
    dx, dy = float(shoulders[0] - hips[0]), float(shoulders[1] - hips[1])
    if dx == 0.0 and dy == 0.0:
        return None
    return math.degrees(math.atan2(abs(dx), abs(dy)))


def torso_centre(kp: Keypoints, box: Sequence[float], min_score: float) -> tuple[float, float]:
    """Centre of the confident shoulders and hips, else the box centre."""
    mid = _mid(kp, TORSO, min_score)
    return (float(mid[0]), float(mid[1])) if mid is not None else box_centre(box)


def relative_joints(kp: Keypoints, box: Sequence[float], joints: Sequence[int], min_score: float) -> Keypoints:
    """Rows (dx, dy, score) of `joints` relative to the torso centre; score 0 where below `min_score`."""
    cx, cy = torso_centre(kp, box, min_score)
    rows = kp[list(joints)].copy()
    rows[:, 0] -= cx
    rows[:, 1] -= cy
    rows[rows[:, 2] < min_score, 2] = 0.0
    return rows


def joint_speeds(prev: Keypoints, cur: Keypoints, dt_s: float, height_px: float) -> npt.NDArray[np.float64]:
    """Per-joint speed in person heights per second between two `relative_joints` samples; NaN where either sample
    lacks the joint or the samples are too far apart in time."""
    out = np.full(len(cur), np.nan)
    if dt_s <= 0 or dt_s > MAX_SAMPLE_GAP_S:
        return out
    ok = (prev[:, 2] > 0) & (cur[:, 2] > 0)
    dist = np.hypot(cur[:, 0] - prev[:, 0], cur[:, 1] - prev[:, 1])
    out[ok] = dist[ok] / dt_s / height_px
    return out
