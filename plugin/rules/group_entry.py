"""Group entry: several different people enter a zone within a short window (organised retail crime crews)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import Field

from plugin.rules.base import (
    BaseRule,
    Observation,
    RuleBase,
    RuleContext,
    RuleHit,
    RuleOutput,
)


class GroupEntryRuleConfig(RuleBase):
    """`min_people` or more different people enter a zone within `window_s` (a signal of an organised crew)."""

    type: Literal["group_entry"]
    zone: str
    min_people: int = Field(default=3, ge=2)
    window_s: float = Field(default=10.0, gt=0)
    severity: Literal["info", "warning", "critical"] = "critical"


ENTRY_FRAMES = 2  # frames inside before an entry counts: a box flickering over the edge is not an entry


class GroupEntryRule(BaseRule):
    """Keeps the recent entries; fires once per group (then cooldown), with every member's track id."""

    config_model = GroupEntryRuleConfig

    def __init__(self, config: GroupEntryRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone = config.zone
        self._inside_frames: dict[int, int] = {}
        self._entered: set[int] = set()  # each track enters once: re-entries of the same person are not a group
        self._entries: deque[tuple[datetime, int, tuple[float, float, float, float]]] = deque()
        self._quiet_until: datetime | None = None

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Record entries; fire when the window holds enough different people."""
        dets = obs.detections
        mask = obs.inside.get(self.zone, np.zeros(len(dets), bool))
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        seen_inside = set()
        for i in np.flatnonzero(mask):
            tid = int(ids[i])
            seen_inside.add(tid)
            self._inside_frames[tid] = self._inside_frames.get(tid, 0) + 1
            if self._inside_frames[tid] == ENTRY_FRAMES and tid not in self._entered:
                self._entered.add(tid)
                x1, y1, x2, y2 = (float(v) for v in dets.xyxy[i])
                self._entries.append((obs.t, tid, (x1, y1, x2, y2)))
        for tid in list(self._inside_frames):
            if tid not in seen_inside:
                del self._inside_frames[tid]
        window = timedelta(seconds=self.config.window_s)
        while self._entries and obs.t - self._entries[0][0] > window:
            self._entries.popleft()
        if len(self._entries) < self.config.min_people:
            return []
        if self._quiet_until is not None and obs.t < self._quiet_until:
            return []
        if self.config.schedule is not None and not self.config.schedule.is_active(obs.t):
            return []
        members = list(self._entries)
        self._entries.clear()
        self._quiet_until = obs.t + timedelta(seconds=self.config.cooldown_s)
        first, last = members[0][0], members[-1][0]
        facts = {
            "people": len(members),
            "span_s": (last - first).total_seconds(),
            "min_people": self.config.min_people,
            "window_s": self.config.window_s,
        }
        common = {
            "rule_id": self.config.id,
            "type": self.type_key,
            "key": f"group-{first.timestamp():.3f}",
            "camera": obs.camera,
            "zone": self.zone,
            "track_ids": tuple(m[1] for m in members),
            "started_at": first,
            "severity": self.config.severity,
            "facts": facts,
            "box": _union([m[2] for m in members]),
        }
        # an instant event: it opens and closes at once (the start carries the snapshot)
        return [RuleHit(state="start", at=last, **common), RuleHit(state="end", at=last, **common)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Nothing stays open."""
        return []


def _union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The box around all members, for the snapshot."""
    arr = np.asarray(boxes)
    return float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()), float(arr[:, 3].max())
