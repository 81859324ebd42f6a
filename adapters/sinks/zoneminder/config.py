"""The ZoneMinder sink's config (`kind: zoneminder`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plugin.config.base import PathError
from plugin.config.sinks import VmsSinkBase


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

    @field_validator("cameras", mode="before", json_schema_input_type=dict[str, str | int])
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
            raise PathError("password", "set without username")
        return self
