"""Occupancy: people in a zone over time (a gauge for insights), and an incident while it stays over a limit."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import Field

from plugin.rules.base import (
    BaseRule,
    Measurement,
    Observation,
    RuleBase,
    RuleContext,
    RuleHit,
    RuleOutput,
)


class OccupancyRuleConfig(RuleBase):
    """How many people are in a zone; an incident while more than `max_people` stay for `min_duration_s`."""

    type: Literal["occupancy"]
    zone: str
    max_people: int | None = Field(default=None, ge=0, description="overcrowding threshold; none = only measure")
    min_duration_s: float = Field(default=10.0, ge=0, description="how long over the threshold before it fires")
    smoothing_frames: int = Field(
        default=5, ge=1, le=100, description="median over this many frames: rides over a missed or doubled box"
    )


class OccupancyRule(BaseRule):
    """Median-smoothed count of confirmed tracks whose anchor is in the zone."""

    config_model = OccupancyRuleConfig

    def __init__(self, config: OccupancyRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone = config.zone
        self._recent: deque[int] = deque(maxlen=config.smoothing_frames)
        self._over_since: datetime | None = None
        self._open: RuleHit | None = None
        self._peak = 0
        self._peak_ids: tuple[int, ...] = ()
        self._last_t: datetime | None = None
        self.current = 0

    def _facts(self, people: int, start: datetime, end: datetime) -> dict[str, Any]:
        return {
            "people": people,
            "max_people": self.config.max_people,
            "peak": self._peak,
            "duration_s": (end - start).total_seconds(),
        }

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Sample the count; open or close the overcrowding incident."""
        mask = obs.inside.get(self.zone, np.zeros(len(obs.detections), bool))
        ids = obs.detections.track_ids
        inside_ids = tuple(int(v) for v in ids[mask]) if ids is not None else ()
        self._recent.append(len(inside_ids))
        self.current = int(np.median(np.asarray(self._recent)))
        self._last_t = obs.t
        out: list[RuleOutput] = [
            Measurement(self.config.id, obs.camera, obs.t, "people", float(self.current), "gauge", self.zone)
        ]
        limit = self.config.max_people
        if limit is None:
            return out
        if self.current > limit:
            if self._over_since is None:
                self._over_since, self._peak, self._peak_ids = obs.t, self.current, inside_ids
            if self.current >= self._peak:
                self._peak, self._peak_ids = self.current, inside_ids
            armed = self.config.schedule is None or self.config.schedule.is_active(obs.t)
            lasted = (obs.t - self._over_since).total_seconds() >= self.config.min_duration_s
            if self._open is None and lasted and armed:
                self._open = self._hit("start", self._over_since, obs.t, obs.camera)
                out.append(self._open)
        else:
            out.extend(self._close(obs.t))
            self._over_since = None
        return out

    def _hit(self, state: str, start: datetime, at: datetime, camera: str) -> RuleHit:
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key="crowd",
            state=state,  # type: ignore[arg-type]
            camera=camera,
            zone=self.zone,
            track_ids=self._peak_ids,
            started_at=start,
            at=at,
            severity=self.config.severity,
            facts=self._facts(self.current, start, at),
        )

    def _close(self, t: datetime) -> list[RuleOutput]:
        if self._open is None:
            return []
        opened, self._open = self._open, None
        return [self._hit("end", opened.started_at, t, opened.camera)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close an open overcrowding incident at the last observation."""
        return self._close(self._last_t or t)
