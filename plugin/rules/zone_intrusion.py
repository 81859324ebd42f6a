"""Zone intrusion: a person enters a zone while the rule is armed (its schedule, or an alarm panel's armed state)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from plugin.config.base import ID_PATTERN
from plugin.rules.base import EXCLUDE_STAFF, CustomerRuleBase, Presence, ZonePresenceRule


class ZoneIntrusionRuleConfig(CustomerRuleBase):
    """A person enters a zone (while the schedule is active, or the alarm panel named by `armed_by` is armed)."""

    type: Literal["zone_intrusion"]
    zone: str
    min_presence_s: float = Field(default=0.5, ge=0, description="debounce: time inside before it counts")
    armed_by: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="an alarm_panels id: armed while that panel is armed (its last arm/disarm report); with a "
        "schedule as well, armed when either says so",
    )
    exclude_staff: bool = Field(default=False, description=EXCLUDE_STAFF + "; off: after hours, staff count too")

    def panel_refs(self) -> list[tuple[str, str]]:
        """The panel of `armed_by`, when set."""
        return [] if self.armed_by is None else [("armed_by", self.armed_by)]


class ZoneIntrusionRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside (debounce against a box flickering over the edge)."""

    config_model = ZoneIntrusionRuleConfig
    config: ZoneIntrusionRuleConfig

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s

    def _panel_armed(self, t: datetime) -> bool:
        panel = self.config.armed_by
        panels = self.context.panels  # the alarm panels' armed state, when any are configured
        return panel is not None and panels is not None and panels.armed(panel, t)

    def _armed(self, t: datetime) -> bool:
        """Armed by the panel or by the schedule (either suffices); with neither configured, always."""
        if self._panel_armed(t):
            return True
        schedule = self.config.schedule
        if schedule is None:
            return self.config.armed_by is None
        return schedule.is_active(t)

    def facts(self, track_id: int, p: Presence, at: datetime) -> dict[str, Any]:
        """Adds what armed the rule (the panel, or the hours), so the operator sees why presence was an incident."""
        facts = super().facts(track_id, p, at)
        schedule = self.config.schedule
        if self._panel_armed(at):
            facts["schedule"] = f"by panel {self.config.armed_by}"
            facts["armed_by"] = self.config.armed_by  # the translated explanations word the panel themselves
        elif schedule is not None:
            facts["schedule"] = facts["hours"] = f"{', '.join(schedule.active)} {schedule.timezone}"
        return facts
