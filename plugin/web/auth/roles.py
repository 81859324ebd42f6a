"""Who may do what: permissions, roles as data (a name and a set of permissions), the stores a principal may see,
and the principal a request acts as. The bridge's roles are `BRIDGE_ROLES`; head office passes its own mapping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

# Permissions: what a route asks for. A role is a set of them; PUBLIC and SIGNED_IN are not granted by roles.
PUBLIC = "public"  # anyone, signed in or not (/healthz, the login page)
SIGNED_IN = "signed-in"  # any principal (sign out)
INCIDENTS_READ = "incidents:read"  # the console page, snapshots, /api/incidents
FEEDBACK_WRITE = "incidents:feedback"  # a verdict on an incident (confirmed, false alarm, unsure)
OUTBOX_READ = "outbox:read"
OUTBOX_WRITE = "outbox:write"  # requeue dead letters
STATUS_READ = "status:read"  # the detailed /readyz, /metrics
AUDIT_READ = "audit:read"  # the audit log (page and API)
INGEST = "ingest"  # POST business events in: /api/pos/*, /api/access/*
CONFIG_WRITE = "config:write"  # the zone editor: a camera's picture, its zones and lines, saved into the config

ALL_STORES = "*"


@dataclass(frozen=True)
class Role:
    """A named set of permissions."""

    name: str
    permissions: frozenset[str]
    description: str = ""


def roles(*items: Role) -> dict[str, Role]:
    """A role table keyed by name (names must be unique)."""
    table = {r.name: r for r in items}
    if len(table) != len(items):
        raise ValueError("two roles share a name")
    return table


BRIDGE_ROLES: Mapping[str, Role] = roles(
    Role(
        "admin",
        frozenset(
            {INCIDENTS_READ, FEEDBACK_WRITE, OUTBOX_READ, OUTBOX_WRITE, STATUS_READ, AUDIT_READ, INGEST, CONFIG_WRITE}
        ),
        "everything: the console, requeueing dead letters, the audit log, the zone editor, and the intake routes",
    ),
    Role(
        "viewer",
        frozenset({INCIDENTS_READ, FEEDBACK_WRITE, OUTBOX_READ, STATUS_READ}),
        "reads incidents, deliveries and status, and gives verdicts on incidents",
    ),
    Role("ingest", frozenset({INGEST}), "POS and door integrators: may only POST to /api/pos/* and /api/access/*"),
)


@dataclass(frozen=True)
class StoreScope:
    """The stores a principal may see: every store, or the listed ones."""

    stores: frozenset[str] = field(default_factory=lambda: frozenset({ALL_STORES}))

    @classmethod
    def of(cls, stores: Iterable[str]) -> StoreScope:
        """A scope from store ids; "*" (or nothing) means every store."""
        ids = frozenset(stores)
        return cls(ids if ids else frozenset({ALL_STORES}))

    @property
    def all(self) -> bool:
        """True when every store is visible."""
        return ALL_STORES in self.stores

    def allows(self, store_id: str) -> bool:
        """May this principal see `store_id`?"""
        return self.all or store_id in self.stores

    def as_list(self) -> list[str]:
        """Sorted store ids (["*"] for every store), for storage and display."""
        return sorted(self.stores)


PrincipalKind = Literal["user", "token"]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a signed-in user (with their session) or an API token."""

    name: str
    kind: PrincipalKind
    role: Role
    scope: StoreScope
    session_key: str | None = None  # the session's stored key, for users
    csrf_token: str | None = None  # the session's CSRF token, for users

    def can(self, permission: str) -> bool:
        """True when this principal's role grants `permission` (SIGNED_IN and PUBLIC always)."""
        return permission in (PUBLIC, SIGNED_IN) or permission in self.role.permissions
