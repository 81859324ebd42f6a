"""Zone intrusion: a person enters a zone while the rule is armed (its schedule, or an alarm panel's armed state)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from plugin.config import ZoneIntrusionRuleConfig
from plugin.rules.base import Presence, ZonePresenceRule

if TYPE_CHECKING:
    from plugin.alarms import PanelStates

RULE_KEY = "zone_intrusion"


class ZoneIntrusionRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside (debounce against a box flickering over the edge)."""

    type_key: ClassVar[str] = RULE_KEY
    config: ZoneIntrusionRuleConfig
    panels: PanelStates | None = None  # the app hands over the panels' armed state (for `armed_by`)

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s

    def _panel_armed(self, t: datetime) -> bool:
        panel = self.config.armed_by
        return panel is not None and self.panels is not None and self.panels.armed(panel, t)

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
        elif schedule is not None:
            facts["schedule"] = f"{', '.join(schedule.active)} {schedule.timezone}"
        return facts
