"""The `store_occupancy:` section: people in the store, fused from entrance lines."""

from __future__ import annotations

from datetime import time

from pydantic import Field, field_validator

from plugin.config.base import ID_PATTERN, Severity, Strict, TimeOfDay, check_tz, parse_hhmm


class StoreOccupancyConfig(Strict):
    """People in the store (or a floor), fused from the in/out counts of several entrance line_crossing rules on
    any cameras; reset to zero at closing, never below zero; an incident while over `max_people`."""

    id: str = Field(pattern=ID_PATTERN, description="names the count in insights and its incidents' rule_id")
    lines: list[str] = Field(
        min_length=1, description="line_crossing rule ids, one per entrance: their in adds one, their out takes one"
    )
    max_people: int | None = Field(default=None, ge=0, description="overcrowding threshold; none = only measure")
    min_duration_s: float = Field(default=10.0, ge=0, description="how long over the threshold before it fires")
    reset_at: TimeOfDay | None = Field(
        default=None,
        description='closing time "HH:MM", quoted (local, in `timezone`): the count goes back to zero, and what it '
        "held is recorded as drift; none: never reset (a store open around the clock; drift then accumulates)",
    )
    timezone: str | None = Field(default=None, description="of reset_at; default: site.timezone")
    severity: Severity = "warning"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else check_tz(v)

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a line twice (each crossing would count twice)")
        return v

    def closing(self) -> time | None:
        """The local closing time, when the count resets."""
        return None if self.reset_at is None else parse_hhmm(self.reset_at)
