"""The Frigate sink's config (`kind: frigate`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plugin.config.base import PathError
from plugin.config.sinks import VmsSinkBase


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
                raise PathError(camera, f"{name!r} is not a Frigate camera name (letters, digits, _ and - only)")
        return v

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> FrigateSinkConfig:
        if (self.username is None) != (self.password is None):
            raise PathError("password" if self.username else "username", "username and password go together")
        if self.token is not None and self.username is not None:
            raise PathError("token", "give token or username/password, not both")
        return self
