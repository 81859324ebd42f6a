"""Rule registry: the config's `type` picks the implementation."""

from __future__ import annotations

from typing import Any

from plugin.config import RuleBase
from plugin.rules.base import Measurement, Observation, Rule, RuleHit, RuleOutput
from plugin.rules.group_entry import GroupEntryRule
from plugin.rules.line_crossing import LineCrossingRule
from plugin.rules.loitering import LoiteringRule
from plugin.rules.occupancy import OccupancyRule
from plugin.rules.zone_intrusion import ZoneIntrusionRule

RULES: dict[str, Any] = {
    cls.type_key: cls for cls in (LoiteringRule, ZoneIntrusionRule, LineCrossingRule, OccupancyRule, GroupEntryRule)
}


def build_rule(config: RuleBase) -> Rule:
    """The rule implementation for a validated rule config."""
    kind = getattr(config, "type")  # noqa: B009 - every concrete rule config has a `type` literal
    rule: Rule = RULES[kind](config)
    return rule


__all__ = ["RULES", "Measurement", "Observation", "Rule", "RuleHit", "RuleOutput", "build_rule"]
