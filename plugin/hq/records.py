"""What a store sends head office: one keyed record per request (an envelope naming the store, the delivery key
and the kind), checked field by field before anything is stored. The bridge's hq sink builds these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from plugin.config.base import ID_PATTERN
from plugin.types import FEEDBACK_REASONS, FEEDBACK_VERDICTS, FeedbackVerdict

RecordKind = Literal["incident", "rollup", "pos", "camera_health", "feedback"]
RECORD_KINDS: tuple[RecordKind, ...] = ("incident", "rollup", "pos", "camera_health", "feedback")
Verdict = FeedbackVerdict
VERDICTS = FEEDBACK_VERDICTS
REASONS = FEEDBACK_REASONS

Name = Annotated[str, Field(min_length=1, max_length=128)]
Key = Annotated[str, Field(min_length=1, max_length=200)]


class _Record(BaseModel):
    """Unknown fields are errors: a store running a newer format is told, not half-understood."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _on_the_hour(v: datetime) -> datetime:
    if (v.minute, v.second, v.microsecond) != (0, 0, 0):
        raise ValueError("must be the start of an hour")
    return v


class Envelope(_Record):
    """The request body: which store, which delivery, what kind, and the record itself."""

    store: str = Field(pattern=ID_PATTERN)
    key: Key
    kind: RecordKind
    data: dict[str, Any]


class IncidentRecord(_Record):
    """One incident state change, as the store's console shows it, with its evidence JPEG (base64)."""

    id: Name
    rule_id: Name
    type: Name
    camera: Name
    zone: Name | None = None
    severity: Literal["info", "warning", "critical"]
    state: Literal["start", "update", "end"]
    seq: int = Field(ge=0)
    start: AwareDatetime
    end: AwareDatetime | None = None
    explanation: str = Field(max_length=4000)
    track_ids: list[int] = Field(default_factory=list, max_length=1000)
    details: dict[str, Any] = Field(default_factory=dict)
    snapshot_jpeg: str | None = Field(default=None, description="base64 of the evidence JPEG")


class RollupRow(_Record):
    """One hour of one series, as the bridge's roll-ups table holds it."""

    camera: Name
    rule_id: Name
    metric: Name
    key: str = Field(max_length=128)
    count: float = 0.0
    total: float = 0.0
    n: int = Field(default=0, ge=0)
    peak: float = 0.0
    last: float = 0.0


class QueueLimit(_Record):
    """A queue rule's thresholds."""

    max_length: int | None = None
    max_wait_s: float | None = None


class RollupRecord(_Record):
    """A finished hour of the store's roll-ups, with the limits and rule settings it ran under."""

    hour: AwareDatetime
    rows: list[RollupRow] = Field(max_length=20000)
    limits: dict[str, QueueLimit] = Field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _hour = field_validator("hour")(_on_the_hour)


class PosRow(_Record):
    """One register (lane) and operator over an hour."""

    lane: Name  # the register
    operator: Name | None = None
    transactions: int = Field(ge=0)
    amount: float
    exceptions: dict[str, int] = Field(default_factory=dict)


class PosRecord(_Record):
    """A finished hour of POS totals and exceptions."""

    hour: AwareDatetime
    rows: list[PosRow] = Field(max_length=5000)

    _hour = field_validator("hour")(_on_the_hour)


class CameraHealthRecord(_Record):
    """A finished hour of camera health: seconds spent in each state, per camera."""

    hour: AwareDatetime
    cameras: dict[str, dict[Literal["starting", "online", "degraded", "offline"], float]] = Field(max_length=1000)

    _hour = field_validator("hour")(_on_the_hour)


class FeedbackRecord(_Record):
    """A verdict given on the store's console, with the incident it judges."""

    incident_id: Name
    verdict: Verdict
    reason: str
    comment: str = Field(default="", max_length=2000)
    by_user: Name
    at: AwareDatetime
    rule_id: Name
    type: Name
    camera: Name
    incident_start: AwareDatetime

    @field_validator("reason")
    @classmethod
    def _known_reason(cls, v: str) -> str:
        if v not in REASONS:
            raise ValueError(f"must be one of {', '.join(REASONS)}")
        return v


MODELS: dict[RecordKind, type[_Record]] = {
    "incident": IncidentRecord,
    "rollup": RollupRecord,
    "pos": PosRecord,
    "camera_health": CameraHealthRecord,
    "feedback": FeedbackRecord,
}
