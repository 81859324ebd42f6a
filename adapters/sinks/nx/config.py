"""The Nx sink's config (`kind: nx`) and Nx device ids."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plugin.config.base import PathError, Strict
from plugin.config.sinks import VmsSinkBase

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
            raise PathError("pin_code", "the analytics integration needs a 4-digit pin_code (Nx requires one)")
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
                raise PathError(camera, f"{device!r} is not an Nx device id (the UUID `id` of GET /rest/v4/devices)")
            out[camera] = norm
        return out

    @model_validator(mode="after")
    def _does_something(self) -> NxSinkConfig:
        if not self.bookmark and not self.generic_event:
            raise PathError("generic_event", "bookmark and generic_event are both off: this sink would do nothing")
        return self
