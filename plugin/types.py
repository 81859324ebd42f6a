"""The few types that cross a boundary: Frame, Detections, CameraSignal, BusinessEvent, Incident.

The kernel: this module imports nothing from StoreSight."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
ImageArray = npt.NDArray[np.uint8]

SYSTEM_CAMERA = "system"  # the camera of StoreSight's own health incidents: no real camera may take the name


def _require_utc(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded image from a camera, with capture time (UTC wall or media time) and monotonic time."""

    camera_id: str
    seq: int
    captured_at: datetime
    monotonic: float
    image: ImageArray
    # media position in seconds for file sources (PTS); None for live sources
    pts_s: float | None = None

    def __post_init__(self) -> None:
        _require_utc("Frame.captured_at", self.captured_at)
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Frame.image must be uint8 HxWx3, got {self.image.dtype} {self.image.shape}")

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Columnar detections: boxes xyxy (pixels), scores, class ids, optional track ids."""

    xyxy: FloatArray
    scores: FloatArray
    class_ids: IntArray
    track_ids: IntArray | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be ({n},), got {self.scores.shape}")
        if self.class_ids.shape != (n,):
            raise ValueError(f"class_ids must be ({n},), got {self.class_ids.shape}")
        if self.track_ids is not None and self.track_ids.shape != (n,):
            raise ValueError(f"track_ids must be ({n},), got {self.track_ids.shape}")

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: npt.ArrayLike,
        scores: npt.ArrayLike,
        class_ids: npt.ArrayLike,
        track_ids: npt.ArrayLike | None = None,
    ) -> Detections:
        """Build from array-likes, coercing dtypes."""
        return cls(
            xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
            scores=np.asarray(scores, np.float32).reshape(-1),
            class_ids=np.asarray(class_ids, np.int32).reshape(-1),
            track_ids=None if track_ids is None else np.asarray(track_ids, np.int32).reshape(-1),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Detections:
        """Filter with a boolean mask, an index array or a slice."""
        return Detections(
            xyxy=self.xyxy[mask],
            scores=self.scores[mask],
            class_ids=self.class_ids[mask],
            track_ids=None if self.track_ids is None else self.track_ids[mask],
        )

    def with_track_ids(self, track_ids: IntArray) -> Detections:
        """The same detections with track ids attached."""
        return Detections(self.xyxy, self.scores, self.class_ids, np.asarray(track_ids, np.int32))

    def anchors_bottom_center(self) -> FloatArray:
        """Feet points (bottom-centre of each box), shape (N, 2)."""
        x = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2.0
        points: FloatArray = np.stack([x, self.xyxy[:, 3]], axis=1).astype(np.float32)
        return points


@dataclass(frozen=True, slots=True)
class BusinessEvent:
    """A POS, access-control or alarm-panel signal."""

    source: str
    site: str
    time: datetime
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_utc("BusinessEvent.time", self.time)


CameraSignalKind = Literal[
    "motion", "tamper", "line_crossing", "field", "loitering", "counting", "door_alarm", "access"
]
CAMERA_SIGNAL_KINDS: tuple[CameraSignalKind, ...] = (
    "motion", "tamper", "line_crossing", "field", "loitering", "counting", "door_alarm", "access"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CameraSignal:
    """One message from a camera's own analytics, already classified."""

    camera: str
    kind: CameraSignalKind
    at: datetime  # when the camera says it happened (UTC, aware)
    topic: str  # the protocol's name for it, e.g. RuleEngine/LineDetector/Crossed
    key: str  # what tells concurrent reports apart: the topic and the source (rule, video source, door)
    # a state that turns on and off (motion, a field, a door alarm): an incident spans it; None: an instant (a
    # crossing, a count, an access decision), an incident that opens and closes at once
    active: bool | None = None
    initialized: bool = False  # a state reported when the subscription started, not a change
    rule: str | None = None  # the camera's rule name, when it has one
    origin: str = ""  # who reported it, for people: "ONVIF rule Line1", "ONVIF door Door1"
    cause: str | None = None  # e.g. "forced open", "too dark", "granted"
    value: float | None = None  # counting: the count
    source: Mapping[str, str] = field(default_factory=dict)  # the message's source items as sent
    data: Mapping[str, str] = field(default_factory=dict)  # the message's data items as sent

    def __post_init__(self) -> None:
        _require_utc("CameraSignal.at", self.at)


IncidentState = Literal["start", "update", "end"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A rule firing: what, where, when, who (tracks), why (explanation) and evidence."""

    id: str
    rule_id: str
    type: str
    camera: str
    start: datetime
    state: IncidentState
    seq: int
    explanation: str
    end: datetime | None = None
    severity: str = "warning"
    zone: str | None = None
    track_ids: tuple[int, ...] = ()
    snapshot: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    business_events: tuple[BusinessEvent, ...] = ()

    def __post_init__(self) -> None:
        _require_utc("Incident.start", self.start)
        if self.end is not None:
            _require_utc("Incident.end", self.end)

    @staticmethod
    def new_id() -> str:
        """A fresh incident id."""
        return str(uuid.uuid4())

    @property
    def delivery_key(self) -> str:
        """Idempotency key for one state change: incident id, state and sequence."""
        return f"{self.id}:{self.state}:{self.seq}"


# Feedback on an incident, given on the store's console or at head office: the verdict and a reason from a short
# list (the same words in both places, so precision adds up across the chain)
FeedbackVerdict = Literal["confirmed", "false_alarm", "unsure"]
FEEDBACK_VERDICTS: tuple[FeedbackVerdict, ...] = ("confirmed", "false_alarm", "unsure")
FEEDBACK_REASONS: dict[str, str] = {
    "theft_seen": "theft or attempt seen",
    "policy_breach": "policy breach (staff or process)",
    "safety": "safety issue",
    "staff_activity": "staff doing their job",
    "customer_normal": "ordinary customer behaviour",
    "detection_error": "wrong detection (object, shadow, reflection)",
    "camera_problem": "camera view or picture problem",
    "not_visible": "cannot tell from the evidence",
    "other": "other (see comment)",
}
