"""Blocked exit: a fire-exit zone obstructed by a person standing still in it for `min_duration_s`.

Stationary means the feet barely move: over the last `min_duration_s`, 90 % of the feet positions lie within
`max_motion_px` of their median (a percentile, so one bad box does not break a still person). People walking
through never qualify: they leave the zone, or their feet spread far more. Once a person blocks the exit they keep
blocking it until they leave the zone, so someone shifting their weight does not end and reopen the incident.
Objects (a trolley, boxes) and a learned empty-zone reference are not handled yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from plugin.config import BlockedExitRuleConfig, RuleBase
from plugin.rules.base import Observation, RuleHit, RuleOutput

RULE_KEY = "blocked_exit"
MIN_SAMPLES = 3  # a window with fewer feet positions (a detector that mostly misses the person) proves nothing
STILL_SHARE = 90  # percentile of the distances to the median that must stay within max_motion_px


@dataclass
class _Stay:
    """One person's continuous presence in the zone, with their recent feet positions."""

    entered: datetime
    last_inside: datetime
    feet: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t seconds, x, y)
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    blocking_since: datetime | None = None


class BlockedExitRule:
    """One incident per zone while at least one stationary person blocks it."""

    type_key: ClassVar[str] = RULE_KEY

    def __init__(self, config: BlockedExitRuleConfig) -> None:
        self.config = config
        self.zone = config.zone
        self._stays: dict[int, _Stay] = {}
        self._open: RuleHit | None = None
        self._last_t: datetime | None = None
        self._blocked_until: datetime | None = None  # last sighting of a blocker in the zone

    @property
    def rule_config(self) -> RuleBase:
        """The validated config this rule runs with."""
        return self.config

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Follow the people in the zone; open when one has stood still long enough, close when none is left."""
        cfg = self.config
        self._last_t = obs.t
        dets = obs.detections
        mask = obs.inside.get(self.zone, np.zeros(len(dets), bool))
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        feet = dets.anchors_bottom_center()
        now = obs.t.timestamp()
        for i in np.flatnonzero(mask):
            tid = int(ids[i])
            stay = self._stays.get(tid)
            if stay is None:
                stay = self._stays[tid] = _Stay(entered=obs.t, last_inside=obs.t)
            stay.last_inside = obs.t
            stay.box = tuple(float(c) for c in dets.xyxy[i])  # type: ignore[assignment]
            stay.feet.append((now, float(feet[i, 0]), float(feet[i, 1])))
            while stay.feet and now - stay.feet[0][0] > cfg.min_duration_s:
                stay.feet.popleft()
            if stay.blocking_since is None and self._still(stay, obs.t):
                stay.blocking_since = obs.t - timedelta(seconds=cfg.min_duration_s)
        grace = timedelta(seconds=cfg.exit_grace_s)
        for tid, stay in list(self._stays.items()):
            if obs.t - stay.last_inside > grace:
                del self._stays[tid]
        blockers = {tid: s for tid, s in self._stays.items() if s.blocking_since is not None}
        if not blockers:
            return self._close(obs.t)
        self._blocked_until = max(s.last_inside for s in blockers.values())
        armed = cfg.schedule is None or cfg.schedule.is_active(obs.t)
        if self._open is None and armed:
            self._open = self._hit("start", blockers, obs.camera, obs.t)
            return [self._open]
        return []

    def _still(self, stay: _Stay, t: datetime) -> bool:
        """In the zone for the whole window, with feet that stayed put."""
        if (t - stay.entered).total_seconds() < self.config.min_duration_s or len(stay.feet) < MIN_SAMPLES:
            return False
        xy = np.asarray([(x, y) for _, x, y in stay.feet])
        spread = np.hypot(*(xy - np.median(xy, axis=0)).T)
        return bool(np.percentile(spread, STILL_SHARE) <= self.config.max_motion_px)

    def _hit(self, state: str, blockers: dict[int, _Stay], camera: str, at: datetime) -> RuleHit:
        start = min(s.blocking_since for s in blockers.values() if s.blocking_since is not None)
        ids = tuple(sorted(blockers))
        facts: dict[str, Any] = {
            "people": len(ids),
            "who": ", ".join(f"#{tid}" for tid in ids),
            "duration_s": (at - start).total_seconds(),
            "threshold_s": self.config.min_duration_s,
        }
        first = blockers[ids[0]]
        return RuleHit(
            rule_id=self.config.id,
            type=RULE_KEY,
            key="blocked",
            state=state,  # type: ignore[arg-type]
            camera=camera,
            zone=self.zone,
            track_ids=ids,
            started_at=start,
            at=at,
            severity=self.config.severity,
            facts=facts,
            box=first.box,
        )

    def _close(self, t: datetime) -> list[RuleOutput]:
        """End the open incident at the last time a blocker was seen in the zone."""
        if self._open is None:
            return []
        opened, self._open = self._open, None
        end = max(opened.at, min(t, self._blocked_until or t))
        facts = dict(opened.facts) | {"duration_s": (end - opened.started_at).total_seconds()}
        return [replace(opened, state="end", at=end, facts=facts)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close an open incident at the last observation."""
        return self._close(self._last_t or t)
