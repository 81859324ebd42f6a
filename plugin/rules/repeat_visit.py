"""Repeat visit: one continuous track enters a (high-value) zone `min_entries` times within `window_s`.

Within one track only: recognising a person who comes back later needs re-identification, which StoreSight does
not do, and an identity switch starts the count again. An entry counts after `min_inside_s` inside, and a gap
shorter than `exit_grace_s` is not a new entry, so a box flickering over the zone's edge is one entry at most.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

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


class RepeatVisitRuleConfig(CustomerRuleBase):
    """One continuous track enters a (high-value) zone `min_entries` times within `window_s`."""

    type: Literal["repeat_visit"]
    zone: str
    min_entries: int = Field(default=3, ge=2, description="entries within the window that make an incident")
    window_s: float = Field(default=300.0, gt=0)
    min_inside_s: float = Field(
        default=1.0,
        ge=0,
        description="entry debounce: time inside before an entry counts (a box flickering over "
        "the edge never does; a gap shorter than exit_grace_s is not a new entry either)",
    )
    exclude_staff: bool = Field(default=True, description=EXCLUDE_STAFF + " (restocking)")


FORGET_AFTER_S = 30.0  # the tracker drops a track after 1.5 s unseen and never reuses its id


@dataclass
class _Track:
    """One track's current stay in the zone and its recent entries."""

    last_seen: datetime
    entered: datetime | None = None  # the current stay, None when outside
    last_inside: datetime | None = None
    counted: bool = False  # the current stay already counts as an entry
    entries: deque[datetime] = field(default_factory=deque)
    quiet_until: datetime | None = None


class RepeatVisitRule(BaseRule):
    """Counts debounced entries per track; one instant incident when a window holds `min_entries` of them."""

    config_model = RepeatVisitRuleConfig

    def __init__(self, config: RepeatVisitRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone = config.zone
        self._tracks: dict[int, _Track] = {}

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance each visible track's stays; report a track whose entries reach the threshold."""
        cfg = self.config
        dets = obs.detections
        mask = obs.inside.get(self.zone, np.zeros(len(dets), bool))
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        grace = timedelta(seconds=cfg.exit_grace_s)
        window = timedelta(seconds=cfg.window_s)
        hits: list[RuleOutput] = []
        for i, tid in enumerate(ids.tolist()):
            tr = self._tracks.get(tid)
            if tr is None:
                tr = self._tracks[tid] = _Track(last_seen=obs.t)
            tr.last_seen = obs.t
            if not mask[i]:
                continue
            if tr.last_inside is None or obs.t - tr.last_inside > grace:
                tr.entered, tr.counted = obs.t, False  # a new stay
            tr.last_inside = obs.t
            assert tr.entered is not None
            if not tr.counted and (obs.t - tr.entered).total_seconds() >= cfg.min_inside_s:
                tr.counted = True
                tr.entries.append(tr.entered)
            while tr.entries and obs.t - tr.entries[0] > window:
                tr.entries.popleft()
            if len(tr.entries) >= cfg.min_entries and self._may_fire(tr, obs.t):
                box = tuple(float(c) for c in dets.xyxy[i])
                hits.extend(self._report(tid, tr, obs, box))  # type: ignore[arg-type]
        for tid, tr in list(self._tracks.items()):
            if (obs.t - tr.last_seen).total_seconds() > FORGET_AFTER_S:
                del self._tracks[tid]
        return hits

    def _may_fire(self, tr: _Track, t: datetime) -> bool:
        schedule = self.config.schedule
        cooling = tr.quiet_until is not None and t < tr.quiet_until
        return not cooling and (schedule is None or schedule.is_active(t))

    def _report(
        self, tid: int, tr: _Track, obs: Observation, box: tuple[float, float, float, float]
    ) -> list[RuleOutput]:
        cfg = self.config
        first = tr.entries[0]
        facts: dict[str, Any] = {
            "track_id": tid,
            "entries": len(tr.entries),
            "span_s": (obs.t - first).total_seconds(),
            "min_entries": cfg.min_entries,
            "window_s": cfg.window_s,
        }
        tr.entries.clear()
        tr.quiet_until = obs.t + timedelta(seconds=cfg.cooldown_s)
        common: dict[str, Any] = {
            "rule_id": cfg.id,
            "type": self.type_key,
            "key": f"{tid}-{obs.t.timestamp():.3f}",
            "camera": obs.camera,
            "zone": self.zone,
            "track_ids": (tid,),
            "started_at": first,
            "at": obs.t,
            "severity": cfg.severity,
            "facts": facts,
            "box": box,
        }
        return [RuleHit(state="start", **common), RuleHit(state="end", **common)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Nothing stays open."""
        return []
