"""Zone intrusion: a person enters a zone while the rule is armed (its schedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from plugin.config import ZoneIntrusionRuleConfig
from plugin.rules.base import Presence, ZonePresenceRule

RULE_KEY = "zone_intrusion"


class ZoneIntrusionRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside (debounce against a box flickering over the edge)."""

    type_key: ClassVar[str] = RULE_KEY
    config: ZoneIntrusionRuleConfig

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s

    def facts(self, track_id: int, p: Presence, at: datetime) -> dict[str, Any]:
        """Adds the armed hours, so the operator sees why presence alone was an incident."""
        facts = super().facts(track_id, p, at)
        schedule = self.config.schedule
        if schedule is not None:
            facts["schedule"] = f"{', '.join(schedule.active)} {schedule.timezone}"
        return facts
