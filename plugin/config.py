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


RuleConfig = Annotated[LoiteringRuleConfig | ZoneIntrusionRuleConfig, Field(discriminator="type")]
RULE_TYPES = ("loitering", "zone_intrusion")


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


SinkConfig = Annotated[WebhookSinkConfig | MqttSinkConfig, Field(discriminator="kind")]
SINK_KINDS = ("webhook", "mqtt")


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
        if rule.zone not in zones[rule.camera]:
            known = ", ".join(sorted(zones[rule.camera])) or "none"
            raise _PathError(f"rules[{i}].zone", f"camera {rule.camera!r} has no zone {rule.zone!r} (zones: {known})")


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
