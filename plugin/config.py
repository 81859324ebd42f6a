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

from plugin.errors import ConfigError

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(Strict):
    """Where incidents, the outbox and evidence live."""

    path: Path = Field(default=Path("./storesight-data"), description="directory for the SQLite file and evidence")


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

    @field_validator("start_time")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must include a UTC offset, e.g. 2026-11-29T14:00:00+00:00")
        return v

    @model_validator(mode="after")
    def _unique_zones(self) -> CameraConfig:
        _require_unique((z.id for z in self.zones), "zones")
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


class LoiteringRuleConfig(RuleBase):
    """A person stays in a zone longer than `min_dwell_s`."""

    type: Literal["loitering"]
    zone: str
    min_dwell_s: float = Field(gt=0)


class ZoneIntrusionRuleConfig(RuleBase):
    """A person enters a zone (while the schedule is active)."""

    type: Literal["zone_intrusion"]
    zone: str
    min_presence_s: float = Field(default=0.5, ge=0, description="debounce: time inside before it counts")


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


RuleConfig = Annotated[
    LoiteringRuleConfig | ZoneIntrusionRuleConfig | LineCrossingRuleConfig | OccupancyRuleConfig | GroupEntryRuleConfig,
    Field(discriminator="type"),
]
RULE_TYPES = ("loitering", "zone_intrusion", "line_crossing", "occupancy", "group_entry")


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
    pre_roll_s: float = Field(default=5.0, ge=0, description="bookmark starts this long before the incident")
    post_roll_s: float = Field(default=5.0, ge=0, description="and ends this long after it (or after its start)")

    @field_validator("cameras")
    @classmethod
    def _guids(cls, v: dict[str, str]) -> dict[str, str]:
        for cam, guid in v.items():
            if not _GUID.match(guid):
                raise _PathError(cam, f"{guid!r} is not a Milestone camera GUID (see `GET /api/rest/v1/cameras`)")
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


class Config(Strict):
    """The whole file."""

    site: SiteConfig = Field(default_factory=SiteConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _require_unique((c.id for c in self.cameras), "cameras")
        _require_unique((r.id for r in self.rules), "rules")
        _require_unique((s.id for s in self.sinks), "sinks")
        verify_rules_reference_cameras_and_zones(self)
        verify_sink_camera_maps(self)
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


def verify_sink_camera_maps(config: Config) -> None:
    """A VMS sink's camera map names only cameras this config has."""
    known = {c.id for c in config.cameras}
    for i, sink in enumerate(config.sinks):
        for cam in getattr(sink, "cameras", {}) or {}:
            if cam not in known:
                names = ", ".join(sorted(known)) or "none"
                raise _PathError(f"sinks[{i}].cameras.{cam}", f"unknown camera {cam!r} (cameras: {names})")


def verify_rules_reference_cameras_and_zones(config: Config) -> None:
    """Every rule names a camera that exists and a zone of that camera."""
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    for i, rule in enumerate(config.rules):
        if rule.camera not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise _PathError(f"rules[{i}].camera", f"unknown camera {rule.camera!r} (cameras: {known})")
        zone = getattr(rule, "zone", None)
        if zone is not None and zone not in zones[rule.camera]:
            known = ", ".join(sorted(zones[rule.camera])) or "none"
            raise _PathError(f"rules[{i}].zone", f"camera {rule.camera!r} has no zone {zone!r} (zones: {known})")


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
        data = yaml.safe_load(_expand_env(text, str(p)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, str(p))
