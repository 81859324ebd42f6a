"""The Genetec Security Center sink's config (`kind: genetec`) and entity GUIDs."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from plugin.config.base import PathError
from plugin.config.sinks import VmsSinkBase

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
                raise PathError(camera, f"{guid!r} is not a Genetec camera GUID (Config Tool > camera > Identity)")
            out[camera] = norm
        return out
