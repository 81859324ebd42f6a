"""The Milestone XProtect sink's config (`kind: milestone`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from plugin.config.base import PathError
from plugin.config.sinks import VmsSinkBase

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
        description="Milestone's AnalyticsEvent.xsd, to check each document before sending; default: the copy the "
        "package ships (a source checkout: ../shared/specs), else documents go unchecked (said once in the log)",
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
                raise PathError(cam, f"{guid!r} is not a Milestone camera GUID (see `GET /api/rest/v1/cameras`)")
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
