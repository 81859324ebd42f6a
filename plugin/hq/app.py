"""Head office's aiohttp application: its resources in cleanup contexts (the database, migrated on open; the shared
login on it), and its routes, each with the permission it needs (plugin/web/auth). Stores' records come in on their
own path: /api/ingest authenticates a store by its token, not a person, so it is taken before the login's checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from plugin.hq.access import HQ_ROLES
from plugin.hq.auth_store import PgAuthStore
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase
from plugin.hq.ingest import ingest
from plugin.hq.keys import HQ_CONFIG, HQ_DB
from plugin.hq.routes import add_page_routes
from plugin.web.auth.handlers import setup_auth
from plugin.web.auth.middleware import add_route
from plugin.web.auth.roles import PUBLIC
from plugin.web.auth.service import AUTH, Auth, AuthSettings
from plugin.web.auth.transport import default_allowed_hosts
from plugin.web.auth.users import first_admin

log = logging.getLogger(__name__)
INGEST_PATH = "/api/ingest"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool, migrated before the first request."""
    db = app[HQ_DB] = await HqDatabase.open(app[HQ_CONFIG].dsn())
    yield
    await db.close()


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """The shared login on head office's database, with its roles; the first admin when there is no user."""
    config = app[HQ_CONFIG]
    store = PgAuthStore(app[HQ_DB])
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    await first_admin(store, HQ_ROLES, "admin", config.state_dir)
    settings = AuthSettings(
        title="StoreSight head office",
        allowed_hosts=default_allowed_hosts(config.host, config.allowed_hosts),
        tls=config.tls_cert is not None,
    )
    app[AUTH] = Auth(store, settings, HQ_ROLES)
    yield


@web.middleware
async def store_ingest(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A store's record goes straight to ingest (its token is the store's, checked there); everything else passes
    on to the login's checks."""
    if request.path == INGEST_PATH:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        return await ingest(request)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """Liveness, and whether the database answers."""
    await request.app[HQ_DB].pool.fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


def new_hq_app(config: HqConfig) -> web.Application:
    """The application with its contexts and routes."""
    app = web.Application(client_max_size=config.max_record_bytes)
    app[HQ_CONFIG] = config
    app.cleanup_ctx.extend([database_ctx, auth_ctx])
    setup_auth(app)
    app.middlewares.insert(0, store_ingest)  # outside the login's middleware: stores are not people
    add_route(app, "GET", "/healthz", healthz, PUBLIC)
    add_route(app, "POST", INGEST_PATH, ingest, PUBLIC)  # declared for the table; served by store_ingest
    add_page_routes(app)
    return app
