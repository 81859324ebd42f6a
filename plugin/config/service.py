"""The bridge's own settings: the site, storage, the inference server and detector, the web listener, deliveries
and StoreSight's health checks."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from plugin.config.base import ID_PATTERN, PathError, Strict, check_tz


class RetentionConfig(Strict):
    """How long each kind of data is kept, in days (0: for ever); the purge runs by itself every `interval_h`.
    Nothing a sink still waits for is purged, nor an incident that is still open."""

    incidents_days: float = Field(
        default=180, ge=0, description="ended incidents, with their delivery records and sink references"
    )
    evidence_days: float = Field(
        default=30, ge=0, description="snapshot images (and their blurred copies); the incident stays, without them"
    )
    business_events_days: float = Field(
        default=90, ge=0, description="POS transactions, door events, alarm reports (the latest arm/disarm of each "
        "panel area is kept: it is the armed state)",
    )  # fmt: skip
    pos_files_days: float = Field(
        default=30, ge=0, description="POSLog copies in the drop folder's done/ and rejected/ (card numbers masked)"
    )
    rollups_days: float = Field(default=730, ge=0, description="hourly insights and store occupancy resets")
    interval_h: float = Field(default=1.0, gt=0, le=168, description="how often the purge runs (first at start)")


class StorageConfig(Strict):
    """Where incidents, the outbox and evidence live."""

    path: Path = Field(
        default=Path("./storesight-data"), description="directory for the SQLite file and evidence (created 0700)"
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
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

    id: str = Field(default="store", pattern=ID_PATTERN)
    name: str | None = None
    timezone: str = Field(default="UTC", description="local time for explanations and the console")
    language: Literal["en", "de", "fr", "es"] = Field(
        default="en",
        description="the language of the explanations that land in VMS bookmarks and alarms: en, de, fr or es",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_tz(v)


class TritonConfig(Strict):
    """The inference server: an external one by URL, or the embedded one when `url` is empty."""

    url: str | None = Field(default=None, description="grpc://host:8001 or http://host:8000; empty = embedded")
    model: str = Field(default="yolox_nano", description="detector model name in the Triton repository")
    model_repository: Path | None = Field(
        default=None,
        description="embedded server only; default: the cpu flavour where `storesight models fetch` puts it "
        "($STORESIGHT_DATA_DIR/triton_models/cpu, a checkout's triton_models/cpu, ~/.local/share/storesight/...)",
    )
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


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_LENGTH = 16
BridgeRole = Literal["admin", "viewer", "ingest"]  # the bridge's roles (plugin/web/auth/roles.py gives each its rights)


def is_loopback(host: str) -> bool:
    """True when a listener on `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or empty (every address)


class TokenConfig(Strict):
    """One bearer token for the API, with the role it acts as."""

    name: str = Field(pattern=ID_PATTERN, description="who uses it (the audit log's actor), e.g. pos-integrator")
    role: BridgeRole = Field(description="admin, viewer (reads), or ingest (POST to /api/pos/* and /api/access/*)")
    token: str = Field(min_length=MIN_TOKEN_LENGTH, description="the secret (use ${ENV}); at least 16 characters")


class TlsConfig(Strict):
    """The operator's certificate: the console and API are served over HTTPS."""

    cert: Path = Field(description="PEM certificate (chain first: the server's own, then intermediates)")
    key: Path = Field(description="PEM private key, unencrypted, readable by StoreSight only")


class WebConfig(Strict):
    """The console and API listener: who may sign in is in the database (`storesight users`), the API's tokens here."""

    host: str = Field(default="127.0.0.1", description="beyond loopback it needs `tls` (or `allow_plain_http`)")
    port: int = Field(default=8080, ge=0, le=65535)
    token: str | None = Field(
        default=None,
        min_length=MIN_TOKEN_LENGTH,
        description="the admin bearer token; default: $STORESIGHT_API_TOKEN, else generated into storage/api_token",
    )
    tokens: list[TokenConfig] = Field(default_factory=list, description="more bearer tokens, each with a role")
    tls: TlsConfig | None = Field(default=None, description="serve HTTPS with this certificate and key")
    allow_plain_http: bool = Field(
        default=False,
        description="serve plain HTTP beyond loopback (only behind a TLS-terminating proxy on a trusted link)",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the console answers to besides 127.0.0.1, localhost and ::1; default: the "
        "listen address (when it is one address) and this machine's host name",
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="a sign-in lasts at most this long")
    session_idle_minutes: float = Field(
        default=60.0, gt=0, le=24 * 60, description="a sign-in unused this long ends (the open console keeps it)"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", name) or name.count(":") == 1:
                raise ValueError(f"{name!r} is not a host name or address (no scheme, port or path)")
        return [name.lower() for name in v]

    @model_validator(mode="after")
    def _listener(self) -> WebConfig:
        if not is_loopback(self.host) and self.tls is None and not self.allow_plain_http:
            where = repr(self.host) if self.host else "'' (every address)"
            raise PathError(
                "tls",
                f"the console listens beyond loopback (web.host {where}) without HTTPS: set web.tls {{cert, key}}, "
                "or web.allow_plain_http: true to serve plain HTTP on purpose (behind a TLS proxy)",
            )
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise PathError("tokens", "each token needs its own name")
        secrets = [t.token for t in self.tokens] + ([self.token] if self.token else [])
        if len(set(secrets)) != len(secrets):
            raise PathError("tokens", "two tokens have the same secret (each role needs its own)")
        return self
