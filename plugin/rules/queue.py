"""Queue: people waiting in a checkout queue zone, their estimated wait, and "open another lane" incidents.

The wait is estimated from the observed service rate, as a person joining the queue now would experience it:
wait = people queueing / service rate, where the rate is the people who left the queue zone within `rate_window_s`
divided by the time the queue was not empty within that window. Dividing by busy time rather than the whole
window keeps a quiet morning from making the tills look slow: an idle till serves nobody because nobody is there.
Anyone who leaves the zone after queueing counts as served (someone who gives up and walks away too, which makes
the rate a little optimistic). Until somebody has left within the window the rate is unknown, and the wait
reported is a floor: how long the person queueing longest has waited so far (they have waited at least that). An
empty queue waits 0 s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import Field

from plugin.rules.base import (
    EXCLUDE_STAFF,
    BaseRule,
    CustomerRuleBase,
    Measurement,
    Observation,
    RuleContext,
    RuleHit,
    RuleOutput,
)


class QueueRuleConfig(CustomerRuleBase):
    """People in a checkout queue zone and their estimated wait; an incident ("open another lane") while the queue
    is longer than `max_length` or slower than `max_wait_s` for `min_duration_s`."""

    type: Literal["queue"]
    zone: str
    max_length: int | None = Field(default=None, ge=0, description="people; none = no length threshold")
    max_wait_s: float | None = Field(default=None, gt=0, description="estimated wait; none = no wait threshold")
    min_duration_s: float = Field(default=30.0, ge=0, description="how long over a threshold before it fires")
    min_inside_s: float = Field(
        default=2.0, ge=0, description="time in the zone before a person counts as queueing: passers-by do not"
    )
    rate_window_s: float = Field(
        default=600.0,
        gt=0,
        description="service rate = people who left the queue within this window per minute the queue was not "
        "empty; longer is steadier, shorter follows a change of staffing sooner",
    )
    smoothing_frames: int = Field(
        default=5, ge=1, le=100, description="median over this many frames: rides over a missed or doubled box"
    )
    exclude_staff: bool = Field(default=False, description=EXCLUDE_STAFF + " (a cashier inside the queue zone)")


MAX_STEP_S = 5.0  # a longer gap between observations (a stalled camera) is not counted as busy time


@dataclass
class _Waiting:
    """One person's time in the queue zone."""

    entered: datetime
    last_inside: datetime


@dataclass(frozen=True)
class QueueState:
    """The queue at one instant."""

    length: int
    wait_s: float
    basis: str  # "rate": length / service rate; "floor": nobody served in the window yet; "empty"
    rate_per_min: float | None


class QueueRule(BaseRule):
    """Median-smoothed queue length, service rate from departures, wait estimate; incident while over a limit."""

    config_model = QueueRuleConfig

    def __init__(self, config: QueueRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone = config.zone
        self._present: dict[int, _Waiting] = {}
        self._departures: deque[datetime] = deque()
        self._recent: deque[int] = deque(maxlen=config.smoothing_frames)
        self._busy: deque[tuple[datetime, float]] = deque()  # (time, seconds the queue was not empty until then)
        self._busy_s = 0.0
        self._last_t: datetime | None = None
        self._over_since: datetime | None = None
        self._open: RuleHit | None = None
        self._peak: QueueState | None = None
        self._peak_ids: tuple[int, ...] = ()
        self.state = QueueState(0, 0.0, "empty", None)

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Sample the queue; open or close the incident."""
        t = obs.t
        if self._last_t is not None and self.state.length > 0:
            step = min((t - self._last_t).total_seconds(), MAX_STEP_S)
            self._busy.append((t, step))
            self._busy_s += step
        self._last_t = t
        dets = obs.detections
        mask = obs.inside.get(self.zone, np.zeros(len(dets), bool))
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        queueing: list[int] = []
        for i in np.flatnonzero(mask):
            tid = int(ids[i])
            w = self._present.setdefault(tid, _Waiting(entered=t, last_inside=t))
            w.last_inside = t
            if (t - w.entered).total_seconds() >= self.config.min_inside_s:
                queueing.append(tid)
        self._settle_departures(t)
        self._recent.append(len(queueing))
        length = int(np.median(np.asarray(self._recent)))
        self.state = self._estimate(t, length, queueing)
        out: list[RuleOutput] = [
            Measurement(self.config.id, obs.camera, t, "queue_length", float(length), "gauge", self.zone),
            Measurement(self.config.id, obs.camera, t, "queue_wait_s", round(self.state.wait_s, 1), "gauge", self.zone),
        ]
        out.extend(self._threshold(obs.camera, t, tuple(queueing)))
        return out

    def _settle_departures(self, t: datetime) -> None:
        """People gone from the zone for longer than the exit grace left the queue; only queueing ones count."""
        grace = timedelta(seconds=self.config.exit_grace_s)
        for tid, w in list(self._present.items()):
            if t - w.last_inside > grace:
                del self._present[tid]
                if (w.last_inside - w.entered).total_seconds() >= self.config.min_inside_s:
                    self._departures.append(w.last_inside)
        window = timedelta(seconds=self.config.rate_window_s)
        while self._departures and t - self._departures[0] > window:
            self._departures.popleft()
        while self._busy and t - self._busy[0][0] > window:
            self._busy_s -= self._busy.popleft()[1]

    def _estimate(self, t: datetime, length: int, queueing: list[int]) -> QueueState:
        rate = len(self._departures) / self._busy_s if self._departures and self._busy_s > 0 else None
        rate_per_min = None if rate is None else round(rate * 60, 2)
        if length == 0:
            return QueueState(0, 0.0, "empty", rate_per_min)
        if rate is not None:
            return QueueState(length, length / rate, "rate", rate_per_min)
        longest = max(((t - self._present[tid].entered).total_seconds() for tid in queueing), default=0.0)
        return QueueState(length, longest, "floor", None)

    def _threshold(self, camera: str, t: datetime, queueing: tuple[int, ...]) -> list[RuleOutput]:
        s, cfg = self.state, self.config
        too_long = cfg.max_length is not None and s.length > cfg.max_length
        too_slow = cfg.max_wait_s is not None and s.wait_s > cfg.max_wait_s
        if not (too_long or too_slow):
            self._over_since = None
            return self._close(t)
        if self._over_since is None:
            self._over_since, self._peak, self._peak_ids = t, s, queueing
        assert self._peak is not None
        if (s.length, s.wait_s) >= (self._peak.length, self._peak.wait_s):
            self._peak, self._peak_ids = s, queueing
        armed = cfg.schedule is None or cfg.schedule.is_active(t)
        lasted = (t - self._over_since).total_seconds() >= cfg.min_duration_s
        if self._open is None and lasted and armed:
            self._open = self._hit("start", self._over_since, t, camera)
            return [self._open]
        return []

    def _facts(self, start: datetime, end: datetime) -> dict[str, Any]:
        peak = self._peak or self.state
        return {
            "length": peak.length,
            "wait_s": round(peak.wait_s, 1),
            "wait_basis": peak.basis,
            "rate_per_min": peak.rate_per_min,
            "max_length": self.config.max_length,
            "max_wait_s": self.config.max_wait_s,
            "duration_s": (end - start).total_seconds(),
        }

    def _hit(self, state: str, start: datetime, at: datetime, camera: str) -> RuleHit:
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key="queue",
            state=state,  # type: ignore[arg-type]
            camera=camera,
            zone=self.zone,
            track_ids=self._peak_ids,
            started_at=start,
            at=at,
            severity=self.config.severity,
            facts=self._facts(start, at),
        )

    def _close(self, t: datetime) -> list[RuleOutput]:
        if self._open is None:
            return []
        opened, self._open = self._open, None
        return [self._hit("end", opened.started_at, t, opened.camera)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close an open incident at the last observation."""
        return self._close(self._last_t or t)
