"""The head-office application as `storesight hq serve` runs it: the app with the shipped sign-in."""

from __future__ import annotations

from aiohttp import web

from plugin.hq.access import Principal
from plugin.hq.app import new_hq_app
from plugin.hq.config import HqConfig


async def _nobody(_request: web.Request) -> Principal | None:
    # the shared login (plugin/web/auth, issue 12) provides users, sessions and CSRF; until head office uses it,
    # no request is signed in and every page answers with the sign-in page
    return None


def build_hq_app(config: HqConfig) -> web.Application:
    """Head office with every context and route."""
    return new_hq_app(config, _nobody)
