"""Staff only: a customer (a track that did not start in one of the camera's staff zones) enters a staff-only zone.

The pipeline feeds this rule customers only (see `plugin.rules.staff`), so it is zone presence with a debounce.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from plugin.rules.base import RuleBase, ZonePresenceRule


class StaffOnlyRuleConfig(RuleBase):
    """A customer (a track that did not start in one of the camera's `staff_zones`) enters a staff-only zone."""

    type: Literal["staff_only"]
    zone: str
    min_presence_s: float = Field(default=1.0, ge=0, description="debounce: time inside before it counts")

    def excludes_staff(self) -> bool:
        """Always: staff are who may be there."""
        return True


class StaffOnlyRule(ZonePresenceRule):
    """Opens after `min_presence_s` inside; closes when the customer has left (after the exit grace)."""

    config_model = StaffOnlyRuleConfig
    config: StaffOnlyRuleConfig

    def threshold_s(self) -> float:
        """The debounce time."""
        return self.config.min_presence_s
