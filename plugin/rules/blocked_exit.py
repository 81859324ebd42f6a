"""Blocked exit: a fire-exit zone obstructed for `min_duration_s` by a person standing still in it, an object the
detector knows left standing in it, or a persistent change against the learned view of the empty zone.

Stationary means the feet barely move: over the last `min_duration_s`, 90 % of the feet positions lie within
`max_motion_px` of their median (a percentile, so one bad box does not break a still person). People walking
through never qualify: they leave the zone, or their feet spread far more. Once a person blocks the exit they keep
blocking it until they leave the zone, so someone shifting their weight does not end and reopen the incident.

Objects of `object_classes` (a chair, a bicycle, a suitcase) pass the same stillness test. They come from their own
tracker (`Observation.objects`, whatever detector.classes says), so an object never takes over a person's id; their
class is the one the detector gave them most often (it flips between chair and bench on one object), and gaps of up
to OBJECT_GAP_S in their detections are ridden over, since detectors lose still objects more often than people.

COCO has no box, pallet or trolley: what the detector cannot name, the empty-zone reference
(plugin/rules/exit_reference.py) sees as a change of `reference.change_share` of the zone's visible pixels. A change
seen without a break longer than `exit_grace_s` for `min_duration_s` is an unrecognised object. Pixels behind a
detection's box do not count, so a person standing in the exit is reported as a person and not as a change too;
when people hide the change for longer than the grace, its clock starts again (a miss rather than a false alarm).

One incident per zone while anything blocks it. Its facts say what: `cause` ("person", a class name, "unrecognised
object"; several joined by ", "; at the end, everything that blocked during the incident), `people`/`who`,
`objects`, `changed_share`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from plugin.config.base import PathError
from plugin.rules.base import (
    BaseRule,
    Observation,
    RuleBase,
    RuleContext,
    RuleHit,
    RuleOutput,
)
from plugin.rules.exit_reference import EmptyZoneReference, ExitReferenceConfig, ReferenceView
from plugin.rules.zones import PolygonZone
from plugin.types import Detections

# COCO classes (the model's names) that obstruct an exit when left standing in it; boxes and trolleys have none.
# Not tv or refrigerator: YOLOX-nano gives those to windows and large flat doors, which is what fire exits are.
BLOCKING_OBJECTS = (
    "bicycle", "motorcycle", "bench", "backpack", "suitcase", "chair", "couch", "potted plant", "dining table",
)  # fmt: skip


class BlockedExitRuleConfig(RuleBase):
    """A fire-exit zone obstructed for `min_duration_s` by a stationary person, a stationary object the detector
    knows (`object_classes`), or a persistent change against the learned empty-zone view (`reference`)."""

    type: Literal["blocked_exit"]
    zone: str
    min_duration_s: float = Field(default=30.0, gt=0, description="how long an obstruction must stay in the zone")
    max_motion_px: float = Field(
        default=10.0,
        gt=0,
        description="stationary: 90% of the feet positions over min_duration_s stay this close "
        "(analysed-frame pixels) to their median; larger tolerates a jittery detector, smaller misses fidgeting people",
    )
    object_classes: list[str] = Field(
        default_factory=lambda: list(BLOCKING_OBJECTS),
        description="model classes that block the exit when they stand still in it (bottom-centre of the box in the "
        "zone), detected whatever detector.classes says; checked against the model's names at start; [] = none",
    )
    reference: ExitReferenceConfig = Field(
        default_factory=ExitReferenceConfig, description="the learned empty-zone view, for objects COCO cannot name"
    )
    severity: Literal["info", "warning", "critical"] = "critical"

    @model_validator(mode="after")
    def _objects_not_people(self) -> BlockedExitRuleConfig:
        seen: set[str] = set()
        for k, name in enumerate(self.object_classes):
            if name == "person":
                raise PathError(f"object_classes[{k}]", "people are always watched; list only object classes")
            if name in seen:
                raise PathError(f"object_classes[{k}]", f"lists {name!r} twice")
            seen.add(name)
        return self


MIN_SAMPLES = 3  # a window with fewer feet positions (a detector that mostly misses the person) proves nothing
STILL_SHARE = 90  # percentile of the distances to the median that must stay within max_motion_px
OBJECT_GAP_S = 5.0  # an object unseen this long (at least exit_grace_s) is gone: still objects flicker in detectors
PERSON = "person"
UNRECOGNISED = "unrecognised object"
Box = tuple[float, float, float, float]


@dataclass
class _Stay:
    """One person's continuous presence in the zone, with their recent feet positions."""

    entered: datetime
    last_inside: datetime
    feet: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t seconds, x, y)
    box: Box = (0.0, 0.0, 0.0, 0.0)
    blocking_since: datetime | None = None
    votes: dict[str, int] = field(default_factory=dict)  # objects: class name -> frames the detector said so

    def label(self) -> str:
        """What it is: a person, or the class the detector named most often."""
        return max(self.votes, key=lambda k: self.votes[k]) if self.votes else PERSON


@dataclass(frozen=True)
class _Blocker:
    """One thing blocking the exit right now."""

    cause: str  # PERSON, a class name or UNRECOGNISED
    since: datetime
    last_seen: datetime
    box: Box
    track_id: int | None = None  # people only: object ids come from another tracker and could collide


class BlockedExitRule(BaseRule):
    """One incident per zone while at least one stationary person or object, or an unexplained change, blocks it."""

    config_model = BlockedExitRuleConfig

    def __init__(self, config: BlockedExitRuleConfig, context: RuleContext | None = None) -> None:
        super().__init__(config, context)
        self.zone = config.zone
        self.object_classes = tuple(config.object_classes)  # the pipeline tracks these for Observation.objects
        self._stays: dict[int, _Stay] = {}
        self._objects: dict[int, _Stay] = {}
        self._open: RuleHit | None = None
        self._causes: list[str] = []  # everything that blocked during the open incident
        self._last_t: datetime | None = None
        self._blocked_until: datetime | None = None  # last sighting of a blocker in the zone
        self._polygon: PolygonZone | None = None
        self._reference: EmptyZoneReference | None = None
        self._change: ReferenceView | None = None  # the latest changed view, while a change lasts
        self._change_since: datetime | None = None
        self._change_seen: datetime | None = None

    def bind_zones(self, zones: Mapping[str, PolygonZone]) -> None:
        """The zone's geometry (the pipeline calls this): objects and the reference need it, people do not."""
        self._polygon = zones.get(self.zone)
        if self._polygon is not None and self.config.reference.enabled:
            self._reference = EmptyZoneReference(self.config.reference, self._polygon)

    def update(self, obs: Observation) -> Sequence[RuleOutput]:
        """Follow people, objects and the zone's view; open when one blocks long enough, close when none is left."""
        cfg = self.config
        self._last_t = obs.t
        dets = obs.detections
        people = obs.inside.get(self.zone, np.zeros(len(dets), bool)) & _person_mask(obs)
        self._follow(self._stays, dets, people, obs.t, ())
        objects = obs.objects
        inside = np.zeros(len(objects), bool)
        if self._polygon is not None and len(objects):
            # another blocked_exit rule on the camera may watch other classes: the pipeline tracks them all
            watched = [k for k, name in enumerate(obs.class_names) if name in self.object_classes]
            inside = self._polygon.contains(objects, obs.width, obs.height) & np.isin(objects.class_ids, watched)
        self._follow(self._objects, objects, inside, obs.t, obs.class_names)
        _forget(self._stays, obs.t, cfg.exit_grace_s)
        _forget(self._objects, obs.t, max(cfg.exit_grace_s, OBJECT_GAP_S))
        self._watch_view(obs)
        blockers = self._blockers()
        if not blockers:
            return self._close(obs.t)
        self._blocked_until = max(b.last_seen for b in blockers)
        if self._open is not None:
            self._causes.extend(b.cause for b in blockers if b.cause not in self._causes)
        armed = cfg.schedule is None or cfg.schedule.is_active(obs.t)
        if self._open is None and armed:
            self._open = self._hit("start", blockers, obs.camera, obs.t)
            self._causes = list(self._open.facts["causes"])
            return [self._open]
        return []

    def _follow(
        self, stays: dict[int, _Stay], dets: Detections, mask: npt.NDArray[np.bool_], t: datetime, names: Sequence[str]
    ) -> None:
        """Record where each tracked thing in the zone stands; mark it blocking once it has stood still long enough."""
        if dets.track_ids is None:
            return
        feet = dets.anchors_bottom_center()
        now = t.timestamp()
        for i in np.flatnonzero(mask):
            tid = int(dets.track_ids[i])
            stay = stays.get(tid)
            if stay is None:
                stay = stays[tid] = _Stay(entered=t, last_inside=t)
            stay.last_inside = t
            stay.box = tuple(float(c) for c in dets.xyxy[i])  # type: ignore[assignment]
            stay.feet.append((now, float(feet[i, 0]), float(feet[i, 1])))
            while stay.feet and now - stay.feet[0][0] > self.config.min_duration_s:
                stay.feet.popleft()
            if names:
                cid = int(dets.class_ids[i])
                name = names[cid] if 0 <= cid < len(names) else str(cid)
                stay.votes[name] = stay.votes.get(name, 0) + 1
            if stay.blocking_since is None and self._still(stay, t):
                stay.blocking_since = t - timedelta(seconds=self.config.min_duration_s)

    def _watch_view(self, obs: Observation) -> None:
        """Compare the zone with its empty view; keep the change's clock while it is seen without a long break."""
        if self._reference is None or obs.image is None:
            return
        boxes = np.concatenate([obs.detections.xyxy, obs.objects.xyxy])
        view = self._reference.update(obs.image, boxes, obs.t)
        grace = timedelta(seconds=self.config.exit_grace_s)
        if view.state == "changed":
            if self._change_seen is None or obs.t - self._change_seen > grace:
                self._change_since = obs.t
            self._change_seen, self._change = obs.t, view
        elif view.state != "occluded" and self._change_seen is not None and obs.t - self._change_seen > grace:
            self._change_since = self._change_seen = self._change = None

    def _blockers(self) -> list[_Blocker]:
        """People first, then objects, then the unexplained change."""
        out = [
            _Blocker(PERSON, s.blocking_since, s.last_inside, s.box, tid)
            for tid, s in sorted(self._stays.items())
            if s.blocking_since is not None
        ]
        out += [
            _Blocker(s.label(), s.blocking_since, s.last_inside, s.box)
            for _, s in sorted(self._objects.items())
            if s.blocking_since is not None
        ]
        since, seen, view = self._change_since, self._change_seen, self._change
        if since is None or seen is None or view is None or view.box is None:
            return out
        if (seen - since).total_seconds() >= self.config.min_duration_s:
            out.append(_Blocker(UNRECOGNISED, since, seen, view.box))
        return out

    def _still(self, stay: _Stay, t: datetime) -> bool:
        """In the zone for the whole window, with feet that stayed put."""
        if (t - stay.entered).total_seconds() < self.config.min_duration_s or len(stay.feet) < MIN_SAMPLES:
            return False
        xy = np.asarray([(x, y) for _, x, y in stay.feet])
        spread = np.hypot(*(xy - np.median(xy, axis=0)).T)
        return bool(np.percentile(spread, STILL_SHARE) <= self.config.max_motion_px)

    def _hit(self, state: str, blockers: list[_Blocker], camera: str, at: datetime) -> RuleHit:
        start = min(b.since for b in blockers)
        ids = tuple(b.track_id for b in blockers if b.track_id is not None)
        objects = [b.cause for b in blockers if b.track_id is None and b.cause != UNRECOGNISED]
        causes = tuple(dict.fromkeys(b.cause for b in blockers))
        change = self._change if UNRECOGNISED in causes else None
        facts: dict[str, Any] = {
            "cause": ", ".join(causes),
            "causes": causes,
            "people": len(ids),
            "who": ", ".join(f"#{tid}" for tid in ids),
            "objects": ", ".join(objects),
            "object_count": len(objects),
            "unrecognised": change is not None,
            "changed_share": 0.0 if change is None else round(change.share, 3),
            "duration_s": (at - start).total_seconds(),
            "threshold_s": self.config.min_duration_s,
        }
        return RuleHit(
            rule_id=self.config.id,
            type=self.type_key,
            key="blocked",
            state=state,  # type: ignore[arg-type]
            camera=camera,
            zone=self.zone,
            track_ids=ids,
            started_at=start,
            at=at,
            severity=self.config.severity,
            facts=facts,
            box=blockers[0].box,
        )

    def _close(self, t: datetime) -> list[RuleOutput]:
        """End the open incident at the last time a blocker was seen in the zone."""
        if self._open is None:
            return []
        opened, self._open = self._open, None
        end = max(opened.at, min(t, self._blocked_until or t))
        causes = tuple(self._causes) or tuple(opened.facts["causes"])
        facts = dict(opened.facts) | {
            "duration_s": (end - opened.started_at).total_seconds(),
            "cause": ", ".join(causes),
            "causes": causes,
        }
        return [replace(opened, state="end", at=end, facts=facts)]

    def finish(self, t: datetime) -> Sequence[RuleOutput]:
        """Close an open incident at the last observation."""
        return self._close(self._last_t or t)


def _person_mask(obs: Observation) -> npt.NDArray[np.bool_]:
    """The people among the detections (all of them when the model's class names are unknown)."""
    dets = obs.detections
    if PERSON not in obs.class_names:
        return np.ones(len(dets), bool)
    mask: npt.NDArray[np.bool_] = dets.class_ids == obs.class_names.index(PERSON)
    return mask


def _forget(stays: dict[int, _Stay], t: datetime, grace_s: float) -> None:
    """Drop what has been out of the zone (or unseen) for longer than grace_s."""
    grace = timedelta(seconds=grace_s)
    for tid, stay in list(stays.items()):
        if t - stay.last_inside > grace:
            del stays[tid]
