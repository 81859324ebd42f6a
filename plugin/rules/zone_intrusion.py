"""Zone intrusion: a person enters a zone while the rule is armed (its schedule)."""

from __future__ import annotations

from typing import ClassVar

from plugin.config import ZoneIntrusionRuleConfig
from plugin.rules.base import ZonePresenceRule

RULE_KEY = "zone_intrusion"


class ZoneIntrusionRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside (debounce against a box flickering over the edge)."""

    type_key: ClassVar[str] = RULE_KEY
    config: ZoneIntrusionRuleConfig

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s
