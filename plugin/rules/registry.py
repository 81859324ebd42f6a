"""The rule registry: one line per rule module. A rule's key is its config model's `type` literal, declared once in
its module; the root config's `rules` union and the app's wiring read this list."""

from __future__ import annotations

from plugin.rules import (
    aggression,
    blocked_exit,
    checkout_bypass,
    fall,
    group_entry,
    line_crossing,
    loitering,
    occupancy,
    queue,
    repeat_visit,
    shelf_sweep,
    staff_only,
    zone_intrusion,
)
from plugin.rules.base import BaseRule, RuleBase, RuleContext

RULES: tuple[type[BaseRule], ...] = (
    loitering.LoiteringRule,
    zone_intrusion.ZoneIntrusionRule,
    line_crossing.LineCrossingRule,
    occupancy.OccupancyRule,
    group_entry.GroupEntryRule,
    queue.QueueRule,
    checkout_bypass.CheckoutBypassRule,
    repeat_visit.RepeatVisitRule,
    blocked_exit.BlockedExitRule,
    staff_only.StaffOnlyRule,
    fall.FallRule,
    aggression.AggressionRule,
    shelf_sweep.ShelfSweepRule,
)
BY_KEY: dict[str, type[BaseRule]] = {rule.type_key: rule for rule in RULES}
RULE_CONFIGS: tuple[type[RuleBase], ...] = tuple(rule.config_model for rule in RULES)


def build_rule(config: RuleBase, context: RuleContext | None = None) -> BaseRule:
    """The rule implementation for a validated rule config, built with what it may consult."""
    return BY_KEY[config.type](config, context)
