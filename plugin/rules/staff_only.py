"""Staff only: a customer (a track that did not start in one of the camera's staff zones) enters a staff-only zone.

The pipeline feeds this rule customers only (see `plugin.rules.staff`), so it is zone presence with a debounce.
"""

from __future__ import annotations

from typing import ClassVar

from plugin.config import StaffOnlyRuleConfig
from plugin.rules.base import ZonePresenceRule

RULE_KEY = "staff_only"


class StaffOnlyRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside; closes when the customer has left (after the exit grace)."""

    type_key: ClassVar[str] = RULE_KEY
    config: StaffOnlyRuleConfig

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s
