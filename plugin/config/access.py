"""The `access:` section: doors (access-control door -> camera, door line, zone, ONVIF door token), the tailgating
window and which door findings raise incidents.

The root config (plugin/config/root.py) holds it as its `access` field; the cross-checks against cameras,
zones and rules live in plugin/config/verify.py (`verify_access_doors`), where the whole config is known.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from plugin.config.base import Strict

IncidentSetting = Literal["off", "info", "warning", "critical"]
# a door is named the way the access-control system names it (Genetec door name, Lenel reader, ONVIF door token)
_DOOR = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def door_text(v: Any) -> Any:
    """YAML and JSON give `id: 3` as a number; access systems number their doors, so take it as its digits."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class AccessOnvifDoorConfig(Strict):
    """Where the door's ONVIF Profile A/C events come from: a configured camera (or access controller) with
    `onvif.events`, and the DoorToken or AccessPointToken it reports for this door."""

    camera: str | None = Field(
        default=None, description="the device in cameras: with onvif.events; default: the door's"
    )
    token: str = Field(min_length=1, max_length=64, description="DoorToken (door alarms) or AccessPointToken (grants)")


class AccessDoorConfig(Strict):
    """One door and the camera that watches it."""

    id: str = Field(pattern=_DOOR, description="the door as the access-control system names it")
    camera: str = Field(description="the camera that sees the door")
    line_rule: str = Field(description="a line_crossing rule on that camera whose `in` direction is entering")
    zone: str | None = Field(default=None, description="the camera zone at the door: the people count of door alarms")
    tailgate_window_s: float = Field(
        default=5.0, gt=0, le=120, description="people entering this long after a grant are on that grant"
    )
    onvif: AccessOnvifDoorConfig | None = Field(default=None, description="the door's ONVIF door and access events")

    @field_validator("id", mode="before", json_schema_input_type=Annotated[str, Field(pattern=_DOOR)] | int)
    @classmethod
    def _id(cls, v: Any) -> Any:
        return door_text(v)


class AccessIncidentsConfig(Strict):
    """Which door findings raise an incident, and how severe ('off': kept as a business event only)."""

    tailgating: IncidentSetting = "warning"
    forced: IncidentSetting = "critical"
    held: IncidentSetting = "warning"


class AccessConfig(Strict):
    """Access control: door events (webhook, ONVIF) fused with the door cameras."""

    doors: list[AccessDoorConfig] = Field(min_length=1)
    incidents: AccessIncidentsConfig = Field(default_factory=AccessIncidentsConfig)
    lead_s: float = Field(
        default=1.0, ge=0, le=30, description="crossings this long before a grant count with it: the access "
        "controller's clock and the camera's rarely agree to the second",
    )  # fmt: skip
    alarm_window_s: float = Field(
        default=10.0, gt=0, le=300, description="a forced or held door: people counted this long either side of it"
    )
    wait_max_s: float = Field(
        default=60.0, gt=0, le=600, description="wait this long (wall time) for the door camera's video to be "
        "analysed past a window before judging with what there is",
    )  # fmt: skip
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=50_000_000, description="a larger request is refused")
    max_events_per_request: int = Field(
        default=1000, ge=1, le=100_000, description="a webhook request with more door events is refused whole"
    )

    @model_validator(mode="after")
    def _unique_doors(self) -> AccessConfig:
        seen: set[str] = set()
        for door in self.doors:
            if door.id in seen:
                raise ValueError(f"doors: duplicate id {door.id!r}")
            seen.add(door.id)
        return self

    def door(self, door_id: str) -> AccessDoorConfig | None:
        """The configured door with this id."""
        return next((d for d in self.doors if d.id == door_id), None)
