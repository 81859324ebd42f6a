"""Loitering: a person stays in a zone for at least `min_dwell_s`."""

from __future__ import annotations

from typing import ClassVar

from plugin.config import LoiteringRuleConfig
from plugin.rules.base import ZonePresenceRule

RULE_KEY = "loitering"


class LoiteringRule(ZonePresenceRule):
    """Opens once the dwell reaches the threshold; closes when the person leaves (after the exit grace)."""

    type_key: ClassVar[str] = RULE_KEY
    config: LoiteringRuleConfig

    def threshold_s(self) -> float:
        """The configured minimum dwell."""
        return self.config.min_dwell_s
