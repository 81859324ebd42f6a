"""What the auth core stores, and the small protocol a database implements to hold it: users, sessions and audit
rows. The bridge implements it on its SQLite database (`plugin/web/auth/sqlite.py`); head office on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class User:
    """A person who signs in: name, role name, the stores they may see (["*"]: all) and their argon2 hash."""

    name: str
    role: str
    stores: tuple[str, ...]
    password_hash: str
    created: datetime
    updated: datetime


@dataclass(frozen=True)
class Session:
    """A signed-in browser. `key` is the SHA-256 of the cookie's id: the database never holds a usable id."""

    key: str
    user: str
    csrf_token: str
    created: datetime
    last_seen: datetime
    expires: datetime  # the absolute end; idleness ends it sooner
    remote: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One audited act: who (actor, its kind and role), what (action, target), the outcome, when, from where."""

    time: datetime
    actor: str  # a user or token name, "anonymous", or the OS user for CLI acts ("cli:root")
    actor_kind: str  # user, token, anonymous, cli, system
    role: str | None
    action: str  # "POST /api/outbox/retry", "sign-in", "sign-out", "user-add", ...
    target: str  # the path, or the user acted on
    outcome: str  # the HTTP status, or ok / a reason
    remote: str | None  # the peer's address ("local" for the CLI)
    detail: str | None = None
    id: int | None = None  # given by the store


class AuthStore(Protocol):
    """Users, sessions and the audit log, as the auth core needs them. Every method is a coroutine; a write is
    committed when it returns."""

    async def get_user(self, name: str) -> User | None:
        """The user with this name."""
        ...

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        ...

    async def add_user(self, user: User) -> bool:
        """Insert a user; False when the name is taken."""
        ...

    async def update_user(self, user: User) -> bool:
        """Replace a user's role, stores and hash (by name); False when there is no such user."""
        ...

    async def remove_user(self, name: str) -> bool:
        """Delete a user and their sessions; False when there was no such user."""
        ...

    async def add_session(self, session: Session) -> None:
        """Store a new session."""
        ...

    async def get_session(self, key: str) -> Session | None:
        """The session with this key (expired ones too: the caller judges)."""
        ...

    async def touch_session(self, key: str, last_seen: datetime) -> None:
        """Record that the session was used."""
        ...

    async def remove_session(self, key: str) -> None:
        """End one session."""
        ...

    async def remove_sessions_of(self, user: str) -> int:
        """End every session of a user (their password changed, or they were removed); how many."""
        ...

    async def purge_sessions(self, now: datetime, idle_before: datetime) -> int:
        """Delete sessions past their end or unused since `idle_before`; how many."""
        ...

    async def add_audit(self, entry: AuditEntry) -> None:
        """Append an audit row."""
        ...

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Audit rows newest first, at most `limit`, older than `before_id` when given (paging)."""
        ...
