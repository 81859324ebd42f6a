"""One typed key per resource head office's application holds (plugin/hq/app.py builds them)."""

from __future__ import annotations

from aiohttp import web

from plugin.hq.access import Authenticator, Principal
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase

HQ_CONFIG = web.AppKey("hq_config", HqConfig)
HQ_DB = web.AppKey("hq_database", HqDatabase)  # from database_ctx
# how a page request's signed-in user is found (the shared login); pages refuse everyone without one
AUTHENTICATE: web.AppKey[Authenticator] = web.AppKey("hq_authenticate")
PRINCIPAL = web.RequestKey("hq_principal", Principal)  # the signed-in user, set on each page request
