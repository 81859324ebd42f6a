"""The request path of every web request: the Host check (DNS rebinding), who is asking (bearer token or session),
the route's permission (each route declares one: `add_route`; an undeclared route is refused), CSRF on mutating
console requests, the audit row of every mutating call, and the security headers on every response."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import hdrs, web

from plugin.web.auth.roles import PUBLIC, Principal
from plugin.web.auth.service import AUTH, Auth
from plugin.web.auth.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, expired_cookie, read_cookie, same_secret
from plugin.web.auth.store import AuditEntry

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"
# request-scoped values this package sets
_PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("storesight.principal")
_NONCE = web.RequestKey("storesight.csp_nonce", str)
_AUDITED = web.RequestKey("storesight.audited", bool)
_STALE_SESSION = web.RequestKey("storesight.stale_session", bool)
_SECRET_QUERY = frozenset({"token", "access_token", "api_key", "apikey", "auth"})


@dataclass(frozen=True)
class Guard:
    """A route's rule: the permission it needs; `page`: an anonymous browser is sent to sign in instead of a 401."""

    permission: str
    page: bool = False


ROUTE_GUARDS: web.AppKey[dict[tuple[str, str], Guard]] = web.AppKey("route_guards")


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, permission: str, *, page: bool = False
) -> web.AbstractRoute:
    """Register a route with the permission it needs (GET also answers HEAD, under the same rule)."""
    guards = app.get(ROUTE_GUARDS)
    if guards is None:
        guards = app[ROUTE_GUARDS] = {}
    route = app.router.add_get(path, handler) if method == "GET" else app.router.add_route(method, path, handler)
    canonical = route.resource.canonical if route.resource is not None else path
    guards[(method, canonical)] = Guard(permission, page)
    if method == "GET":
        guards[("HEAD", canonical)] = Guard(permission, page)
    return route


def principal_of(request: web.Request) -> Principal | None:
    """Who the request acts as (None: anonymous, on a public route)."""
    return request.get(_PRINCIPAL)


def csp_nonce(request: web.Request) -> str:
    """This response's CSP nonce, for a page's own <style> or <script> element."""
    nonce = request.get(_NONCE)
    if nonce is None:
        nonce = request[_NONCE] = secrets.token_urlsafe(16)
    return nonce


def mark_audited(request: web.Request) -> None:
    """The handler wrote its own, more telling audit row (sign-in, sign-out): the middleware adds none."""
    request[_AUDITED] = True


def host_name(header: str | None) -> str | None:
    """The name in a Host header, lower case, without port or brackets; None when unusable."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8080
        end = header.find("]")
        return header[1:end] if end > 0 else None
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".") or None


def safe_next(target: str | None, home: str) -> str:
    """A redirect target from ?next=: a path on this site only (never //host or a scheme), else `home`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else home


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _remote(request: web.Request) -> str | None:
    return request.remote


async def _identify(request: web.Request, auth: Auth) -> tuple[Principal | None, web.Response | None]:
    """The principal from the Authorization header, else from the session cookie; or the 401 to answer."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, _error(401, "Authorization must be 'Bearer <token>'", **{"WWW-Authenticate": "Bearer"})
        principal = auth.token_principal(value.strip())
        if principal is None:
            return None, _error(401, "wrong bearer token", **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return principal, None
    session_id = read_cookie(request, SESSION_COOKIE, auth.settings.tls)
    if session_id:
        principal = await auth.session_principal(session_id)
        if principal is None:
            request[_STALE_SESSION] = True
        return principal, None
    return None, None


async def _csrf_ok(request: web.Request, principal: Principal) -> bool:
    """A mutating request from a browser session carries the session's CSRF token (header or form field)."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)  # aiohttp keeps the parsed form for the handler
        given = value if isinstance(value, str) else None
    return same_secret(given, principal.csrf_token)


def origin_allowed(request: web.Request, auth: Auth) -> bool:
    """A browser's Origin (when it sends one) names a host this application answers to."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    if origin == "null":
        return False
    return host_name(urlsplit(origin).netloc) in auth.settings.allowed_hosts


async def _guarded(request: web.Request, handler: Handler, auth: Auth) -> web.StreamResponse:
    """Everything between the Host check and the handler; returns the refusal or the handler's response."""
    if _SECRET_QUERY & {k.lower() for k in request.query}:
        return _error(401, "credentials are taken only in the Authorization header (Bearer), never in the URL")
    principal, refusal = await _identify(request, auth)
    if refusal is not None:
        return refusal
    request[_PRINCIPAL] = principal
    if request.match_info.http_exception is not None:  # no such route (404, 405): the router answers
        return await handler(request)
    route = request.match_info.route
    canonical = route.resource.canonical if route.resource is not None else request.path
    guard = request.app.get(ROUTE_GUARDS, {}).get((request.method, canonical))
    if guard is None:
        log.error("route %s %s declares no permission: refused (register it with add_route)", request.method, canonical)
        return _error(403, "this route declares no permission")
    if guard.permission != PUBLIC:
        if principal is None:
            if guard.page and request.method in SAFE_METHODS:
                raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='/')}")
            return _error(401, "sign in, or send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})
        if not principal.can(guard.permission):
            return _error(403, f"{principal.kind} {principal.name!r} (role {principal.role.name}) may not do this")
        store = auth.settings.store_id
        if store is not None and not principal.scope.allows(store):
            return _error(403, f"{principal.kind} {principal.name!r} may not see store {store!r}")
    # a browser session's mutating call carries its CSRF token (public forms, like sign-in, check their own)
    unsafe = request.method not in SAFE_METHODS
    if unsafe and guard.permission != PUBLIC and principal is not None and principal.kind == "user":
        if not origin_allowed(request, auth):
            return _error(403, "cross-site request refused (Origin)")
        if not await _csrf_ok(request, principal):
            return _error(403, f"missing or wrong CSRF token (send the {CSRF_HEADER} header or {CSRF_FIELD} field)")
    return await handler(request)


# Liveness probes address a container by its IP (Kubernetes' kubelet, Docker's health check): /healthz answers any
# Host. It says only {"status": "ok"}, so a rebound name learns nothing from it.
ANY_HOST_PATHS = frozenset({"/healthz"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check, identification, the route's permission, CSRF, and the audit row of a mutating call."""
    auth = request.app[AUTH]
    host_ok = host_name(request.headers.get(hdrs.HOST)) in auth.settings.allowed_hosts
    if not host_ok and request.path not in ANY_HOST_PATHS:
        # DNS rebinding: a page on another name must not read us, even through a browser on this machine
        return web.Response(status=400, text="this Host is not served here (the operator lists names in "
                            "web.allowed_hosts)\n")  # fmt: skip
    status = 500
    try:
        response = await _guarded(request, handler, auth)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if request.method not in SAFE_METHODS and not request.get(_AUDITED):
            principal = principal_of(request)
            canonical = request.path
            if request.match_info.http_exception is None and request.match_info.route.resource is not None:
                canonical = request.match_info.route.resource.canonical
            await auth.audit(
                AuditEntry(
                    datetime.now(UTC), principal.name if principal else "anonymous",
                    principal.kind if principal else "anonymous", principal.role.name if principal else None,
                    f"{request.method} {canonical}", request.path[:500], str(status), _remote(request),
                )
            )  # fmt: skip


def _csp(nonce: str | None) -> str:
    own = f" 'nonce-{nonce}'" if nonce else ""
    return (
        f"default-src 'none'; img-src 'self'; style-src 'self'{own}; script-src 'self'{own}; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def security_headers(tls: Callable[[web.Request], bool]) -> Callable[[web.Request, web.StreamResponse], Any]:
    """An on_response_prepare hook putting the security headers on every response, errors included."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Content-Security-Policy"] = _csp(request.get(_NONCE))
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own form posts
        headers["Referrer-Policy"] = "same-origin"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        headers.setdefault("Cache-Control", "no-store")  # people's pictures stay out of shared caches
        if tls(request):
            headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.get(_STALE_SESSION):  # cookies set here would come too late: aiohttp has merged them already
            headers.add(hdrs.SET_COOKIE, expired_cookie(SESSION_COOKIE, tls(request)))

    return hook
