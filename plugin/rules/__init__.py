"""Rule registry: the config's `type` picks the implementation."""

from __future__ import annotations

from plugin.config import RuleBase
from plugin.rules.base import Observation, Rule, RuleHit
from plugin.rules.loitering import LoiteringRule
from plugin.rules.zone_intrusion import ZoneIntrusionRule

RULES: dict[str, type[LoiteringRule] | type[ZoneIntrusionRule]] = {
    cls.type_key: cls for cls in (LoiteringRule, ZoneIntrusionRule)
}


def build_rule(config: RuleBase) -> Rule:
    """The rule implementation for a validated rule config."""
    kind = getattr(config, "type")  # noqa: B009 - every concrete rule config has a `type` literal
    return RULES[kind](config)


__all__ = ["RULES", "Observation", "Rule", "RuleHit", "build_rule"]
