"""Rendering head office's pages: one Jinja environment (autoescaped, strict), the signed-in user on every page."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from plugin.hq.access import all_stores, principal
from plugin.hq.tables import Table
from plugin.web.auth.handlers import page_context

TEMPLATES = Path(__file__).parent / "templates"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined)


def fmt(v: Any) -> str:
    """A figure for a table cell: rates as percentages are the caller's; floats with sense, None as a dash."""
    if v is None:
        return "\u2013"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def pct(v: float | None) -> str:
    """A share as a percentage."""
    return "\u2013" if v is None else f"{100 * v:.0f}%"


ENV.filters["fmt"] = fmt
ENV.filters["pct"] = pct


def render_html(template: str, **context: Any) -> str:
    """A template rendered to text (the PDF uses the same HTML)."""
    return ENV.get_template(template).render(**context)


def page(request: web.Request, template: str, tables: list[Table] | None = None, **context: Any) -> web.Response:
    """A page for the signed-in user, with the sign-out form and the nonce its inline style needs."""
    html = render_html(template, **page_context(request), principal=principal(request),
                       all_stores=all_stores(principal(request)), path=request.path, tables=tables or [],
                       query=request.query_string, **context)  # fmt: skip
    return web.Response(text=html, content_type="text/html")
