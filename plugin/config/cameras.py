"""A camera: its source (a URL, a file or an ONVIF device), its zones, and how it is analysed (motion gating,
tamper, health)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plugin.config.base import ID_PATTERN, PathError, Point, Strict, require_unique
from plugin.types import SYSTEM_CAMERA, CameraSignalKind

Decoder = Literal["pyav", "opencv"]  # what decodes a camera's video (adapters/cameras/registry.py)


class ZoneConfig(Strict):
    """A polygon in normalised image coordinates (0..1), so main and sub streams share it."""

    id: str = Field(pattern=ID_PATTERN)
    polygon: list[Point] = Field(min_length=3)
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center", description="which point of a person must be inside: the feet by default"
    )


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
            raise PathError("password", "set without username")
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


class CameraConfig(Strict):
    """One camera: a source URL or file, or an ONVIF device; its zones and how often to analyse it."""

    id: str = Field(pattern=ID_PATTERN)
    source: str | None = Field(default=None, min_length=1, description="rtsp://..., a file path or file:// URL")
    onvif: OnvifConfig | None = Field(default=None, description="instead of source: ask the camera for its stream")
    name: str | None = None
    enabled: bool = True
    fps: float = Field(default=5.0, gt=0, le=60, description="analysed frames per second; more costs detector time")
    decoder: Decoder = Field(
        default="pyav",
        description="what decodes the video: pyav (FFmpeg's own bindings: cameras open in parallel, only analysed "
        "frames are converted) or opencv (the fallback: OpenCV's FFmpeg backend, opens one stream at a time)",
    )
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
        require_unique((z.id for z in self.zones), "zones")
        return self

    @model_validator(mode="after")
    def _staff_zones_exist(self) -> CameraConfig:
        known = {z.id for z in self.zones}
        for k, zone in enumerate(self.staff_zones):
            if zone not in known:
                names = ", ".join(sorted(known)) or "none"
                raise PathError(f"staff_zones[{k}]", f"camera {self.id!r} has no zone {zone!r} (zones: {names})")
        return self

    @model_validator(mode="after")
    def _camera_motion_needs_events(self) -> CameraConfig:
        gating = self.motion_gating
        if gating.enabled and gating.source != "pixels":
            events = self.onvif.events if self.onvif is not None else None
            if events is None or not events.enabled:
                raise PathError(
                    "motion_gating.source", f"{gating.source!r} needs onvif.events on this camera (its motion events)"
                )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if self.source is None and self.onvif is None:
            raise PathError("source", "required: a URL or file, or an onvif section instead")
        if self.source is not None and self.onvif is not None:
            raise PathError("source", "give source or onvif, not both")
        return self

    def describe_source(self) -> str:
        """The source URL or the ONVIF device's address (a URL may hold credentials: redact before showing)."""
        if self.onvif is not None:
            return f"onvif://{self.onvif.host}:{self.onvif.port}"
        return self.source or ""
