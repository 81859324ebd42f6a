"""Line crossing: a directional tripwire that counts people in and out, robust to jitter on the line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from plugin.config.base import Point
from plugin.rules.base import (
    BaseRule,
    Measurement,
    Observation,
    RuleBase,
    RuleContext,
    RuleOutput,
)


class LineCrossingRuleConfig(RuleBase):
    """A directional tripwire: counts people crossing a line segment, in and out (the basis of footfall)."""

    type: Literal["line_crossing"]
    line: tuple[Point, Point] = Field(description="two normalised points; the segment, not the infinite line, counts")
    in_side: Literal["left", "right"] = Field(
        default="right",
        description="crossing onto this side of the line, looking from its first point to its second, counts as in",
    )
    min_frames: int = Field(
        default=3, ge=1, le=50, description="frames on the new side before a crossing counts; higher resists jitter"
    )
    anchor: Literal["bottom_center", "center"] = "bottom_center"

    @field_validator("line")
    @classmethod
    def _not_a_point(cls, v: tuple[Point, Point]) -> tuple[Point, Point]:
        if v[0] == v[1]:
            raise ValueError("the two points of a line must differ")
        return v

    def lines(self) -> list[tuple[Point, Point]]:
        """The tripwire."""
        return [self.line]


FORGET_AFTER_S = 10.0  # a track unseen this long is forgotten (its side history is stale)


def _side(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    """> 0 left of a->b, < 0 right of it, in image coordinates (y down), 0 on the line."""
    # image y points down, so the usual cross product's sign is flipped to keep "left" meaning left on screen
    return -((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))


def _segments_intersect(
    p1: tuple[float, float], p2: tuple[float, float], q1: tuple[float, float], q2: tuple[float, float]
) -> bool:
    """Whether segment p1-p2 meets segment q1-q2 (touching counts)."""
    d1, d2 = _side(q1, q2, p1), _side(q1, q2, p2)
    d3, d4 = _side(p1, p2, q1), _side(p1, p2, q2)
    return d1 * d2 <= 0 and d3 * d4 <= 0


@dataclass
class _TrackSide:
    """Where a track stands relative to the line."""

    side: int  # confirmed side: +1 left, -1 right
    anchor: tuple[float, float]  # last point on the confirmed side
    pending_side: int = 0
    pending_frames: int = 0
    pending_from: tuple[float, float] = (0.0, 0.0)  # the last confirmed-side point before switching
    pending_to: tuple[float, float] = (0.0, 0.0)  # the latest point on the new side
    last_seen: datetime | None = None
    class_name: str = ""
    track_id: int = 0


class LineCrossingRule(BaseRule):
    """Counts a crossing once the track has stayed `min_frames` on the new side and its path crossed the segment."""

    config_model = LineCrossingRuleConfig

    def __init__(self, config: LineCrossingRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self._tracks: dict[int, _TrackSide] = {}
        self._lines_px: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._camera: str | None = None
        self.totals = {"in": 0, "out": 0}

    def _line_px(self, width: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
        (x1, y1), (x2, y2) = self.config.line
        return (x1 * (width - 1), y1 * (height - 1)), (x2 * (width - 1), y2 * (height - 1))

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance every visible track's side history; emit a count per confirmed crossing."""
        out: list[RuleOutput] = []
        self._camera = obs.camera
        dets = obs.detections
        if dets.track_ids is None or len(dets) == 0:
            return self._forget(obs.camera, obs.t)
        a, b = self._line_px(obs.width, obs.height)
        xy = dets.xyxy
        if self.config.anchor == "center":
            points = np.stack([(xy[:, 0] + xy[:, 2]) / 2, (xy[:, 1] + xy[:, 3]) / 2], axis=1)
        else:
            points = dets.anchors_bottom_center()
        for i, tid in enumerate(dets.track_ids.tolist()):
            p = (float(points[i, 0]), float(points[i, 1]))
            s = _side(a, b, p)
            if s == 0:
                continue  # on the line: no evidence either way
            side = 1 if s > 0 else -1
            st = self._tracks.get(tid)
            if st is None:
                self._tracks[tid] = _TrackSide(side=side, anchor=p, last_seen=obs.t, track_id=tid)
                continue
            st.last_seen = obs.t
            st.class_name = self._class_name(obs, int(dets.class_ids[i]))
            if side == st.side:
                st.anchor, st.pending_side, st.pending_frames = p, 0, 0
                continue
            if st.pending_side != side:
                st.pending_side, st.pending_frames, st.pending_from = side, 0, st.anchor
            st.pending_frames += 1
            st.pending_to = p
            if st.pending_frames < self.config.min_frames:
                continue
            out.extend(self._confirm(st, obs.camera, obs.t, (a, b)))
        self._lines_px = (a, b)
        out.extend(self._forget(obs.camera, obs.t))
        return out

    def _confirm(
        self, st: _TrackSide, camera: str, t: datetime, line: tuple[tuple[float, float], tuple[float, float]]
    ) -> list[RuleOutput]:
        """The track is on its new side for good: a crossing if its path went through the segment."""
        crossed = _segments_intersect(st.pending_from, st.pending_to, line[0], line[1])
        st.side, st.anchor, st.pending_side, st.pending_frames = st.pending_side, st.pending_to, 0, 0
        if not crossed:
            return []  # went around the end of the segment
        in_sign = -1 if self.config.in_side == "right" else 1
        direction = "in" if st.side == in_sign else "out"
        self.totals[direction] += 1
        return [Measurement(self.config.id, camera, t, direction, 1.0, "count", st.class_name, track_id=st.track_id)]

    @staticmethod
    def _class_name(obs: Observation, class_id: int) -> str:
        names = obs.class_names
        return names[class_id] if 0 <= class_id < len(names) else str(class_id)

    def _forget(self, camera: str, t: datetime, everything: bool = False) -> list[RuleOutput]:
        """Drop tracks unseen for a while. One that vanished on the new side (it walked out of view right after
        crossing, before `min_frames`) still counts: leaving the picture is as final as staying."""
        out: list[RuleOutput] = []
        for tid, st in list(self._tracks.items()):
            stale = st.last_seen is None or (t - st.last_seen).total_seconds() > FORGET_AFTER_S
            if not (stale or everything):
                continue
            if st.pending_side and self._lines_px is not None and st.last_seen is not None:
                out.extend(self._confirm(st, camera, st.last_seen, self._lines_px))
            del self._tracks[tid]
        return out

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """End of stream: settle the tracks still pending on a new side."""
        return self._forget(self._camera or "", t, everything=True)
