"""What a camera's own analytics report (motion, tamper, line crossing, field, loitering, counting, door and access
events), independent of the protocol that carried it; the per-camera state other stages read (`last_motion_at` for
motion gating); and the incidents for the kinds the config forwards.

An adapter (adapters/onvif_events.py) turns the camera's messages into `CameraSignal`s and hands each to
`CameraSignals.update`, which keeps the state and returns RuleHits for the incident manager, the same way the
camera health monitor raises camera_offline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Literal

from plugin.rules.base import RuleHit
from plugin.types import CameraSignal, CameraSignalKind

MAX_KEYS = 512  # states tracked per camera: a camera has a few rules and sources; a broken one must not grow this

LABELS: Mapping[CameraSignalKind, str] = {
    "motion": "motion",
    "tamper": "tampering",
    "line_crossing": "line crossing",
    "field": "an object in a field",
    "loitering": "loitering",
    "counting": "a count",
    "door_alarm": "a door alarm",
    "access": "an access event",
}


def rule_id(kind: CameraSignalKind) -> str:
    """The incidents' rule id for a forwarded kind: what a VMS shows as the rule (onvif-line-crossing)."""
    return "onvif-" + kind.replace("_", "-")


class CameraSignals:
    """One camera's signal state, and the forwarding of chosen kinds to incidents. Synchronous and pure."""

    def __init__(
        self,
        camera_id: str,
        forward: Collection[CameraSignalKind] = (),
        severity: Literal["info", "warning", "critical"] = "warning",
    ) -> None:
        self.camera_id = camera_id
        self.forward = frozenset(forward)
        self.severity = severity
        self.last_motion_at: datetime | None = None  # the last time the camera said there was motion
        self.counts: Counter[str] = Counter()  # signals seen, by kind
        self.last: dict[str, CameraSignal] = {}  # the latest signal of each kind
        self._active: dict[str, CameraSignal] = {}  # state kinds: key -> the signal that turned it on
        self._open: dict[str, RuleHit] = {}  # forwarded state incidents: key -> the start hit

    @property
    def motion_active(self) -> bool:
        """True while any of the camera's motion sources reports motion."""
        return any(s.kind == "motion" for s in self._active.values())

    def motion_within(self, at: datetime, seconds: float) -> bool:
        """Motion now, or reported within `seconds` before `at`: what a motion gate asks before inference."""
        if self.motion_active:
            return True
        return self.last_motion_at is not None and at - self.last_motion_at <= timedelta(seconds=seconds)

    def active(self, kind: CameraSignalKind | None = None) -> list[CameraSignal]:
        """The state signals now on (of one kind, or all)."""
        return [s for s in self._active.values() if kind is None or s.kind == kind]

    def describe(self) -> dict[str, object]:
        """The state for /readyz."""
        return {
            "motion_active": self.motion_active,
            "last_motion_at": None if self.last_motion_at is None else self.last_motion_at.isoformat(),
            "active": sorted({s.kind for s in self._active.values()}),
            "counts": dict(self.counts),
        }

    def update(self, signal: CameraSignal) -> list[RuleHit]:
        """Record `signal`; the incident starts and ends it causes for forwarded kinds."""
        self.counts[signal.kind] += 1
        self.last[signal.kind] = signal
        if signal.kind == "motion" and signal.active is not False:
            self.last_motion_at = max(signal.at, self.last_motion_at or signal.at)
        if signal.active is None:  # an instant (a crossing, a count, a duress code): nothing stays on
            if signal.kind not in self.forward:
                return []
            return [
                self._hit("start", signal, signal.at, instant=True),
                self._hit("end", signal, signal.at, instant=True),
            ]
        was = self._active.get(signal.key)
        if signal.active and was is None and len(self._active) >= MAX_KEYS:
            return []  # counted above; a camera inventing sources without end gets no more state
        if signal.active:
            if was is None:
                self._active[signal.key] = signal
        elif was is not None:
            del self._active[signal.key]
            if signal.kind == "motion":
                # motion lasted until it was reported over: that is the last moment there was motion
                self.last_motion_at = max(signal.at, self.last_motion_at or signal.at)
        if signal.kind not in self.forward:
            return []
        opened = self._open.get(signal.key)
        if signal.active and opened is None:
            self._open[signal.key] = self._hit("start", signal, signal.at)
            return [self._open[signal.key]]
        if not signal.active and opened is not None:
            del self._open[signal.key]
            return [self._hit("end", signal, opened.started_at, opened_by=opened)]
        return []

    def _hit(
        self,
        state: Literal["start", "end"],
        signal: CameraSignal,
        since: datetime,
        *,
        instant: bool = False,
        opened_by: RuleHit | None = None,
    ) -> RuleHit:
        at = max(signal.at, since)
        facts: dict[str, object] = {
            "label": LABELS[signal.kind],
            "origin": signal.origin or signal.topic,
            "topic": signal.topic,
            "rule": signal.rule,
            "cause": signal.cause,
            "count": None if signal.value is None else f"{signal.value:g}",
            "instant": instant,
            "duration_s": (at - since).total_seconds(),
        }
        if opened_by is not None:
            # the end keeps what the start said about the cause: an "off" message rarely repeats it
            facts["cause"] = opened_by.facts.get("cause")
        return RuleHit(
            rule_id=rule_id(signal.kind),
            type=f"onvif_{signal.kind}",
            key=f"{signal.key}@{signal.at.isoformat()}" if instant else signal.key,
            state=state,
            camera=self.camera_id,
            zone=None,
            track_ids=(),
            started_at=since,
            at=at,
            severity=self.severity,
            facts=facts,
        )
