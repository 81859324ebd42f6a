"""Explanations: one sentence per incident saying why it fired, rendered from a sandboxed Jinja2 template."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).parent / "templates"


def _trim0(value: float) -> str:
    return f"{value:g}"


class Explainer:
    """Renders the explanation macro of a rule type with the hit's facts; missing facts are errors, not blanks."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.tz = ZoneInfo(timezone)
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self.env.filters["clock"] = self._clock
        self.env.filters["trim0"] = _trim0
        self.module = self.env.get_template("explanations.j2").module

    def _clock(self, t: datetime) -> str:
        return t.astimezone(self.tz).strftime("%H:%M:%S")

    def render(self, rule_type: str, facts: Mapping[str, Any]) -> str:
        """The sentence for one incident state."""
        macro = getattr(self.module, rule_type, None)
        if macro is None:
            raise KeyError(f"no explanation template for rule type {rule_type!r}")
        return str(macro(dict(facts))).strip()
