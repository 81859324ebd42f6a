"""Sign in, sign out, and the audit log (page and JSON), plus `setup_auth`, which puts the whole package on an
application: the middleware, the security headers and these routes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from plugin.web.auth.middleware import (
    LOGIN_PATH,
    add_route,
    auth_middleware,
    csp_nonce,
    mark_audited,
    origin_allowed,
    principal_of,
    safe_next,
    security_headers,
)
from plugin.web.auth.roles import AUDIT_READ, PUBLIC, SIGNED_IN, Principal
from plugin.web.auth.service import AUTH
from plugin.web.auth.sessions import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    new_secret,
    read_cookie,
    same_secret,
    set_cookie,
)
from plugin.web.auth.store import AuditEntry

LOGOUT_PATH = "/logout"
AUDIT_PAGE_PATH = "/audit"
MAX_FIELD = 1024  # a user name or password longer than this is not one

TEMPLATES = Path(__file__).parent / "templates"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined)


def csrf_token(request: web.Request) -> str:
    """The signed-in user's CSRF token, for a page's forms (empty for a token or an anonymous request)."""
    principal = principal_of(request)
    if principal is None or principal.csrf_token is None:
        return ""
    return principal.csrf_token


def see_other(location: str) -> web.Response:
    """A 303 redirect that can carry cookies (a returned HTTPException is deprecated, a raised one loses them in
    aiohttp 4)."""
    return web.Response(status=303, headers={"Location": location}, text=f"see {location}\n")


def _login_page(request: web.Request, status: int, error: str | None, next_: str) -> web.Response:
    auth = request.app[AUTH]
    token = new_secret()
    html = ENV.get_template("login.html").render(
        title=auth.settings.title, error=error, next=next_, csrf_field=CSRF_FIELD, csrf=token,
        nonce=csp_nonce(request), action=LOGIN_PATH,
    )  # fmt: skip
    response = web.Response(text=html, content_type="text/html", status=status)
    set_cookie(response, LOGIN_COOKIE, token, auth.settings.tls, max_age=3600)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """The sign-in page (a signed-in user goes straight on)."""
    auth = request.app[AUTH]
    next_ = safe_next(request.query.get("next"), auth.settings.home)
    if principal_of(request) is not None:
        raise web.HTTPSeeOther(next_)
    return _login_page(request, 200, None, next_)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the form (its CSRF value against the form's cookie, the Origin), then the password; open a session."""
    auth = request.app[AUTH]
    mark_audited(request)
    form = await request.post()
    name, password = str(form.get("username", ""))[:MAX_FIELD], str(form.get("password", ""))
    next_ = safe_next(str(form.get("next", "")), auth.settings.home)
    ip = request.remote
    form_ok = origin_allowed(request, auth) and same_secret(
        str(form.get(CSRF_FIELD, "")), read_cookie(request, LOGIN_COOKIE, auth.settings.tls)
    )
    if not form_ok:
        entry = AuditEntry(datetime.now(UTC), name or "anonymous", "user", None, "sign-in", name, "CSRF refused", ip)
        await auth.audit(entry)
        return _login_page(request, 403, "The sign-in form expired or came from another site. Please try again.", next_)
    if not name or not password:
        return _login_page(request, 400, "Enter your user name and password.", next_)
    result = await auth.sign_in(name, password[: MAX_FIELD + 1], ip)
    if result.reason == "throttled":
        response = _login_page(request, 429, "Too many failed sign-ins from this address. Try again later.", next_)
        response.headers["Retry-After"] = str(int(auth.settings.login_window.total_seconds()))
        return response
    if not result.ok or result.session_id is None:
        return _login_page(request, 401, "Wrong user name or password.", next_)
    response = see_other(next_)
    set_cookie(response, SESSION_COOKIE, result.session_id, auth.settings.tls)
    clear_cookie(response, LOGIN_COOKIE, auth.settings.tls)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (the middleware has checked its CSRF token) and return to the sign-in page."""
    auth = request.app[AUTH]
    principal = principal_of(request)
    mark_audited(request)
    if principal is not None:
        await auth.sign_out(principal, request.remote)
    response = see_other(LOGIN_PATH)
    clear_cookie(response, SESSION_COOKIE, auth.settings.tls)
    return response


def _limit(request: web.Request, default: int, most: int) -> tuple[int, int | None]:
    try:
        limit = max(1, min(int(request.query.get("limit", str(default))), most))
        before = request.query.get("before")
        return limit, None if before is None else int(before)
    except ValueError:
        raise web.HTTPBadRequest(text="limit and before must be integers") from None


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    doc = asdict(entry)
    doc["time"] = entry.time.isoformat()
    return doc


async def api_audit(request: web.Request) -> web.Response:
    """The audit log, newest first (?limit=, ?before=<id> for the next page)."""
    auth = request.app[AUTH]
    limit, before = _limit(request, 200, 1000)
    return web.json_response([_entry_json(e) for e in await auth.store.audit_entries(limit, before)])


async def audit_page(request: web.Request) -> web.Response:
    """The audit log as a page."""
    auth = request.app[AUTH]
    limit, before = _limit(request, 500, 1000)
    entries = await auth.store.audit_entries(limit, before)
    principal = principal_of(request)
    html = ENV.get_template("audit.html").render(
        title=auth.settings.title, entries=entries, user=principal, nonce=csp_nonce(request),
        csrf_field=CSRF_FIELD, csrf=csrf_token(request), logout=LOGOUT_PATH, home=auth.settings.home,
    )  # fmt: skip
    return web.Response(text=html, content_type="text/html")


def setup_auth(app: web.Application) -> None:
    """Put sign-in, permissions, CSRF, audit and the security headers on an application. `app[AUTH]` must be set
    before it serves (the bridge's auth context does it once the database is open)."""

    def tls(request: web.Request) -> bool:
        return AUTH in request.app and request.app[AUTH].settings.tls

    app.middlewares.append(auth_middleware)
    app.on_response_prepare.append(security_headers(tls))
    add_route(app, "GET", LOGIN_PATH, login_form, PUBLIC)
    add_route(app, "POST", LOGIN_PATH, login, PUBLIC)
    add_route(app, "POST", LOGOUT_PATH, logout, SIGNED_IN)
    add_route(app, "GET", AUDIT_PAGE_PATH, audit_page, AUDIT_READ, page=True)
    add_route(app, "GET", "/api/audit", api_audit, AUDIT_READ)


def page_context(request: web.Request) -> dict[str, Any]:
    """What a page's template needs for the signed-in bar: the user, the sign-out form's CSRF token, the nonce."""
    principal: Principal | None = principal_of(request)
    return {
        "user": principal, "csrf_field": CSRF_FIELD, "csrf": csrf_token(request), "logout": LOGOUT_PATH,
        "nonce": csp_nonce(request), "can_audit": principal is not None and principal.can(AUDIT_READ),
        "audit_page": AUDIT_PAGE_PATH,
    }  # fmt: skip
