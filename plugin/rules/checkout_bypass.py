"""Checkout bypass: a journey rule. A person visits a high-value zone, then reaches the exit zone without passing a
checkout zone in between.

A journey lives as long as its track: when the tracker loses a person and gives them a new id (an identity
switch, an occlusion longer than the tracker's patience), the new id starts with no history, so that journey is
lost and the exit raises nothing. That is the safe direction for an accusation, and the reason this is a signal for
a person to review, never a verdict. A track first seen inside the exit zone is someone coming in: reaching the exit
means walking into it from elsewhere in the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from plugin.config.base import PathError
from plugin.rules.base import (
    EXCLUDE_STAFF,
    BaseRule,
    CustomerRuleBase,
    Observation,
    RuleContext,
    RuleHit,
    RuleOutput,
)


class CheckoutBypassRuleConfig(CustomerRuleBase):
    """A person visits a high-value zone, then reaches the exit without passing a checkout zone in between."""

    type: Literal["checkout_bypass"]
    high_value_zones: list[str] = Field(min_length=1)
    checkout_zones: list[str] = Field(min_length=1)
    exit_zone: str
    min_visit_s: float = Field(
        default=1.0, ge=0, description="time in a high-value zone before it counts as a visit: brushing past does not"
    )
    exclude_staff: bool = Field(default=True, description=EXCLUDE_STAFF)
    severity: Literal["info", "warning", "critical"] = "critical"

    @model_validator(mode="after")
    def _roles_differ(self) -> CheckoutBypassRuleConfig:
        for k, zone in enumerate(self.checkout_zones):
            if zone in self.high_value_zones:
                raise PathError(f"checkout_zones[{k}]", f"{zone!r} is also a high-value zone")
        if self.exit_zone in self.high_value_zones + self.checkout_zones:
            raise PathError("exit_zone", f"{self.exit_zone!r} is also a high-value or checkout zone")
        return self


FORGET_AFTER_S = 30.0  # the tracker drops a track after 1.5 s unseen and never reuses its id


@dataclass
class _Visit:
    """A stay in one high-value zone (gaps up to the exit grace ride over missed detections)."""

    zone: str
    entered: datetime
    last_inside: datetime
    settled: bool = False  # paid for (a checkout was passed during or after it) or already reported


@dataclass
class _Journey:
    """What one track has done so far."""

    last_seen: datetime
    been_outside_exit: bool = False
    visits: dict[str, _Visit] = field(default_factory=dict)
    unpaid: _Visit | None = None  # the latest qualifying high-value visit with no checkout after it
    quiet_until: datetime | None = None


class CheckoutBypassRule(BaseRule):
    """Follows each track's journey through high-value, checkout and exit zones; one instant incident per bypass."""

    config_model = CheckoutBypassRuleConfig

    def __init__(self, config: CheckoutBypassRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self._journeys: dict[int, _Journey] = {}

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance every visible track's journey; report the ones that reach the exit unpaid."""
        cfg = self.config
        dets = obs.detections
        n = len(dets)
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        none = np.zeros(n, bool)
        in_checkout = np.zeros(n, bool)
        for zone in cfg.checkout_zones:
            in_checkout |= obs.inside.get(zone, none)
        in_exit = obs.inside.get(cfg.exit_zone, none)
        high_value = {zone: obs.inside.get(zone, none) for zone in cfg.high_value_zones}
        grace = timedelta(seconds=cfg.exit_grace_s)
        hits: list[RuleOutput] = []
        for i, tid in enumerate(ids.tolist()):
            j = self._journeys.get(tid)
            if j is None:
                j = self._journeys[tid] = _Journey(last_seen=obs.t)
            j.last_seen = obs.t
            if in_checkout[i]:
                j.unpaid = None
                for paid in j.visits.values():
                    paid.settled = True
            for zone, mask in high_value.items():
                if not mask[i]:
                    continue
                v = j.visits.get(zone)
                if v is None or obs.t - v.last_inside > grace:
                    v = j.visits[zone] = _Visit(zone, obs.t, obs.t, settled=bool(in_checkout[i]))
                v.last_inside = obs.t
                if not v.settled and (v.last_inside - v.entered).total_seconds() >= cfg.min_visit_s:
                    j.unpaid = v
            if not in_exit[i]:
                j.been_outside_exit = True
            elif j.been_outside_exit and j.unpaid is not None and self._may_fire(j, obs.t):
                box = tuple(float(c) for c in dets.xyxy[i])
                hits.extend(self._report(tid, j, j.unpaid, obs, box))  # type: ignore[arg-type]
        for tid, j in list(self._journeys.items()):
            if (obs.t - j.last_seen).total_seconds() > FORGET_AFTER_S:
                del self._journeys[tid]
        return hits

    def _may_fire(self, j: _Journey, t: datetime) -> bool:
        schedule = self.config.schedule
        cooling = j.quiet_until is not None and t < j.quiet_until
        return not cooling and (schedule is None or schedule.is_active(t))

    def _report(
        self, tid: int, j: _Journey, visit: _Visit, obs: Observation, box: tuple[float, float, float, float]
    ) -> list[RuleOutput]:
        cfg = self.config
        j.unpaid = None
        for v in j.visits.values():
            v.settled = True  # reported: the same visit never fires twice
        j.quiet_until = obs.t + timedelta(seconds=cfg.cooldown_s)
        facts: dict[str, Any] = {
            "track_id": tid,
            "high_value_zone": visit.zone,
            "visit_start": visit.entered,
            "visit_end": visit.last_inside,
            "visit_s": (visit.last_inside - visit.entered).total_seconds(),
            "exit_zone": cfg.exit_zone,
            "exit_at": obs.t,
            "checkout_zones": ", ".join(cfg.checkout_zones),
            "checkouts": len(cfg.checkout_zones),
        }
        common: dict[str, Any] = {
            "rule_id": cfg.id,
            "type": self.type_key,
            "key": f"{tid}-{obs.t.timestamp():.3f}",
            "camera": obs.camera,
            "zone": cfg.exit_zone,
            "track_ids": (tid,),
            "started_at": visit.entered,
            "at": obs.t,
            "severity": cfg.severity,
            "facts": facts,
            "box": box,
        }
        # an instant event: it opens and closes at once (the start carries the snapshot at the exit)
        return [RuleHit(state="start", **common), RuleHit(state="end", **common)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Nothing stays open; journeys unfinished at the end of the stream raise nothing."""
        return []
