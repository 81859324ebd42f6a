"""StoreSight configuration: strict pydantic models loaded from YAML, errors that name the exact bad key."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from plugin.access_config import AccessConfig
from plugin.errors import ConfigError
from plugin.pos_config import PosConfig

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(Strict):
    """Where incidents, the outbox and evidence live."""

    path: Path = Field(default=Path("./storesight-data"), description="directory for the SQLite file and evidence")
    min_free_mb: float = Field(
        default=1024.0,
        ge=0,
        description="less free space than this (MiB) on the storage's file system raises system_storage_low; 0: off",
    )
    min_free_percent: float = Field(
        default=0.0, ge=0, lt=100, description="also raise it below this share of the file system free; 0: off"
    )


class SystemHealthConfig(Strict):
    """StoreSight's own health (inference, sinks, storage), raised as system_* incidents so the VMS shows it."""

    enabled: bool = Field(default=True, description="check and raise system incidents (never in `run --once`)")
    interval_s: float = Field(default=5.0, gt=0, le=300, description="how often the checks run")
    debounce_s: float = Field(
        default=15.0,
        ge=0,
        le=3600,
        description="a condition must last this long to open, and be gone this long to end: longer rides over a "
        "Triton restart or a brief blip, shorter tells operators sooner",
    )


class OutboxConfig(Strict):
    """How deliveries to sinks are retried."""

    max_attempts: int = Field(default=50, ge=1, description="then dead-letter; ~3 h with the default backoff")
    backoff_start_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0, description="a VMS down for hours hears again within this")
    auth_retry_s: float = Field(default=600.0, gt=0, description="rejected credentials are retried this slowly")
    timeout_s: float = Field(default=60.0, gt=0, description="one delivery attempt, connect included")


class SiteConfig(Strict):
    """The store this bridge serves."""

    id: str = Field(default="store", pattern=_ID)
    name: str | None = None
    timezone: str = Field(default="UTC", description="local time for explanations and the console")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)


class TritonConfig(Strict):
    """The inference server: an external one by URL, or the embedded one when `url` is empty."""

    url: str | None = Field(default=None, description="grpc://host:8001 or http://host:8000; empty = embedded")
    model: str = Field(default="yolox_nano", description="detector model name in the Triton repository")
    model_repository: Path | None = Field(default=None, description="embedded server only; default: triton_models/cpu")
    ready_timeout_s: float = Field(default=60.0, gt=0, description="how long one-shot commands wait for readiness")
    request_timeout_s: float = Field(default=10.0, gt=0)
    shared_memory: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="send frames through system shared memory instead of the socket: auto = when Triton is on this "
        "host (embedded, or a 127.0.0.1/localhost URL); on = try with any URL; a server that cannot map the region "
        "(another host or container) falls back to the wire, logged once",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(grpc|http|https)://[^/\s]+$", v):
            raise ValueError("must look like grpc://host:port or http(s)://host:port")
        return v


class DetectorConfig(Strict):
    """What the bridge keeps from the model's output."""

    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    min_score: float = Field(default=0.35, ge=0, le=1, description="lower keeps faint people, raises false alarms")


class PoseConfig(Strict):
    """The pose model, run only on the person boxes that a pose rule (fall, aggression, shelf_sweep) needs."""

    model: str = Field(default="movenet", description="pose model name in the Triton repository")
    max_persons: int = Field(
        default=4, ge=1, le=64, description="at most this many people per frame (the largest boxes first); each costs "
        "one crop through the pose model"
    )  # fmt: skip
    min_box_height_px: float = Field(
        default=48.0, ge=0, description="smaller people are skipped: MoveNet finds no reliable joints in them"
    )


class WebConfig(Strict):
    """The console and API listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: str | None = Field(default=None, min_length=16, description="bearer token for /api; default: generated")


Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class ZoneConfig(Strict):
    """A polygon in normalised image coordinates (0..1), so main and sub streams share it."""

    id: str = Field(pattern=_ID)
    polygon: list[Point] = Field(min_length=3)
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center", description="which point of a person must be inside: the feet by default"
    )


CameraSignalKind = Literal[
    "motion", "tamper", "line_crossing", "field", "loitering", "counting", "door_alarm", "access"
]
CAMERA_SIGNAL_KINDS: tuple[CameraSignalKind, ...] = (
    "motion", "tamper", "line_crossing", "field", "loitering", "counting", "door_alarm", "access"
)  # fmt: skip


class OnvifEventsConfig(Strict):
    """The camera's own analytics (ONVIF events over a PullPoint subscription) as StoreSight signals."""

    enabled: bool = Field(default=True, description="subscribe to the camera's events (the section alone turns it on)")
    forward: list[CameraSignalKind] = Field(
        default_factory=list,
        description="signal kinds raised as incidents (type onvif_<kind>); the others only update the camera's "
        "state (motion, for gating)",
    )
    severity: Literal["info", "warning", "critical"] = Field(default="warning", description="of forwarded incidents")

    @field_validator("forward")
    @classmethod
    def _unique_kinds(cls, v: list[CameraSignalKind]) -> list[CameraSignalKind]:
        if len(set(v)) != len(v):
            raise ValueError("lists a kind twice")
        return v


class OnvifConfig(Strict):
    """An ONVIF camera: the bridge asks it for its stream URIs instead of being given one."""

    host: str = Field(min_length=1, description="camera address or host name, without http:// or a path")
    port: int = Field(default=80, ge=1, le=65535, description="HTTP port of the ONVIF device service")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, description="never logged; use ${VAR} to keep it out of the file")
    profile: str | None = Field(
        default=None,
        min_length=1,
        description="token of the profile to analyse; default: the smallest stream at least 320 pixels wide",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="for the whole probe; a slow link or busy NVR needs more")
    events: OnvifEventsConfig | None = Field(
        default=None, description="the camera's own motion, tamper, line, field, counting and door events"
    )

    @field_validator("host")
    @classmethod
    def _bare_host(cls, v: str) -> str:
        if "/" in v or any(c.isspace() for c in v):
            raise ValueError(f"{v!r} is not a host: give the address alone (port goes in port)")
        return v

    @model_validator(mode="after")
    def _password_needs_username(self) -> OnvifConfig:
        if self.password is not None and self.username is None:
            raise _PathError("password", "set without username")
        return self


class TamperConfig(Strict):
    """Camera tamper: the view covered, defocused or moved, judged against a reference learned at start."""

    learn_s: float = Field(default=20.0, gt=0, description="seconds of normal video that make the reference")
    min_duration_s: float = Field(default=10.0, ge=0, description="how long it must last; shorter is a passer-by")
    covered_contrast: float = Field(
        default=0.25, gt=0, lt=1, description="covered when contrast falls below this share of the reference's"
    )
    defocus_sharpness: float = Field(
        default=0.2, gt=0, lt=1, description="defocused when sharpness falls below this share of the reference"
    )
    moved_similarity: float = Field(
        default=0.8, gt=0, lt=1, description="moved when fewer of the scene's fixed edges than this share remain"
    )
    severity: Literal["info", "warning", "critical"] = "critical"


class MotionGatingConfig(Strict):
    """Skip detection on frames where nothing moves in the analysed area; tracks are kept, rules still run."""

    enabled: bool = Field(
        default=True,
        description="on by default: a frame is skipped only when nothing changed in the zones since the last "
        "detection and no tracked person moves, and max_skip_s bounds the wait; off: every analysed frame is detected",
    )
    source: Literal["pixels", "camera", "both"] = Field(
        default="pixels",
        description="what counts as motion: pixel change in the zones (and line neighbourhoods; the whole view when "
        "a rule has no zone), the camera's own motion events (needs onvif.events), or either",
    )
    max_skip_s: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="detect at least this often in a still scene; longer saves more, a person the gate misses is "
        "seen this much later",
    )
    pixel_threshold: int = Field(
        default=15, ge=1, le=255, description="grey-level change (0-255, blurred 160 px copy) that counts a pixel as "
        "changed; lower sees fainter motion and more sensor noise"
    )  # fmt: skip
    min_changed_share: float = Field(
        default=0.0005,
        gt=0,
        le=1,
        description="motion when at least this share of the frame's pixels changed inside the analysed area "
        "(0.0005: 7 pixels of a 160x90 copy); higher ignores small movements",
    )
    min_track_speed: float = Field(
        default=0.1,
        ge=0,
        description="a confirmed track faster than this (person heights per second) keeps detection on; walking "
        "is ~0.5-1, a person standing still reads ~0",
    )
    zone_margin: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="zones and lines are widened by this share of the frame width, so people are tracked before "
        "their feet reach them",
    )
    camera_hold_s: float = Field(
        default=2.0, ge=0, le=60, description="camera source: keep detecting this long after the camera last "
        "reported motion (its events arrive late and end early)"
    )  # fmt: skip


SYSTEM_CAMERA = "system"  # the camera of StoreSight's own health incidents: no real camera may take the name


class CameraConfig(Strict):
    """One camera: a source URL or file, or an ONVIF device; its zones and how often to analyse it."""

    id: str = Field(pattern=_ID)
    source: str | None = Field(default=None, min_length=1, description="rtsp://..., a file path or file:// URL")
    onvif: OnvifConfig | None = Field(default=None, description="instead of source: ask the camera for its stream")
    name: str | None = None
    enabled: bool = True
    fps: float = Field(default=5.0, gt=0, le=60, description="analysed frames per second; more costs detector time")
    realtime: bool = Field(default=False, description="files only: pace at media speed instead of as fast as possible")
    start_time: datetime | None = Field(default=None, description="files only: wall time of the first frame")
    zones: list[ZoneConfig] = Field(default_factory=list)
    stall_timeout_s: float = Field(default=8.0, gt=0, le=120, description="no frame this long: reconnect")
    offline_after_s: float | None = Field(
        default=60.0, gt=0, description="offline this long raises a camera_offline incident; none: never"
    )
    tamper: TamperConfig | None = Field(default=None, description="raise camera_tamper incidents (off by default)")
    staff_zones: list[str] = Field(
        default_factory=list,
        description="zones of this camera where only staff appear first (stockroom door, behind the till): a track "
        "whose first confirmed sighting is in one is staff, and rules with exclude_staff ignore it",
    )
    motion_gating: MotionGatingConfig = Field(
        default_factory=MotionGatingConfig, description="skip detection on frames without motion (on by default)"
    )

    @field_validator("start_time")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must include a UTC offset, e.g. 2026-11-29T14:00:00+00:00")
        return v

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == SYSTEM_CAMERA:
            raise ValueError(f"{v!r} is reserved for StoreSight's own health incidents: choose another camera id")
        return v

    @model_validator(mode="after")
    def _unique_zones(self) -> CameraConfig:
        _require_unique((z.id for z in self.zones), "zones")
        return self

    @model_validator(mode="after")
    def _staff_zones_exist(self) -> CameraConfig:
        known = {z.id for z in self.zones}
        for k, zone in enumerate(self.staff_zones):
            if zone not in known:
                names = ", ".join(sorted(known)) or "none"
                raise _PathError(f"staff_zones[{k}]", f"camera {self.id!r} has no zone {zone!r} (zones: {names})")
        return self

    @model_validator(mode="after")
    def _camera_motion_needs_events(self) -> CameraConfig:
        gating = self.motion_gating
        if gating.enabled and gating.source != "pixels":
            events = self.onvif.events if self.onvif is not None else None
            if events is None or not events.enabled:
                raise _PathError(
                    "motion_gating.source", f"{gating.source!r} needs onvif.events on this camera (its motion events)"
                )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if self.source is None and self.onvif is None:
            raise _PathError("source", "required: a URL or file, or an onvif section instead")
        if self.source is not None and self.onvif is not None:
            raise _PathError("source", "give source or onvif, not both")
        return self

    def describe_source(self) -> str:
        """The source URL or the ONVIF device's address (a URL may hold credentials: redact before showing)."""
        if self.onvif is not None:
            return f"onvif://{self.onvif.host}:{self.onvif.port}"
        return self.source or ""


class ScheduleConfig(Strict):
    """When a rule is armed: local time ranges (may cross midnight) in an IANA time zone."""

    active: list[str] = Field(min_length=1, description='ranges like "22:00-06:00"')
    timezone: str = "UTC"

    @field_validator("active")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for item in v:
            if not _RANGE.match(item):
                raise ValueError(f'{item!r} is not a range like "22:00-06:00"')
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    def is_active(self, at: datetime) -> bool:
        """True when `at` (aware) falls in one of the ranges, in the schedule's time zone."""
        local = at.astimezone(ZoneInfo(self.timezone)).time()
        for item in self.active:
            start_s, end_s = item.split("-")
            start, end = _parse_hhmm(start_s), _parse_hhmm(end_s)
            if start <= end:
                if start <= local < end or (end == time(0, 0) and local >= start):
                    return True
            elif local >= start or local < end:
                return True
        return False


def _check_tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/London)") from None
    return v


def _parse_hhmm(s: str) -> time:
    h, m = (int(x) for x in s.split(":"))
    return time(0, 0) if h == 24 else time(h, m)


class RuleBase(Strict):
    """Fields every rule has."""

    id: str = Field(pattern=_ID)
    camera: str
    severity: Literal["info", "warning", "critical"] = "warning"
    schedule: ScheduleConfig | None = Field(default=None, description="armed only in these hours; default always")
    cooldown_s: float = Field(default=30.0, ge=0, description="quiet time per person after an incident ends")
    exit_grace_s: float = Field(
        default=2.0, ge=0, description="absence tolerated before a person counts as gone; rides over missed detections"
    )

    def excludes_staff(self) -> bool:
        """Whether this rule sees customers only (tracks that started in one of the camera's `staff_zones` hidden)."""
        return bool(getattr(self, "exclude_staff", False))

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


_EXCLUDE_STAFF = "ignore tracks that started in one of the camera's staff_zones (employees)"


class LoiteringRuleConfig(RuleBase):
    """A person stays in a zone longer than `min_dwell_s`."""

    type: Literal["loitering"]
    zone: str
    min_dwell_s: float = Field(gt=0)
    exclude_staff: bool = Field(default=True, description=_EXCLUDE_STAFF)


class ZoneIntrusionRuleConfig(RuleBase):
    """A person enters a zone (while the schedule is active, or the alarm panel named by `armed_by` is armed)."""

    type: Literal["zone_intrusion"]
    zone: str
    min_presence_s: float = Field(default=0.5, ge=0, description="debounce: time inside before it counts")
    armed_by: str | None = Field(
        default=None,
        pattern=_ID,
        description="an alarm_panels id: armed while that panel is armed (its last arm/disarm report); with a "
        "schedule as well, armed when either says so",
    )
    exclude_staff: bool = Field(default=False, description=_EXCLUDE_STAFF + "; off: after hours, staff count too")


class StaffOnlyRuleConfig(RuleBase):
    """A customer (a track that did not start in one of the camera's `staff_zones`) enters a staff-only zone."""

    type: Literal["staff_only"]
    zone: str
    min_presence_s: float = Field(default=1.0, ge=0, description="debounce: time inside before it counts")

    def excludes_staff(self) -> bool:
        """Always: staff are who may be there."""
        return True


class LineCrossingRuleConfig(RuleBase):
    """A directional tripwire: counts people crossing a line segment, in and out (the basis of footfall)."""

    type: Literal["line_crossing"]
    line: tuple[Point, Point] = Field(description="two normalised points; the segment, not the infinite line, counts")
    in_side: Literal["left", "right"] = Field(
        default="right",
        description="crossing onto this side of the line, looking from its first point to its second, counts as in",
    )
    min_frames: int = Field(
        default=3, ge=1, le=50, description="frames on the new side before a crossing counts; higher resists jitter"
    )
    anchor: Literal["bottom_center", "center"] = "bottom_center"

    @field_validator("line")
    @classmethod
    def _not_a_point(cls, v: tuple[Point, Point]) -> tuple[Point, Point]:
        if v[0] == v[1]:
            raise ValueError("the two points of a line must differ")
        return v


class OccupancyRuleConfig(RuleBase):
    """How many people are in a zone; an incident while more than `max_people` stay for `min_duration_s`."""

    type: Literal["occupancy"]
    zone: str
    max_people: int | None = Field(default=None, ge=0, description="overcrowding threshold; none = only measure")
    min_duration_s: float = Field(default=10.0, ge=0, description="how long over the threshold before it fires")
    smoothing_frames: int = Field(
        default=5, ge=1, le=100, description="median over this many frames: rides over a missed or doubled box"
    )


class GroupEntryRuleConfig(RuleBase):
    """`min_people` or more different people enter a zone within `window_s` (a signal of an organised crew)."""

    type: Literal["group_entry"]
    zone: str
    min_people: int = Field(default=3, ge=2)
    window_s: float = Field(default=10.0, gt=0)
    severity: Literal["info", "warning", "critical"] = "critical"


class QueueRuleConfig(RuleBase):
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
    exclude_staff: bool = Field(default=False, description=_EXCLUDE_STAFF + " (a cashier inside the queue zone)")


class CheckoutBypassRuleConfig(RuleBase):
    """A person visits a high-value zone, then reaches the exit without passing a checkout zone in between."""

    type: Literal["checkout_bypass"]
    high_value_zones: list[str] = Field(min_length=1)
    checkout_zones: list[str] = Field(min_length=1)
    exit_zone: str
    min_visit_s: float = Field(
        default=1.0, ge=0, description="time in a high-value zone before it counts as a visit: brushing past does not"
    )
    exclude_staff: bool = Field(default=True, description=_EXCLUDE_STAFF)
    severity: Literal["info", "warning", "critical"] = "critical"

    @model_validator(mode="after")
    def _roles_differ(self) -> CheckoutBypassRuleConfig:
        for k, zone in enumerate(self.checkout_zones):
            if zone in self.high_value_zones:
                raise _PathError(f"checkout_zones[{k}]", f"{zone!r} is also a high-value zone")
        if self.exit_zone in self.high_value_zones + self.checkout_zones:
            raise _PathError("exit_zone", f"{self.exit_zone!r} is also a high-value or checkout zone")
        return self


class RepeatVisitRuleConfig(RuleBase):
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
    exclude_staff: bool = Field(default=True, description=_EXCLUDE_STAFF + " (restocking)")


# COCO classes (the model's names) that obstruct an exit when left standing in it; boxes and trolleys have none.
# Not tv or refrigerator: YOLOX-nano gives those to windows and large flat doors, which is what fire exits are.
BLOCKING_OBJECTS = (
    "bicycle", "motorcycle", "bench", "backpack", "suitcase", "chair", "couch", "potted plant", "dining table",
)  # fmt: skip


class ExitReferenceConfig(Strict):
    """blocked_exit's learned empty-zone view: a persistent change against it is an obstruction nobody detected."""

    enabled: bool = Field(default=True, description="learn the empty zone and flag persistent changes against it")
    learn_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds of empty, still zone before it is used, and the time constant of its slow updates "
        "while empty (longer ignores more passing shadows, follows daylight more slowly)",
    )
    change_share: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="changed when this share of the zone's visible pixels differ from the reference; lower finds "
        "smaller objects and more shadows",
    )
    pixel_delta: float = Field(
        default=1.5,
        gt=0,
        description="a pixel differs when it is this many spreads (interquartile range / 1.349 of the zone's grey "
        "levels, after brightness normalisation) from the reference; lower finds low-contrast objects and noise",
    )


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
                raise _PathError(f"object_classes[{k}]", "people are always watched; list only object classes")
            if name in seen:
                raise _PathError(f"object_classes[{k}]", f"lists {name!r} twice")
            seen.add(name)
        return self


_MIN_KP = "keypoints below this MoveNet score are ignored; higher drops more noise and more real joints"


class PoseRuleBase(RuleBase):
    """Fields every pose rule has (the keypoints come from the `pose` model, only for the people a rule needs)."""

    min_keypoint_score: float = Field(default=0.3, gt=0, lt=1, description=_MIN_KP)


class FallRuleConfig(PoseRuleBase):
    """A person goes from upright to lying (torso angle and box shape) and stays down for `min_down_s`."""

    type: Literal["fall"]
    min_down_s: float = Field(default=5.0, ge=0, description="seconds lying before it fires: a quick bend does not")
    upright_max_deg: float = Field(default=30.0, gt=0, lt=90, description="torso within this of vertical = upright")
    lying_min_deg: float = Field(default=60.0, gt=0, lt=90, description="torso at least this far from vertical = lying")
    lying_min_aspect: float = Field(
        default=0.9, gt=0, description="box width / height at least this, as well as the torso angle, = lying"
    )
    fall_within_s: float = Field(
        default=4.0, gt=0, description="lying must begin within this of the last upright sight: a fall, not a nap"
    )
    severity: Literal["info", "warning", "critical"] = "critical"

    @model_validator(mode="after")
    def _angles_ordered(self) -> FallRuleConfig:
        if self.upright_max_deg >= self.lying_min_deg:
            raise _PathError("upright_max_deg", "must be below lying_min_deg")
        return self


class AggressionRuleConfig(PoseRuleBase):
    """Two or more people close together while wrists or elbows move fast, sustained for `min_duration_s`."""

    type: Literal["aggression"]
    zone: str | None = Field(default=None, description="only people in this zone; default the whole view")
    max_distance: float = Field(
        default=1.0, gt=0, description="close: box centres at most this many (mean) person heights apart"
    )
    min_limb_speed: float = Field(
        default=1.5,
        gt=0,
        description="fast: a wrist or elbow moving this many person heights per second relative to its own body "
        "(a punch or shove ~2-4; walking arm swing < 1)",
    )
    min_duration_s: float = Field(default=1.0, ge=0, description="fast movement sustained this long")
    min_fast_samples: int = Field(default=3, ge=1, description="and seen in at least this many analysed frames")
    max_gap_s: float = Field(default=1.0, gt=0, description="a calm spell longer than this ends the episode")
    severity: Literal["info", "warning", "critical"] = "critical"


class ShelfSweepRuleConfig(PoseRuleBase):
    """One person makes `min_reaches` fast wrist reach-ins into a shelf zone within `window_s`."""

    type: Literal["shelf_sweep"]
    shelf_zone: str = Field(description="the shelf front as a polygon: a wrist entering it is a reach-in")
    min_reaches: int = Field(default=4, ge=2)
    window_s: float = Field(default=10.0, gt=0)
    min_reach_speed: float = Field(
        default=0.8,
        gt=0,
        description="fast: the wrist entered moving this many person heights per second relative to the body; "
        "browsing hands move slower",
    )
    exclude_staff: bool = Field(default=True, description=_EXCLUDE_STAFF + " (restocking)")
    severity: Literal["info", "warning", "critical"] = "critical"


POSE_RULE_TYPES = ("fall", "aggression", "shelf_sweep")


RuleConfig = Annotated[
    LoiteringRuleConfig
    | ZoneIntrusionRuleConfig
    | LineCrossingRuleConfig
    | OccupancyRuleConfig
    | GroupEntryRuleConfig
    | QueueRuleConfig
    | CheckoutBypassRuleConfig
    | RepeatVisitRuleConfig
    | BlockedExitRuleConfig
    | StaffOnlyRuleConfig
    | FallRuleConfig
    | AggressionRuleConfig
    | ShelfSweepRuleConfig,
    Field(discriminator="type"),
]
RULE_TYPES = (
    "loitering",
    "zone_intrusion",
    "line_crossing",
    "occupancy",
    "group_entry",
    "queue",
    "checkout_bypass",
    "repeat_visit",
    "blocked_exit",
    "staff_only",
    *POSE_RULE_TYPES,
)


class WebhookSinkConfig(Strict):
    """HTTP POST of each incident state change as JSON."""

    kind: Literal["webhook"]
    id: str = Field(pattern=_ID)
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)
    secret: str | None = Field(
        default=None, min_length=16, description="HMAC-SHA256 key: the receiver checks X-StoreSight-Signature"
    )
    verify_tls: bool = Field(default=True, description="turn off only for a lab; prefer ca_bundle")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CAs to trust (a VMS's self-signed CA)")


class VmsSinkBase(Strict):
    """Fields every VMS sink has: how StoreSight cameras are named in that VMS, and TLS."""

    id: str = Field(pattern=_ID)
    cameras: dict[str, str] = Field(
        default_factory=dict, description="StoreSight camera id -> the camera's id in this VMS (checked at start)"
    )
    verify_tls: bool = Field(default=True, description="VMS servers often self-sign: prefer ca_bundle to turning off")
    ca_bundle: Path | None = Field(default=None, description="PEM file with the VMS's CA")
    timeout_s: float = Field(default=10.0, gt=0)


class MqttSinkConfig(Strict):
    """MQTT: each incident state change to `{topic_prefix}/incidents/{camera}/{rule_id}` and the camera's latest
    incident, retained, to `{topic_prefix}/cameras/{camera}/state` (MQTT v5)."""

    kind: Literal["mqtt"]
    id: str = Field(pattern=_ID)
    host: str = Field(default="127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="1883 plain; brokers usually take TLS on 8883")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, description="never logged; use ${VAR} to keep it out of the file")
    topic_prefix: str = Field(default="storesight", description="first topic level(s), e.g. retail/store-042")
    qos: Literal[1, 2] = Field(
        default=1, description="1: at least once (receivers dedupe by delivery_key); 2 costs two more round trips"
    )
    client_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="default: random, so two bridges never collide"
    )
    tls: bool = Field(default=False, description="TLS with the system's CA certificates")
    keepalive_s: int = Field(
        default=60, ge=5, le=65535, description="ping interval; shorter notices a dead link sooner"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="wait for CONNACK / PUBACK before retrying later")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith(("/", "$")) or v.endswith("/") or "//" in v:
            raise ValueError("must be topic levels like storesight or retail/store-042 (no leading $ or /)")
        if any(c in v for c in "+#\x00") or any(c.isspace() for c in v):
            raise ValueError("must not contain MQTT wildcards (+ #), spaces or NUL")
        return v

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttSinkConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password is set without username (MQTT sends a password only with a user name)")
        return self


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MilestoneMode = Literal["bookmark", "alarm", "analytics_event", "generic_event"]


class MilestoneSinkConfig(VmsSinkBase):
    """Milestone XProtect: bookmarks and alarms through the API Gateway's REST APIs, Analytics Events (XML over TCP)
    and Generic Events (a TCP string) to the Event Server."""

    kind: Literal["milestone"]
    url: str = Field(
        pattern=r"^https?://[^/\s]+/?$",
        description="API Gateway base, https://host (usually the management server); tokens come from its /API/IDP",
    )
    username: str = Field(min_length=1, description="an XProtect basic user (Windows users need NTLM: not supported)")
    password: SecretStr = Field(description="never logged; use ${VAR} to keep it out of the file")
    mode: list[MilestoneMode] = Field(
        default_factory=lambda: list[MilestoneMode](["bookmark"]),
        min_length=1,
        description="what to write: bookmark and alarm (REST), analytics_event (XML, TCP 9090), generic_event "
        "(a TCP string, for versions without the REST APIs)",
    )
    event_server_host: str | None = Field(
        default=None, min_length=1, description="Event Server for analytics/generic events; default: the url's host"
    )
    analytics_event_port: int = Field(
        default=9090, ge=1, le=65535, description="Analytics Events port (off by default)"
    )
    generic_event_port: int = Field(
        default=1234, ge=1, le=65535, description="Generic Events data source: 1234 Compatible, 1235 International"
    )
    analytics_message: str | None = Field(
        default=None,
        min_length=1,
        description="the analytics event name defined in XProtect; default: the incident's rule id (one per rule)",
    )
    analytics_xsd: Path | None = Field(
        default=None,
        description="Milestone's AnalyticsEvent.xsd, to check each document before sending; default: the checkout's "
        "../shared/specs copy, else documents go unchecked (said once in the log)",
    )
    system_source: str | None = Field(
        default=None,
        description="GUID of the device StoreSight's own health alarms name as source (say a camera in the server "
        "room); none: those alarms carry no source",
    )
    pre_roll_s: float = Field(default=5.0, ge=0, description="bookmark starts this long before the incident")
    post_roll_s: float = Field(default=5.0, ge=0, description="and ends this long after it (or after its start)")

    @field_validator("cameras")
    @classmethod
    def _guids(cls, v: dict[str, str]) -> dict[str, str]:
        for cam, guid in v.items():
            if not _GUID.match(guid):
                raise _PathError(cam, f"{guid!r} is not a Milestone camera GUID (see `GET /api/rest/v1/cameras`)")
        return v

    @field_validator("system_source")
    @classmethod
    def _system_guid(cls, v: str | None) -> str | None:
        if v is not None and not _GUID.match(v):
            raise ValueError(f"{v!r} is not a Milestone device GUID (see `GET /api/rest/v1/cameras`)")
        return v

    @field_validator("mode")
    @classmethod
    def _unique_modes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a mode twice")
        return v

    @field_validator("event_server_host")
    @classmethod
    def _bare_host(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or ":" in v or any(c.isspace() for c in v)):
            raise ValueError(f"{v!r} is not a host: give the name or IPv4 address alone (ports have their own keys)")
        return v


_NX_DEVICE_ID = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")


def nx_device_id(value: str) -> str | None:
    """An Nx device id in the form REST v4 writes it (lower case, no braces); None when it is not a UUID."""
    m = _NX_DEVICE_ID.match(value.strip())
    return m.group(1).lower() if m else None


class NxAnalyticsConfig(Strict):
    """Nx's REST-only analytics integration (VMS 6.1+): StoreSight registers as an integration, an Nx administrator
    approves it, then each incident is also an analytics event and its tracks object metadata on the camera."""

    enabled: bool = Field(default=False, description="register with Nx and push analytics events and object tracks")
    integration_id: str = Field(
        default="storesight.retail",
        pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$",
        description="the integration manifest id, also the prefix of its object and event type ids",
    )
    integration_name: str = Field(default="StoreSight", min_length=1, description="the name the administrator sees")
    vendor: str = Field(default="StoreSight", min_length=1)
    pin_code: str | None = Field(
        default=None, pattern=r"^\d{4}$", description="4 digits shown with the request, for the administrator to check"
    )
    approval_poll_s: float = Field(
        default=30.0, gt=0, le=3600, description="how often a waiting delivery asks Nx whether the request is approved"
    )

    @model_validator(mode="after")
    def _pin_when_enabled(self) -> NxAnalyticsConfig:
        if self.enabled and self.pin_code is None:
            raise _PathError("pin_code", "the analytics integration needs a 4-digit pin_code (Nx requires one)")
        return self


class NxSinkConfig(VmsSinkBase):
    """Nx Witness, Nx Meta, DW Spectrum, Hanwha Wave (one server, four brands) over REST v4: a bookmark per incident
    on the camera's timeline and a generic event that Nx rules can turn into an alarm."""

    kind: Literal["nx"]
    url: str = Field(
        pattern=r"^https?://[^/\s?#@]+/?$",
        description="the server, e.g. https://nvr.store.lan:7001 (no path); session logins need https",
    )
    username: str = Field(min_length=1, description="a local Nx user (not a cloud account) allowed to manage bookmarks")
    password: SecretStr = Field(description="never logged; use ${VAR} to keep it out of the file")
    bookmark: bool = Field(default=True, description="a bookmark per incident on the camera, lengthened when it ends")
    generic_event: bool = Field(default=True, description="a generic event per incident start, bound to the camera")
    tags: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["storesight"], description="bookmark tags; the rule id and incident id are added"
    )
    event_source: str = Field(
        default="StoreSight", min_length=1, description="the generic event's source, which Nx rules can filter on"
    )
    open_bookmark_s: float = Field(
        default=30.0, gt=0, le=86400, description="bookmark length while the incident is open; its end sets it right"
    )
    analytics: NxAnalyticsConfig = Field(
        default_factory=NxAnalyticsConfig, description="the REST-only analytics integration (off unless enabled)"
    )

    @field_validator("cameras")
    @classmethod
    def _device_ids(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for camera, device in v.items():
            norm = nx_device_id(device)
            if norm is None:
                raise _PathError(camera, f"{device!r} is not an Nx device id (the UUID `id` of GET /rest/v4/devices)")
            out[camera] = norm
        return out

    @model_validator(mode="after")
    def _does_something(self) -> NxSinkConfig:
        if not self.bookmark and not self.generic_event:
            raise _PathError("generic_event", "bookmark and generic_event are both off: this sink would do nothing")
        return self


class ZoneMinderSinkConfig(VmsSinkBase):
    """ZoneMinder 1.34+ (API 2.0): an alarm on the camera's monitor per incident, so ZoneMinder records an event,
    with the explanation in the event's Cause and Notes."""

    kind: Literal["zoneminder"]
    url: str = Field(
        pattern=r"^https?://[^/\s?#@]+(/[^\s?#]*)?$",
        description="ZoneMinder's web root, e.g. http://nvr.store.lan/zm (the API is below it, at /api)",
    )
    username: str | None = Field(
        default=None, min_length=1, description="a ZoneMinder user with API enabled; none when ZM runs without auth"
    )
    password: SecretStr | None = Field(default=None, description="never logged; use ${VAR} to keep it out of the file")
    cameras: dict[str, str] = Field(
        min_length=1, description="StoreSight camera id -> ZoneMinder monitor Id (a number; checked at start)"
    )

    @field_validator("cameras", mode="before")
    @classmethod
    def _monitor_ids(cls, v: Any) -> Any:
        # YAML reads `cam1: 3` as a number: a monitor id is one, so take it as its digits
        if isinstance(v, dict):
            v = {k: str(m) if isinstance(m, int) and not isinstance(m, bool) else m for k, m in v.items()}
            for cam, monitor in v.items():
                if not (isinstance(monitor, str) and monitor.isdigit() and int(monitor) > 0):
                    raise ValueError(f"{cam}: {monitor!r} is not a ZoneMinder monitor Id (a number, see Console > Id)")
        return v

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _password_needs_username(self) -> ZoneMinderSinkConfig:
        if self.password is not None and self.username is None:
            raise _PathError("password", "set without username")
        return self


_GENETEC_GUID = re.compile(
    r"^\{?([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})\}?$"
)


def genetec_guid(value: str) -> str | None:
    """A Genetec entity GUID as lower-case dashed text (braces, dashes and case as the user pasted them); None when
    it is not one. The Web SDK's query DSL wants it without dashes: the sink strips them there."""
    m = _GENETEC_GUID.match(value.strip())
    return "-".join(m.groups()).lower() if m else None


class GenetecSinkConfig(VmsSinkBase):
    """Genetec Security Center through the Web SDK role: a camera bookmark per incident start and end, and a custom
    event on the camera when `custom_event_id` is set (Security Center event-to-actions turn it into an alarm)."""

    kind: Literal["genetec"]
    url: str = Field(
        pattern=r"^https?://[^/\s?#@]+(/[^\s?#]*)?$",
        description="the Web SDK base, e.g. http://sc.store.lan:4590/WebSdk (HTTP 4590, HTTPS 4591); without a path "
        "the default baseUri /WebSdk is used",
    )
    username: str = Field(
        min_length=1,
        pattern=r"^[^:;]+$",
        description="a Security Center user (not Active Directory) with the 'Log on using the SDK' privilege",
    )
    password: SecretStr = Field(description="never logged; use ${VAR} to keep it out of the file")
    application_id: str = Field(
        min_length=1,
        pattern=r"^[^:;\s]+$",
        description="the application id of the SDK certificate in the licence (sent as '<username>;<application_id>')",
    )
    cameras: dict[str, str] = Field(
        min_length=1, description="StoreSight camera id -> Genetec camera GUID (Config Tool > camera > Identity)"
    )
    custom_event_id: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="also raise this custom event on the camera when an incident starts (define it first in Config "
        "Tool > System > Custom events, for cameras); none: bookmarks only",
    )
    system_custom_event_id: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="raise this custom event, without a camera, when a StoreSight health problem starts (define it "
        "as, say, 'StoreSight analytics down'); none: Security Center is not told",
    )

    @field_validator("url")
    @classmethod
    def _base_uri(cls, v: str) -> str:
        v = v.rstrip("/")
        return v if v.count("/") > 2 else f"{v}/WebSdk"

    @field_validator("cameras")
    @classmethod
    def _guids(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for camera, guid in v.items():
            norm = genetec_guid(guid)
            if norm is None:
                raise _PathError(camera, f"{guid!r} is not a Genetec camera GUID (Config Tool > camera > Identity)")
            out[camera] = norm
        return out


class FrigateSinkConfig(VmsSinkBase):
    """Frigate 0.14+: a manual event (label `storesight`, the rule as sub label, the person's box drawn on the
    snapshot) per incident, ended when the incident ends, so it shows in Frigate's review and keeps the recording."""

    kind: Literal["frigate"]
    url: str = Field(
        pattern=r"^https?://[^/\s?#@]+(/[^\s?#]*)?$",
        description="https://frigate.lan:8971 (the authenticated port: set username/password or token) or "
        "http://frigate:5000 (the internal port, no auth: only inside the docker network); the API is at /api",
    )
    username: str | None = Field(default=None, min_length=1, description="a Frigate user (admin role) when auth is on")
    password: SecretStr | None = Field(default=None, description="never logged; use ${VAR} to keep it out of the file")
    token: SecretStr | None = Field(
        default=None,
        min_length=1,
        description="instead of username/password: a Frigate JWT sent as Bearer; it lapses after Frigate's "
        "auth.session_length, and then the sink holds until it is replaced",
    )
    cameras: dict[str, str] = Field(
        min_length=1, description="StoreSight camera id -> Frigate camera name (the key under cameras: in Frigate)"
    )
    label: str = Field(
        default="storesight",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the event's label in Frigate's review and filters; the rule id becomes its sub label",
    )
    duration_s: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="fixed event length, ended by Frigate; none (default): the event stays open until the incident "
        "ends, which ends it (a fixed length cannot be left open by a lost reply, but cuts long incidents short)",
    )
    include_recording: bool = Field(default=True, description="keep the recording with the event (a clip)")

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, v: dict[str, str]) -> dict[str, str]:
        for camera, name in v.items():
            if not re.match(r"^[A-Za-z0-9_-]+$", name):
                raise _PathError(camera, f"{name!r} is not a Frigate camera name (letters, digits, _ and - only)")
        return v

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> FrigateSinkConfig:
        if (self.username is None) != (self.password is None):
            raise _PathError("password" if self.username else "username", "username and password go together")
        if self.token is not None and self.username is not None:
            raise _PathError("token", "give token or username/password, not both")
        return self


SinkConfig = Annotated[
    WebhookSinkConfig
    | MqttSinkConfig
    | MilestoneSinkConfig
    | NxSinkConfig
    | ZoneMinderSinkConfig
    | GenetecSinkConfig
    | FrigateSinkConfig,
    Field(discriminator="kind"),
]
SINK_KINDS = ("webhook", "mqtt", "milestone", "nx", "zoneminder", "genetec", "frigate")


def normalise_panel_zone(zone: str) -> str:
    """A panel zone as the zone map keys it: "015", "15" and "0015" are one zone (Contact ID pads to 3 digits,
    SIA to 2 or more); letters are upper-cased."""
    zone = zone.strip()
    return str(int(zone)) if zone.isdigit() else zone.upper()


class AlarmZoneView(Strict):
    """A camera zone that shows a panel zone: where video verification looks when that zone alarms."""

    camera: str
    zone: str = Field(description="a zone of that camera (presence is kept per camera zone)")


class AlarmAccountConfig(Strict):
    """One panel account (the `#acct` of DC-09 frames): its encryption key, site and zone-to-camera map."""

    account: str = Field(pattern=r"^[0-9A-Fa-f]{3,16}$", description="3-16 hex digits, as programmed in the panel")
    key: SecretStr | None = Field(
        default=None,
        description="AES key of an encrypted account; frames from it must be encrypted (never logged)",
    )
    key_format: Literal["hex", "text"] = Field(
        default="hex",
        description="hex: 32, 48 or 64 hex digits are the 128/192/256-bit key; text: 16, 24 or 32 characters are "
        "the key bytes themselves (the convention of pysiaalarm and Home Assistant's SIA integration)",
    )
    site: str | None = Field(default=None, pattern=_ID, description="the store this account reports; default site.id")
    zone_map: dict[str, list[AlarmZoneView]] = Field(
        default_factory=dict,
        description='panel zone -> camera zone(s) that show it, e.g. "15": {camera: cam1, zone: stockroom-door}',
    )

    @field_validator("account")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("zone_map", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        for zone, views in v.items():
            key = normalise_panel_zone(str(zone))
            if not re.match(r"^[0-9A-Z]{1,8}$", key):
                raise _PathError(str(zone), "a panel zone is 1-8 digits or letters")
            if key in out:
                raise _PathError(str(zone), f"the same panel zone as {key!r} (leading zeros do not count)")
            out[key] = [views] if isinstance(views, dict) else views
        return out

    @model_validator(mode="after")
    def _key_shape(self) -> AlarmAccountConfig:
        if self.key is None:
            return self
        key = self.key.get_secret_value()
        if self.key_format == "hex":
            if not re.match(r"^[0-9A-Fa-f]*$", key) or len(key) not in (32, 48, 64):
                raise _PathError("key", f"needs 32, 48 or 64 hex digits (AES-128/192/256), got {len(key)} characters")
        elif not key.isascii() or not key.isprintable() or len(key) not in (16, 24, 32):
            raise _PathError("key", f"key_format text needs 16, 24 or 32 printable ASCII characters, got {len(key)}")
        return self

    def key_bytes(self) -> bytes | None:
        """The AES key, or None for a plain account."""
        if self.key is None:
            return None
        key = self.key.get_secret_value()
        return bytes.fromhex(key) if self.key_format == "hex" else key.encode("ascii")


AlarmTransport = Literal["tcp", "udp"]
ALARM_TRANSPORTS: tuple[AlarmTransport, ...] = ("tcp", "udp")


class AlarmPanelConfig(Strict):
    """An intrusion alarm panel reporting to StoreSight, usually as a second path next to the monitoring centre."""

    id: str = Field(pattern=_ID)
    protocol: Literal["sia_dc09"] = Field(description="SIA DC-09 (SIA DC-03 or Contact ID data, plain or AES)")
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on; 0.0.0.0 for LAN panels")
    port: int = Field(ge=1, le=65535, description="the receiver port programmed in the panel (TCP and UDP)")
    transports: list[AlarmTransport] = Field(default_factory=lambda: list(ALARM_TRANSPORTS), min_length=1)
    accounts: list[AlarmAccountConfig] = Field(min_length=1)
    timestamp_past_s: float = Field(
        default=40.0, ge=0, description="NAK frames stamped more than this before the receiver's clock (DC-09: 40 s)"
    )
    timestamp_future_s: float = Field(
        default=20.0, ge=0, description="NAK frames stamped more than this after the receiver's clock (DC-09: 20 s)"
    )
    verify_before_s: float = Field(
        default=10.0, ge=0, le=60, description="video verification looks from this long before the alarm"
    )
    verify_after_s: float = Field(
        default=30.0,
        ge=0,
        le=90,
        description="to this long after it; the verified or unverified alarm incident is sent once this has passed",
    )

    @model_validator(mode="after")
    def _unique(self) -> AlarmPanelConfig:
        seen: set[str] = set()
        for j, account in enumerate(self.accounts):
            if account.account in seen:
                raise _PathError(f"accounts[{j}].account", f"account {account.account} is listed twice")
            seen.add(account.account)
        if len(set(self.transports)) != len(self.transports):
            raise _PathError("transports", "lists a transport twice")
        return self


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class StoreOccupancyConfig(Strict):
    """People in the store (or a floor), fused from the in/out counts of several entrance line_crossing rules on
    any cameras; reset to zero at closing, never below zero; an incident while over `max_people`."""

    id: str = Field(pattern=_ID, description="names the count in insights and its incidents' rule_id")
    lines: list[str] = Field(
        min_length=1, description="line_crossing rule ids, one per entrance: their in adds one, their out takes one"
    )
    max_people: int | None = Field(default=None, ge=0, description="overcrowding threshold; none = only measure")
    min_duration_s: float = Field(default=10.0, ge=0, description="how long over the threshold before it fires")
    reset_at: str | None = Field(
        default=None,
        description='closing time "HH:MM" (local, in `timezone`): the count goes back to zero, and what it held is '
        "recorded as drift; none: never reset (a store open around the clock; drift then accumulates)",
    )
    timezone: str | None = Field(default=None, description="of reset_at; default: site.timezone")
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("reset_at")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError(f'{v!r} is not a time like "22:00"')
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _check_tz(v)

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a line twice (each crossing would count twice)")
        return v

    def closing(self) -> time | None:
        """The local closing time, when the count resets."""
        return None if self.reset_at is None else _parse_hhmm(self.reset_at)


class Config(Strict):
    """The whole file."""

    site: SiteConfig = Field(default_factory=SiteConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    system_health: SystemHealthConfig = Field(default_factory=SystemHealthConfig)
    pos: PosConfig | None = Field(default=None, description="point of sale: intake, exceptions, lane cameras")
    alarm_panels: list[AlarmPanelConfig] = Field(
        default_factory=list, description="intrusion alarm panels reporting over SIA DC-09 (verified by video)"
    )
    access: AccessConfig | None = Field(default=None, description="access control: doors, tailgating, door alarms")
    store_occupancy: list[StoreOccupancyConfig] = Field(
        default_factory=list, description="people in the store, fused from the entrance lines' in/out counts"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _require_unique((c.id for c in self.cameras), "cameras")
        _require_unique((r.id for r in self.rules), "rules")
        _require_unique((s.id for s in self.sinks), "sinks")
        verify_rules_reference_cameras_and_zones(self)
        verify_sink_camera_maps(self)
        verify_pos_lanes(self)
        verify_alarm_panels(self)
        verify_access_doors(self)
        verify_store_occupancy(self)
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with this id."""
        return next(c for c in self.cameras if c.id == camera_id)


def _require_unique(ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: duplicate id {i!r}")
        seen.add(i)


class _PathError(ValueError):
    """A cross-object error that knows its own path, relative to the model whose validator raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def verify_pos_lanes(config: Config) -> None:
    """Every POS lane names a camera that exists and zones of that camera."""
    if config.pos is None:
        return
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    for i, lane in enumerate(config.pos.lanes):
        where = f"pos.lanes[{i}]"
        if lane.camera not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise _PathError(f"{where}.camera", f"unknown camera {lane.camera!r} (cameras: {known})")
        for key in ("customer_zone", "staff_zone"):
            zone = getattr(lane, key)
            if zone is not None and zone not in zones[lane.camera]:
                known = ", ".join(sorted(zones[lane.camera])) or "none"
                raise _PathError(f"{where}.{key}", f"camera {lane.camera!r} has no zone {zone!r} (zones: {known})")


def verify_access_doors(config: Config) -> None:
    """Every door names a camera that exists, a line_crossing rule on that camera, a zone of it, and an ONVIF
    device with events."""
    if config.access is None:
        return
    cameras = {c.id: c for c in config.cameras}
    for i, door in enumerate(config.access.doors):
        where = f"access.doors[{i}]"
        if door.camera not in cameras:
            known = ", ".join(sorted(cameras)) or "none"
            raise _PathError(f"{where}.camera", f"unknown camera {door.camera!r} (cameras: {known})")
        lines = sorted(r.id for r in config.rules if isinstance(r, LineCrossingRuleConfig) and r.camera == door.camera)
        rule = next((r for r in config.rules if r.id == door.line_rule), None)
        if rule is None:
            known = ", ".join(lines) or "none"
            raise _PathError(
                f"{where}.line_rule", f"unknown rule {door.line_rule!r} (line_crossing rules on {door.camera}: {known})"
            )
        if not isinstance(rule, LineCrossingRuleConfig):
            raise _PathError(f"{where}.line_rule", f"rule {rule.id!r} is a {rule.type} rule, not line_crossing")
        if rule.camera != door.camera:
            raise _PathError(
                f"{where}.line_rule", f"rule {rule.id!r} is on camera {rule.camera!r}, not {door.camera!r}"
            )
        zones = {z.id for z in cameras[door.camera].zones}
        if door.zone is not None and door.zone not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise _PathError(f"{where}.zone", f"camera {door.camera!r} has no zone {door.zone!r} (zones: {known})")
        if door.onvif is not None:
            device = door.onvif.camera or door.camera
            cam = cameras.get(device)
            if cam is None:
                known = ", ".join(sorted(cameras)) or "none"
                raise _PathError(f"{where}.onvif.camera", f"unknown camera {device!r} (cameras: {known})")
            if cam.onvif is None or cam.onvif.events is None or not cam.onvif.events.enabled:
                raise _PathError(
                    f"{where}.onvif.camera", f"camera {device!r} has no onvif.events: its door events are not read"
                )


def verify_store_occupancy(config: Config) -> None:
    """Store occupancy ids are unique and no rule's (incidents and insights are keyed by it); each line names a
    line_crossing rule."""
    rules = {r.id: r for r in config.rules}
    lines = ", ".join(sorted(r.id for r in config.rules if isinstance(r, LineCrossingRuleConfig))) or "none"
    seen: set[str] = set()
    for i, store in enumerate(config.store_occupancy):
        where = f"store_occupancy[{i}]"
        if store.id in seen:
            raise _PathError(f"{where}.id", f"duplicate id {store.id!r}")
        if store.id in rules:
            raise _PathError(f"{where}.id", f"{store.id!r} is also a rule id: insights and incidents need it unique")
        seen.add(store.id)
        for k, line in enumerate(store.lines):
            rule = rules.get(line)
            if rule is None:
                raise _PathError(f"{where}.lines[{k}]", f"unknown rule {line!r} (line_crossing rules: {lines})")
            if not isinstance(rule, LineCrossingRuleConfig):
                raise _PathError(f"{where}.lines[{k}]", f"rule {line!r} is a {rule.type} rule, not line_crossing")


def verify_sink_camera_maps(config: Config) -> None:
    """A VMS sink's camera map names only cameras this config has."""
    known = {c.id for c in config.cameras}
    for i, sink in enumerate(config.sinks):
        for cam in getattr(sink, "cameras", {}) or {}:
            if cam not in known:
                names = ", ".join(sorted(known)) or "none"
                raise _PathError(f"sinks[{i}].cameras.{cam}", f"unknown camera {cam!r} (cameras: {names})")


def verify_alarm_panels(config: Config) -> None:
    """Panel ids and listening ports are unique; zone maps name existing camera zones; `armed_by` names a panel."""
    _require_unique((p.id for p in config.alarm_panels), "alarm_panels")
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    listening: dict[tuple[str, int, str], str] = {}
    for i, panel in enumerate(config.alarm_panels):
        for transport in panel.transports:
            other = listening.setdefault((panel.host, panel.port, transport), panel.id)
            if other != panel.id:
                raise _PathError(f"alarm_panels[{i}].port", f"{transport} {panel.port} is taken by panel {other!r}")
        for j, account in enumerate(panel.accounts):
            for panel_zone, views in account.zone_map.items():
                for k, view in enumerate(views):
                    path = f"alarm_panels[{i}].accounts[{j}].zone_map.{panel_zone}[{k}]"
                    if view.camera not in zones:
                        known = ", ".join(sorted(zones)) or "none"
                        raise _PathError(f"{path}.camera", f"unknown camera {view.camera!r} (cameras: {known})")
                    if view.zone not in zones[view.camera]:
                        known = ", ".join(sorted(zones[view.camera])) or "none"
                        raise _PathError(
                            f"{path}.zone", f"camera {view.camera!r} has no zone {view.zone!r} (zones: {known})"
                        )
    panels = {p.id for p in config.alarm_panels}
    for i, rule in enumerate(config.rules):
        armed_by = getattr(rule, "armed_by", None)
        if armed_by is not None and armed_by not in panels:
            known = ", ".join(sorted(panels)) or "none"
            raise _PathError(f"rules[{i}].armed_by", f"unknown alarm panel {armed_by!r} (alarm_panels: {known})")


def verify_rules_reference_cameras_and_zones(config: Config) -> None:
    """Every rule names a camera that exists and only zones of that camera (`zone`, `exit_zone`,
    `high_value_zones[1]`, ...); a staff_only rule needs the camera's staff_zones."""
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    for i, rule in enumerate(config.rules):
        if rule.camera not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise _PathError(f"rules[{i}].camera", f"unknown camera {rule.camera!r} (cameras: {known})")
        for path, zone in rule.zone_refs():
            if zone not in zones[rule.camera]:
                known = ", ".join(sorted(zones[rule.camera])) or "none"
                raise _PathError(f"rules[{i}].{path}", f"camera {rule.camera!r} has no zone {zone!r} (zones: {known})")
        if isinstance(rule, StaffOnlyRuleConfig) and not config.camera(rule.camera).staff_zones:
            raise _PathError(
                f"rules[{i}].camera",
                f"staff_only needs staff_zones on camera {rule.camera!r}: without them everyone is a customer",
            )


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(text: str, source: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is None:
                raise ConfigError(f"{source}: environment variable {m.group(1)} is not set (or use ${{VAR:-default}})")
            return m.group(2)
        return value

    return _ENV.sub(repl, text)


def _expand_tree(node: Any, source: str) -> Any:
    """Expand ${VAR} in every string value after YAML parsing, so a secret with quotes, colons or '#' in it
    cannot change the document's structure (keys and comments are never expanded)."""
    if isinstance(node, str):
        return _expand_env(node, source)
    if isinstance(node, list):
        return [_expand_tree(v, source) for v in node]
    if isinstance(node, dict):
        return {k: _expand_tree(v, source) for k, v in node.items()}
    return node


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    prev: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, int) and part in RULE_TYPES + SINK_KINDS:
            pass  # pydantic puts the discriminator's value in the path; users never wrote it
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out or "(top level)"


def _num(v: Any) -> Any:
    """0.0 reads as 0 in messages."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _message(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    simple = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "extra_forbidden": "unknown key (not allowed here)",
        "missing": "required key is missing",
        "too_short": "needs at least {min_length} item(s)",
        "string_pattern_mismatch": "does not match {pattern}",
    }
    if kind in simple:
        msg = simple[kind].format(**{k: _num(v) for k, v in ctx.items()})
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind == "union_tag_invalid":
        msg = f"unknown type {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    else:
        msg = err["msg"][0].lower() + err["msg"][1:]
    if kind not in ("missing", "extra_forbidden", "value_error") and not isinstance(err.get("input"), dict | list):
        msg += f" (got {err.get('input')!r})"
    return msg


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, each starting with the exact path of the bad value."""
    lines = []
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, _PathError):
            # pydantic's loc says where the model that raised it sits (empty for the root)
            where = f"{_format_loc(err['loc'])}." if err["loc"] else ""
            lines.append(f"{source}: {where}{inner}")
            continue
        lines.append(f"{source}: {_format_loc(err['loc'])}: {_message(err)}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate an already-parsed document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> Config:
    """Read, expand ${ENV} references, parse and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(_expand_tree(data, str(p)), str(p))
