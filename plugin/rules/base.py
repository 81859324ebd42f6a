"""What every rule shares: its config base (RuleBase), what rules see (Observation) and say (RuleHit, Measurement),
what they are built with (RuleContext), the implementation base (BaseRule) and the per-track zone presence logic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import Field

from plugin.config.base import ID_PATTERN, Point, ScheduleConfig, Strict, literal_key
from plugin.rules.zones import PolygonZone
from plugin.types import Detections, ImageArray


class RuleBase(Strict):
    """Fields every rule has."""

    type: str = Field(description="the rule's kind: its module's key in plugin/rules/registry.py")
    id: str = Field(pattern=ID_PATTERN)
    camera: str
    severity: Literal["info", "warning", "critical"] = "warning"
    schedule: ScheduleConfig | None = Field(default=None, description="armed only in these hours; default always")
    cooldown_s: float = Field(default=30.0, ge=0, description="quiet time per person after an incident ends")
    exit_grace_s: float = Field(
        default=2.0, ge=0, description="absence tolerated before a person counts as gone; rides over missed detections"
    )

    # a pose rule's keypoints come from the `pose` model, run only on the people such a rule needs
    uses_pose: ClassVar[bool] = False

    def excludes_staff(self) -> bool:
        """Whether this rule sees customers only (tracks that started in one of the camera's `staff_zones` hidden)."""
        return False

    def panel_refs(self) -> list[tuple[str, str]]:
        """(field path, alarm panel id) for every alarm panel this rule follows."""
        return []

    def lines(self) -> list[tuple[Point, Point]]:
        """The line segments this rule watches (motion gating looks near them)."""
        return []

    def zone_refs(self) -> list[tuple[str, str]]:
        """(field path, zone id) for every zone this rule names: `zone`, `*_zone` and `*_zones` fields."""
        refs: list[tuple[str, str]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "zone" or name.endswith("_zone"):
                if isinstance(value, str):
                    refs.append((name, value))
            elif name.endswith("_zones") and isinstance(value, list):
                refs.extend((f"{name}[{k}]", v) for k, v in enumerate(value))
        return refs


EXCLUDE_STAFF = "ignore tracks that started in one of the camera's staff_zones (employees)"


class CustomerRuleBase(RuleBase):
    """A rule that can ignore staff: tracks whose first confirmed sighting was in one of the camera's staff_zones."""

    exclude_staff: bool = Field(default=True, description=EXCLUDE_STAFF)

    def excludes_staff(self) -> bool:
        """Whether this rule sees customers only."""
        return self.exclude_staff


@dataclass(frozen=True)
class Observation:
    """One analysed frame of one camera, as the rules see it."""

    camera: str
    t: datetime
    detections: Detections  # confirmed tracks only, track_ids set
    inside: Mapping[str, npt.NDArray[np.bool_]]  # zone id -> mask over detections
    width: int = 0  # frame size, for rules with their own geometry (lines)
    height: int = 0
    class_names: tuple[str, ...] = ()  # model class names, indexed by detections.class_ids
    # track id -> keypoints float32 [17,3] (x, y, score) in frame pixels, COCO order; only for the tracks that a
    # pose rule asked for this frame (plugin/inference/pose.py), empty without pose rules
    keypoints: Mapping[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    # the analysed frame, for rules that look at pixels (blocked_exit's empty-zone reference); None in unit tests
    image: ImageArray | None = None
    # confirmed tracks of the object classes a rule watches (blocked_exit's object_classes), from their own tracker
    # so an object never takes over a person's id; kept out of `detections`, which only hold detector.classes
    objects: Detections = field(default_factory=Detections.empty)


@dataclass(frozen=True)
class Measurement:
    """A number for insights: a count to add up (a crossing) or a gauge to sample (people in a zone)."""

    rule_id: str
    camera: str
    t: datetime
    metric: str
    value: float
    kind: Literal["count", "gauge"] = "count"
    key: str = ""  # a sub-series, e.g. the class counted
    track_id: int | None = None  # who was counted (a line crossing's track), for fusion; insights ignore it


@dataclass(frozen=True)
class RuleHit:
    """A rule's incident opening or closing; the incident manager turns it into an Incident."""

    rule_id: str
    type: str
    key: str  # stable per incident within the rule (e.g. the track id)
    state: Literal["start", "end"]
    camera: str
    zone: str | None
    track_ids: tuple[int, ...]
    started_at: datetime
    at: datetime
    severity: str
    facts: Mapping[str, Any] = field(default_factory=dict)  # values for the explanation template
    box: tuple[float, float, float, float] | None = None  # for the snapshot


RuleOutput = RuleHit | Measurement


class ArmedStates(Protocol):
    """The alarm panels' armed state, for rules armed by a panel (`armed_by`)."""

    def armed(self, panel: str, at: datetime) -> bool:
        """Whether `panel` was armed at `at` (its last arm/disarm report before then)."""
        ...


@dataclass(frozen=True)
class RuleContext:
    """What a rule may consult besides its observations, handed over when it is built."""

    panels: ArmedStates | None = None  # None: no alarm panels configured


class Rule(Protocol):
    """Pure and synchronous: fed observations in time order, returns what opened or closed."""

    type_key: ClassVar[str]
    needs_pose: ClassVar[bool]
    object_classes: Sequence[str]

    @property
    def rule_config(self) -> RuleBase:
        """The validated config this rule runs with."""
        ...

    def bind_zones(self, zones: Mapping[str, PolygonZone]) -> None:
        """The camera's zone geometry, for rules that look at it themselves."""
        ...

    def pose_tracks(self, obs: Observation) -> list[int]:
        """Track ids this rule wants keypoints for in this frame (pose rules)."""
        ...

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance to `obs.t`."""
        ...

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close every open incident (end of a file, shutdown)."""
        ...


class BaseRule:
    """The implementation base of every rule: its config model (whose `type` literal is the rule's key), the context
    it was built with, and what a rule does not need to say when it has no use for it."""

    config_model: ClassVar[type[RuleBase]]
    type_key: ClassVar[str] = ""
    needs_pose: ClassVar[bool] = False  # True: pose_tracks() names the people to run the pose model on
    object_classes: Sequence[str] = ()  # detector classes other than people that this rule watches

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_model" in cls.__dict__:
            cls.type_key = literal_key(cls.config_model, "type")

    def __init__(self, config: Any, context: RuleContext | None = None) -> None:
        self.config = config
        self.context = context or RuleContext()

    @property
    def rule_config(self) -> RuleBase:
        """The validated config this rule runs with."""
        config: RuleBase = self.config
        return config

    def bind_zones(self, zones: Mapping[str, PolygonZone]) -> None:
        """The camera's zone geometry (the pipeline calls this once); most rules only need `Observation.inside`."""

    def pose_tracks(self, obs: Observation) -> list[int]:
        """No keypoints wanted."""
        return []

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Advance to `obs.t`."""
        raise NotImplementedError

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close every open incident (end of a file, shutdown)."""
        raise NotImplementedError


@dataclass
class Presence:
    """One track's time in a zone."""

    entered: datetime
    last_inside: datetime
    box: tuple[float, float, float, float]
    fired: bool = False


class ZonePresenceRule(BaseRule):
    """Base for rules about people in a zone: entry debounce, exit grace, cooldown, schedule."""

    def __init__(self, config: Any, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone: str = config.zone
        self._present: dict[int, Presence] = {}
        self._cooldown_until: dict[int, datetime] = {}

    def threshold_s(self) -> float:
        """Seconds inside before the incident opens."""
        raise NotImplementedError

    def facts(self, track_id: int, p: Presence, at: datetime) -> dict[str, Any]:
        """Values for this rule's explanation template."""
        return {
            "track_id": track_id,
            "dwell_s": (p.last_inside - p.entered).total_seconds(),
            "threshold_s": self.threshold_s(),
        }

    def _armed(self, t: datetime) -> bool:
        schedule = self.config.schedule
        return schedule is None or bool(schedule.is_active(t))

    def _hit(self, state: Literal["start", "end"], track_id: int, p: Presence, at: datetime) -> RuleHit:
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key=str(track_id),
            state=state,
            camera=self.config.camera,
            zone=self.zone,
            track_ids=(track_id,),
            started_at=p.entered,
            at=at,
            severity=self.config.severity,
            facts=self.facts(track_id, p, at),
            box=p.box,
        )

    def update(self, obs: Observation) -> list[RuleHit]:
        """Track entries and exits; open when the threshold is crossed, close after the exit grace."""
        hits: list[RuleHit] = []
        dets = obs.detections
        mask = obs.inside.get(self.zone, np.zeros(len(dets), bool))
        ids = dets.track_ids if dets.track_ids is not None else np.zeros(0, np.int32)
        for i in np.flatnonzero(mask):
            tid = int(ids[i])
            box = tuple(float(v) for v in dets.xyxy[i])
            p = self._present.get(tid)
            if p is None:
                if obs.t < self._cooldown_until.get(tid, obs.t):
                    continue
                p = self._present[tid] = Presence(entered=obs.t, last_inside=obs.t, box=box)  # type: ignore[arg-type]
            p.last_inside = obs.t
            p.box = box  # type: ignore[assignment]
            if not p.fired and (obs.t - p.entered).total_seconds() >= self.threshold_s() and self._armed(obs.t):
                p.fired = True
                hits.append(self._hit("start", tid, p, obs.t))
        grace = timedelta(seconds=self.config.exit_grace_s)
        for tid, p in list(self._present.items()):
            if obs.t - p.last_inside > grace:
                hits.extend(self._leave(tid, p))
        return hits

    def _leave(self, tid: int, p: Presence) -> list[RuleHit]:
        del self._present[tid]
        if not p.fired:
            return []
        self._cooldown_until[tid] = p.last_inside + timedelta(seconds=self.config.cooldown_s)
        return [self._hit("end", tid, p, p.last_inside)]

    def finish(self, t: datetime) -> list[RuleHit]:
        """Close all open incidents at their last sighting."""
        hits: list[RuleHit] = []
        for tid, p in list(self._present.items()):
            hits.extend(self._leave(tid, p))
        return hits
