"""Who is looking: a signed-in person's role and the stores they may see. Every page, API call and export asks the
principal before it reads a store's data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Role = Literal["admin", "analyst", "store_manager"]
ROLES: tuple[Role, ...] = ("admin", "analyst", "store_manager")


@dataclass(frozen=True)
class Principal:
    """A signed-in user: admins and loss-prevention analysts see every store, a store manager only their own."""

    user: str
    role: Role
    stores: frozenset[str] = frozenset()
    csrf: str = ""  # the session's CSRF token: every form carries it back

    @property
    def all_stores(self) -> bool:
        """Whether the role sees the whole chain."""
        return self.role in ("admin", "analyst")

    def sees(self, store_id: str) -> bool:
        """Whether this person may see the store's data."""
        return self.all_stores or store_id in self.stores

    def visible(self, store_ids: Iterable[str]) -> list[str]:
        """The stores of `store_ids` this person may see, in order."""
        return [s for s in store_ids if self.sees(s)]


# How a request's principal is found: the shared login (plugin/web/auth) provides it; None = not signed in
Authenticator = Callable[[web.Request], Awaitable[Principal | None]]


def require_store(principal: Principal, store_id: str) -> None:
    """404 (not 403: a store manager does not learn which other store ids exist) unless the store is visible."""
    if not principal.sees(store_id):
        raise web.HTTPNotFound(text=f"no store {store_id!r}")
