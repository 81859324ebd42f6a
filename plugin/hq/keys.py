"""One typed key per resource head office's application holds (plugin/hq/app.py builds them)."""

from __future__ import annotations

from aiohttp import web

from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase

HQ_CONFIG = web.AppKey("hq_config", HqConfig)
HQ_DB = web.AppKey("hq_database", HqDatabase)  # from database_ctx
