"""Explanations: one sentence per incident saying why it fired, rendered from a sandboxed Jinja2 template in the
store's language: `explanations.j2` (English) and one `explanations.<language>.j2` per other language, each with
the same macros over the same facts, written natively rather than translated phrase by phrase."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).parent / "templates"
# the languages whose decimal separator is a comma (1,5 s; 59,99)
_DECIMAL_COMMA = frozenset({"de", "fr", "es"})


def template_name(language: str) -> str:
    """The template file of one language."""
    return "explanations.j2" if language == "en" else f"explanations.{language}.j2"


def shipped_languages() -> list[str]:
    """The languages with a template, English first."""
    others = sorted(p.name.split(".")[1] for p in TEMPLATES.glob("explanations.*.j2"))
    return ["en", *others]


def _trim0(value: float) -> str:
    return f"{value:g}"


class Explainer:
    """Renders the explanation macro of a rule type with the hit's facts; missing facts are errors, not blanks."""

    def __init__(self, timezone: str = "UTC", language: str = "en") -> None:
        self.tz = ZoneInfo(timezone)
        self.language = language
        comma = language in _DECIMAL_COMMA
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self.env.filters["clock"] = self._clock
        self.env.filters["trim0"] = (lambda v: _trim0(v).replace(".", ",")) if comma else _trim0
        self.env.filters["money"] = (lambda v: f"{v:.2f}".replace(".", ",")) if comma else (lambda v: f"{v:.2f}")
        self.module = self.env.get_template(template_name(language)).module

    def _clock(self, t: datetime) -> str:
        return t.astimezone(self.tz).strftime("%H:%M:%S")

    def render(self, rule_type: str, facts: Mapping[str, Any]) -> str:
        """The sentence for one incident state."""
        macro = getattr(self.module, rule_type, None)
        if macro is None:
            raise KeyError(f"no explanation template for rule type {rule_type!r}")
        return str(macro(dict(facts))).strip()
