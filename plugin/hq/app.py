"""Head office's aiohttp application: its resources in cleanup contexts (the database, migrated on open), its
routes, and the check that every page has a signed-in user who may see what it shows."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from plugin.hq.access import Authenticator
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase
from plugin.hq.ingest import ingest
from plugin.hq.keys import AUTHENTICATE, HQ_CONFIG, HQ_DB, PRINCIPAL
from plugin.hq.routes import add_page_routes

log = logging.getLogger(__name__)
OPEN_PATHS = ("/healthz", "/api/ingest", "/static/")  # a store's token guards ingest; the rest needs a user
# pages run no script and load nothing from elsewhere (charts are inline SVG, pictures come from head office)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool, migrated before the first request."""
    db = app[HQ_DB] = await HqDatabase.open(app[HQ_CONFIG].dsn())
    yield
    await db.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page and API call but ingest and health needs a signed-in user; the principal rides on the request."""
    if request.path.startswith(OPEN_PATHS) or request.path == "/login":
        return await handler(request)
    principal = await request.app[AUTHENTICATE](request)
    if principal is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(text="sign in first")
        raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
    request[PRINCIPAL] = principal
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def login_page(_request: web.Request) -> web.Response:
    """Where a request without a signed-in user is sent: until head office uses the shared login (plugin/web/auth),
    it says how to sign in instead of offering a form."""
    text = (
        "Sign-in to head office comes with StoreSight's shared login. In the demo, open the one-time link "
        "`storesight hq demo` printed at start."
    )
    return web.Response(status=401, text=text, content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    """Liveness, and whether the database answers."""
    await request.app[HQ_DB].pool.fetchval("SELECT 1")
    return web.json_response({"ok": True})


def new_hq_app(config: HqConfig, authenticate: Authenticator) -> web.Application:
    """The application with its contexts and routes; `authenticate` finds a request's signed-in user."""
    app = web.Application(client_max_size=config.max_record_bytes, middlewares=[signed_in])
    app[HQ_CONFIG] = config
    app[AUTHENTICATE] = authenticate
    app.cleanup_ctx.append(database_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/login", login_page)
    app.router.add_post("/api/ingest", ingest)
    add_page_routes(app)
    return app
