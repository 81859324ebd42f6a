"""Who may see what at head office: its roles (admin, loss-prevention analyst, store manager) on the shared login's
permissions (plugin/web/auth/roles.py), and the stores a signed-in person may see. Every page, API call and export
asks `require_store` or `visible` before it reads a store's data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web

from plugin.web.auth.middleware import principal_of
from plugin.web.auth.roles import AUDIT_READ, FEEDBACK_WRITE, Principal, Role, roles

HQ_READ = "hq:read"  # the dashboards, incidents, their pictures and exports (within the user's stores)
USERS_ADMIN = "hq:users"  # reserved for managing users from the web (today: `storesight hq users`)

HQ_ROLES: Mapping[str, Role] = roles(
    Role("admin", frozenset({HQ_READ, FEEDBACK_WRITE, AUDIT_READ, USERS_ADMIN}), "everything, and the audit log"),
    Role("analyst", frozenset({HQ_READ, FEEDBACK_WRITE}), "loss prevention: every store's dashboards and verdicts"),
    Role("store_manager", frozenset({HQ_READ, FEEDBACK_WRITE}), "their own stores' dashboards and verdicts"),
)
ALL_STORE_ROLES = frozenset({"admin", "analyst"})  # these see the whole chain whatever their store list says


def principal(request: web.Request) -> Principal:
    """The signed-in user or token of a request the middleware let through (401 when there is none)."""
    p = principal_of(request)
    if p is None:
        raise web.HTTPUnauthorized(text="sign in first")
    return p


def sees(p: Principal, store_id: str) -> bool:
    """Whether this person may see the store's data: admins and analysts the whole chain, a store manager their
    own stores only."""
    return p.role.name in ALL_STORE_ROLES or (not p.scope.all and store_id in p.scope.stores)


def all_stores(p: Principal) -> bool:
    """Whether this person sees the whole chain."""
    return p.role.name in ALL_STORE_ROLES


def visible(p: Principal, store_ids: Iterable[str]) -> list[str]:
    """The stores of `store_ids` this person may see, in order."""
    return [s for s in store_ids if sees(p, s)]


def require_store(p: Principal, store_id: str) -> None:
    """404 (not 403: a store manager does not learn which other store ids exist) unless the store is visible."""
    if not sees(p, store_id):
        raise web.HTTPNotFound(text=f"no store {store_id!r}")
