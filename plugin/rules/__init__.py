"""Rule registry: the config's `type` picks the implementation."""

from __future__ import annotations

from typing import Any

from plugin.config import RuleBase
from plugin.rules.aggression import AggressionRule
from plugin.rules.base import Measurement, Observation, Rule, RuleHit, RuleOutput
from plugin.rules.blocked_exit import BlockedExitRule
from plugin.rules.checkout_bypass import CheckoutBypassRule
from plugin.rules.fall import FallRule
from plugin.rules.group_entry import GroupEntryRule
from plugin.rules.line_crossing import LineCrossingRule
from plugin.rules.loitering import LoiteringRule
from plugin.rules.occupancy import OccupancyRule
from plugin.rules.queue import QueueRule
from plugin.rules.repeat_visit import RepeatVisitRule
from plugin.rules.shelf_sweep import ShelfSweepRule
from plugin.rules.staff import StaffFilter
from plugin.rules.staff_only import StaffOnlyRule
from plugin.rules.zone_intrusion import ZoneIntrusionRule

RULES: dict[str, Any] = {
    cls.type_key: cls
    for cls in (
        LoiteringRule,
        ZoneIntrusionRule,
        LineCrossingRule,
        OccupancyRule,
        GroupEntryRule,
        QueueRule,
        CheckoutBypassRule,
        RepeatVisitRule,
        BlockedExitRule,
        StaffOnlyRule,
        FallRule,
        AggressionRule,
        ShelfSweepRule,
    )
}


def build_rule(config: RuleBase) -> Rule:
    """The rule implementation for a validated rule config."""
    kind = getattr(config, "type")  # noqa: B009 - every concrete rule config has a `type` literal
    rule: Rule = RULES[kind](config)
    return rule


__all__ = ["RULES", "Measurement", "Observation", "Rule", "RuleHit", "RuleOutput", "StaffFilter", "build_rule"]
