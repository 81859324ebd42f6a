"""The auth core: who a request is (a bearer token or a session cookie), signing in and out with a throttle on
failures, and the audit log. One `Auth` per web application, stored under `AUTH`; the middleware and the
handlers in this package use it, and so may the application's own handlers (head office: the scope of a user)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from aiohttp import web

from plugin.web.auth.passwords import hash_password, verify_password
from plugin.web.auth.roles import Principal, Role, StoreScope
from plugin.web.auth.sessions import new_secret, session_key
from plugin.web.auth.store import AuditEntry, AuthStore, Session

log = logging.getLogger(__name__)

TOUCH_EVERY = timedelta(seconds=60)  # a session's last use is written at most this often


@dataclass(frozen=True)
class AuthSettings:
    """How an application signs people in and which requests it takes at all."""

    title: str  # shown on the sign-in page ("StoreSight · Store 42")
    allowed_hosts: frozenset[str]  # Host header names (lower case, no port) answered; others get 400
    tls: bool  # served over HTTPS: cookies are Secure, HSTS is sent
    store_id: str | None = None  # a bridge serves one store: principals whose scope lacks it are refused
    session_max_age: timedelta = timedelta(hours=12)
    session_idle: timedelta = timedelta(hours=1)
    login_max_failures: int = 10  # failed sign-ins from one address within the window, then 429
    login_window: timedelta = timedelta(minutes=15)
    home: str = "/"  # where a sign-in without ?next= lands


@dataclass(frozen=True)
class ApiToken:
    """A configured bearer token: its name (the audit's actor), its role and the SHA-256 of its secret."""

    name: str
    role: Role
    digest: bytes
    scope: StoreScope = field(default_factory=StoreScope)

    @classmethod
    def of(cls, name: str, role: Role, secret: str, scope: StoreScope | None = None) -> ApiToken:
        """A token from its secret (only the digest is kept)."""
        return cls(name, role, hashlib.sha256(secret.encode()).digest(), scope or StoreScope())


@dataclass(frozen=True)
class SignIn:
    """A sign-in's outcome: the new session's cookie value and principal, or why not (`reason`, for the audit)."""

    session_id: str | None
    principal: Principal | None
    reason: str  # ok, unknown user, wrong password, unknown role, throttled

    @property
    def ok(self) -> bool:
        """True when a session was opened."""
        return self.session_id is not None


class Auth:
    """Authentication, sessions, the sign-in throttle and the audit log over an `AuthStore`."""

    def __init__(
        self,
        store: AuthStore,
        settings: AuthSettings,
        roles: Mapping[str, Role],
        tokens: Sequence[ApiToken] = (),
    ) -> None:
        self.store = store
        self.settings = settings
        self.roles = dict(roles)
        self.tokens = list(tokens)
        self._failures: dict[str, deque[float]] = {}

    # ---- bearer tokens

    def token_principal(self, secret: str) -> Principal | None:
        """The principal of a bearer token, or None. Every configured token is compared, in constant time."""
        digest = hashlib.sha256(secret.encode()).digest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        if found is None:
            return None
        return Principal(found.name, "token", found.role, found.scope)

    # ---- sessions

    async def session_principal(self, session_id: str) -> Principal | None:
        """The signed-in user of a session cookie, or None when the session is unknown, expired or idle, or its user
        was removed or has a role this application does not know."""
        key = session_key(session_id)
        session = await self.store.get_session(key)
        if session is None:
            return None
        now = datetime.now(UTC)
        if now >= session.expires or now - session.last_seen >= self.settings.session_idle:
            await self.store.remove_session(key)
            return None
        user = await self.store.get_user(session.user)
        if user is None:
            await self.store.remove_session(key)
            return None
        role = self.roles.get(user.role)
        if role is None:
            log.warning("user %s has role %r, which this application does not know: refused", user.name, user.role)
            return None
        if now - session.last_seen >= TOUCH_EVERY:
            await self.store.touch_session(key, now)
        return Principal(user.name, "user", role, StoreScope.of(user.stores), key, session.csrf_token)

    def throttled(self, remote: str | None) -> bool:
        """True when this address failed to sign in too often within the window."""
        window = self._failures.get(remote or "")
        if not window:
            return False
        horizon = time.monotonic() - self.settings.login_window.total_seconds()
        while window and window[0] < horizon:
            window.popleft()
        return len(window) >= self.settings.login_max_failures

    def _failed(self, remote: str | None) -> None:
        self._failures.setdefault(remote or "", deque()).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded: the oldest addresses go first
            self._failures.pop(next(iter(self._failures)))

    async def sign_in(self, name: str, password: str, remote: str | None) -> SignIn:
        """Check a user's password and open a session; every attempt is audited."""
        if self.throttled(remote):
            result = SignIn(None, None, "throttled")
        else:
            user = await self.store.get_user(name)
            verified = await verify_password(None if user is None else user.password_hash, password)
            role = None if user is None else self.roles.get(user.role)
            if user is None:
                result = SignIn(None, None, "unknown user")
            elif not verified.ok:
                result = SignIn(None, None, "wrong password")
            elif role is None:
                result = SignIn(None, None, f"unknown role {user.role!r}")
            else:
                if verified.rehash:  # parameters moved on since the hash was made: upgrade it while we have it
                    new_hash = await hash_password(password)
                    await self.store.update_user(replace(user, password_hash=new_hash, updated=datetime.now(UTC)))
                session_id, now = new_secret(), datetime.now(UTC)
                session = Session(
                    session_key(session_id), user.name, new_secret(), now, now, now + self.settings.session_max_age,
                    remote,
                )  # fmt: skip
                await self.store.purge_sessions(now, now - self.settings.session_idle)
                await self.store.add_session(session)
                principal = Principal(
                    user.name, "user", role, StoreScope.of(user.stores), session.key, session.csrf_token
                )
                result = SignIn(session_id, principal, "ok")
            if not result.ok:
                self._failed(remote)
        await self.audit(
            AuditEntry(
                datetime.now(UTC), name[:200], "user", None if result.principal is None else result.principal.role.name,
                "sign-in", name[:200], result.reason, remote,
            )
        )  # fmt: skip
        return result

    async def sign_out(self, principal: Principal, remote: str | None) -> None:
        """End the principal's session (audited)."""
        if principal.session_key is not None:
            await self.store.remove_session(principal.session_key)
        await self.audit(
            AuditEntry(datetime.now(UTC), principal.name, principal.kind, principal.role.name, "sign-out",
                       principal.name, "ok", remote)
        )  # fmt: skip

    # ---- audit

    async def audit(self, entry: AuditEntry) -> None:
        """Append to the audit log; a failure to write is logged loudly, never raised into the request."""
        try:
            await self.store.add_audit(entry)
        except Exception:
            log.exception("audit: could not store %s %s by %s", entry.action, entry.target, entry.actor)


AUTH = web.AppKey("auth", Auth)
