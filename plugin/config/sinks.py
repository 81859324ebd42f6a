"""What every sink config has (its `kind` and id), and the VMS sinks' camera map and TLS settings. Each sink's own
model lives with its adapter (adapters/sinks/); the root config assembles them from the sink registry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from plugin.config.base import ID_PATTERN, Strict


class SinkConfigBase(Strict):
    """Fields every sink has."""

    kind: str = Field(description="the sink's product: its key in adapters/sinks/registry.py")
    id: str = Field(pattern=ID_PATTERN)
    privacy: Literal["blur", "original"] = Field(
        default="blur",
        description="the evidence snapshot this sink is handed: blur = a copy with every detected person "
        "pixelated (the local snapshot keeps the original for investigators); original = as taken, faces included "
        "(set it where the site allows this receiver to see faces)",
    )

    def camera_refs(self) -> list[str]:
        """StoreSight camera ids this sink's config names (checked against the cameras)."""
        return []


class VmsSinkBase(SinkConfigBase):
    """Fields every VMS sink has: how StoreSight cameras are named in that VMS, and TLS."""

    cameras: dict[str, str] = Field(
        default_factory=dict, description="StoreSight camera id -> the camera's id in this VMS (checked at start)"
    )
    verify_tls: bool = Field(default=True, description="VMS servers often self-sign: prefer ca_bundle to turning off")
    ca_bundle: Path | None = Field(default=None, description="PEM file with the VMS's CA")
    timeout_s: float = Field(default=10.0, gt=0)

    def camera_refs(self) -> list[str]:
        """The StoreSight cameras of the camera map."""
        return list(self.cameras)
