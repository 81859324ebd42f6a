"""Camera health: online, degraded or offline, from what the source and the pipeline report; and the
camera_offline incident once a camera has been offline long enough."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from plugin.protocols import SourceStatus
from plugin.rules.base import RuleHit

HealthState = Literal["starting", "online", "degraded", "offline"]
WINDOW_S = 10.0  # rates are measured over this window: long enough to smooth bursts, short enough to react
WARMUP_S = 15.0  # no "degraded" verdict before the stream had a fair chance to settle
DEGRADED_SHARE = 0.5  # analysing less than half the target rate is degraded (the detector cannot keep up)
OFFLINE_RULE_ID = "camera-offline"


@dataclass(frozen=True)
class HealthSnapshot:
    """One evaluation."""

    state: HealthState
    received_fps: float
    analysed_fps: float
    reconnects: int
    last_frame_age_s: float | None
    reason: str | None


class CameraHealth:
    """Samples the source and pipeline counters; decides the state; opens and closes the offline incident."""

    def __init__(self, camera_id: str, target_fps: float, stall_timeout_s: float, offline_after_s: float | None):
        self.camera_id = camera_id
        self.target_fps = target_fps
        self.stall_timeout_s = stall_timeout_s
        self.offline_after_s = offline_after_s
        self._samples: deque[tuple[float, int, int]] = deque()
        self._started: float | None = None
        self._offline_since: tuple[float, datetime] | None = None
        self._open: RuleHit | None = None
        self.snapshot = HealthSnapshot("starting", 0.0, 0.0, 0, None, None)

    def _rates(self, now: float, frames_read: int, analysed: int) -> tuple[float, float]:
        if self._samples and (frames_read < self._samples[-1][1] or analysed < self._samples[-1][2]):
            self._samples.clear()  # the pipeline restarted with fresh counters
        self._samples.append((now, frames_read, analysed))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()
        t0, r0, a0 = self._samples[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (frames_read - r0) / span, (analysed - a0) / span

    def evaluate(self, now: float, status: SourceStatus, analysed: int) -> HealthSnapshot:
        """The state now (monotonic `now`), from the source status and the pipeline's analysed-frame count."""
        if self._started is None:
            self._started = now
        received, analysed_fps = self._rates(now, status.frames_read, analysed)
        age = None if status.last_frame_monotonic is None else now - status.last_frame_monotonic
        state: HealthState
        reason = None
        if not status.connected or (age is not None and age > self.stall_timeout_s):
            state, reason = "offline", status.last_error or "no video"
        elif age is None:
            state = "starting"
        elif now - self._started > WARMUP_S and analysed_fps < DEGRADED_SHARE * self.target_fps:
            state = "degraded"
            reason = f"analysing {analysed_fps:.1f} of {self.target_fps:g} frames/s"
        else:
            state = "online"
        if state == "offline" and now - self._started < 1.0 and not status.last_error:
            state = "starting"  # just started and not yet connected: not an outage
        self.snapshot = HealthSnapshot(state, received, analysed_fps, status.reconnects, age, reason)
        return self.snapshot

    def incident_hits(self, now: float, wall: datetime | None = None) -> list[RuleHit]:
        """Open the offline incident after `offline_after_s` offline; close it when video is back."""
        wall = wall or datetime.now(UTC)
        if self.offline_after_s is None:
            return []
        if self.snapshot.state == "offline":
            if self._offline_since is None:
                self._offline_since = (now, wall)
            since_mono, since_wall = self._offline_since
            if self._open is None and now - since_mono >= self.offline_after_s:
                self._open = self._hit("start", since_wall, wall)
                return [self._open]
            return []
        if self.snapshot.state in ("online", "degraded"):
            self._offline_since = None
            if self._open is not None:
                opened, self._open = self._open, None
                # back since the first frame after the outage: the end is "now" give or take one evaluation tick
                return [self._hit("end", opened.started_at, wall, reason=str(opened.facts["reason"]))]
        return []

    def _hit(self, state: Literal["start", "end"], since: datetime, at: datetime, reason: str | None = None) -> RuleHit:
        why = reason or self.snapshot.reason or "no video"
        return RuleHit(
            rule_id=OFFLINE_RULE_ID,
            type="camera_offline",
            key="offline",
            state=state,
            camera=self.camera_id,
            zone=None,
            track_ids=(),
            started_at=since,
            at=at,
            severity="critical",
            facts={
                "reason": why,
                "offline_s": (at - since) / timedelta(seconds=1),
                "threshold_s": self.offline_after_s,
            },
        )
