"""Server-side sessions and CSRF: random ids in an HttpOnly, SameSite cookie (Secure and `__Host-` under TLS), the
database holding only their SHA-256; a per-session CSRF token that every mutating console request must carry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import SimpleCookie

from aiohttp import web

SESSION_COOKIE = "storesight_session"
LOGIN_COOKIE = "storesight_login"  # the sign-in form's own CSRF value (double submit: no session exists yet)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def new_secret() -> str:
    """A random URL-safe value with 256 bits of entropy (session ids, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def session_key(session_id: str) -> str:
    """What the database keeps for a session id: its SHA-256, so a copy of the database opens no session."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either side is missing or empty."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())


def cookie_name(base: str, secure: bool) -> str:
    """Under TLS the `__Host-` prefix: the browser then takes the cookie only if Secure, for this host, on path /."""
    return f"__Host-{base}" if secure else base


def set_cookie(response: web.StreamResponse, base: str, value: str, secure: bool, max_age: int | None = None) -> None:
    """Set one of our cookies: HttpOnly, SameSite=Lax (Strict would sign people out when they follow a link from the
    VMS), path /, Secure under TLS; no Max-Age for the session (it ends with the browser and on the server)."""
    response.set_cookie(
        cookie_name(base, secure), value, httponly=True, samesite="Lax", secure=secure, path="/", max_age=max_age
    )


def clear_cookie(response: web.StreamResponse, base: str, secure: bool) -> None:
    """Ask the browser to drop one of our cookies."""
    response.del_cookie(cookie_name(base, secure), path="/", secure=secure, httponly=True, samesite="Lax")


def expired_cookie(base: str, secure: bool) -> str:
    """A Set-Cookie value that drops one of our cookies (for a header written directly)."""
    name = cookie_name(base, secure)
    jar: SimpleCookie = SimpleCookie()
    jar[name] = ""
    morsel = jar[name]
    attributes = {"path": "/", "max-age": "0", "expires": "Thu, 01 Jan 1970 00:00:00 GMT", "httponly": True,
                  "samesite": "Lax", "secure": secure}  # fmt: skip
    for key, value in attributes.items():
        morsel[key] = value
    return morsel.OutputString()


def read_cookie(request: web.Request, base: str, secure: bool) -> str | None:
    """One of our cookies from the request, under its TLS or plain name."""
    return request.cookies.get(cookie_name(base, secure))
