"""Loitering: a person stays in a zone for at least `min_dwell_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from plugin.rules.base import CustomerRuleBase, ZonePresenceRule


class LoiteringRuleConfig(CustomerRuleBase):
    """A person stays in a zone longer than `min_dwell_s`."""

    type: Literal["loitering"]
    zone: str
    min_dwell_s: float = Field(gt=0)


class LoiteringRule(ZonePresenceRule):
    """Opens once the dwell reaches the threshold; closes when the person leaves (after the exit grace)."""

    config_model = LoiteringRuleConfig
    config: LoiteringRuleConfig

    def threshold_s(self) -> float:
        """The configured minimum dwell."""
        return self.config.min_dwell_s
