"""The shared login's `AuthStore` (plugin/web/auth/store.py) on head office's PostgreSQL (tables in
schema/002_auth.sql): users, sessions and the audit log, each call one statement or one transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from plugin.hq.db import HqDatabase
from plugin.web.auth.store import AuditEntry, Session, User


def _user(r: asyncpg.Record) -> User:
    return User(r["name"], r["role"], tuple(r["stores"]), r["password_hash"], r["created"], r["updated"])


def _session(r: asyncpg.Record) -> Session:
    return Session(r["key"], r["user_name"], r["csrf_token"], r["created"], r["last_seen"], r["expires"], r["remote"])


def _audit(r: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        time=r["time"],
        actor=r["actor"],
        actor_kind=r["actor_kind"],
        role=r["role"],
        action=r["action"],
        target=r["target"],
        outcome=r["outcome"],
        remote=r["remote"],
        detail=r["detail"],
        id=r["id"],
    )


class PgAuthStore:
    """Users, sessions and the audit log in head office's database."""

    def __init__(self, db: HqDatabase) -> None:
        self.pool = db.pool

    async def get_user(self, name: str) -> User | None:
        """The user with this name."""
        r = await self.pool.fetchrow("SELECT * FROM auth_users WHERE name = $1", name)
        return None if r is None else _user(r)

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        return [_user(r) for r in await self.pool.fetch("SELECT * FROM auth_users ORDER BY name")]

    async def add_user(self, user: User) -> bool:
        """Insert a user; False when the name is taken."""
        added = await self.pool.fetchval(
            """INSERT INTO auth_users (name, role, stores, password_hash, created, updated)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING true""",
            user.name,
            user.role,
            list(user.stores),
            user.password_hash,
            user.created,
            user.updated,
        )
        return bool(added)

    async def update_user(self, user: User) -> bool:
        """Replace a user's role, stores and hash (by name); False when there is no such user."""
        status = await self.pool.execute(
            "UPDATE auth_users SET role = $2, stores = $3, password_hash = $4, updated = $5 WHERE name = $1",
            user.name,
            user.role,
            list(user.stores),
            user.password_hash,
            user.updated,
        )
        return status.endswith(" 1")

    async def remove_user(self, name: str) -> bool:
        """Delete a user and (by the foreign key) their sessions; False when there was no such user."""
        return (await self.pool.execute("DELETE FROM auth_users WHERE name = $1", name)).endswith(" 1")

    async def add_session(self, session: Session) -> None:
        """Store a new session."""
        s = session
        await self.pool.execute(
            """INSERT INTO auth_sessions (key, user_name, csrf_token, created, last_seen, expires, remote)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            s.key,
            s.user,
            s.csrf_token,
            s.created,
            s.last_seen,
            s.expires,
            s.remote,
        )

    async def get_session(self, key: str) -> Session | None:
        """The session with this key (expired ones too: the caller judges)."""
        r = await self.pool.fetchrow("SELECT * FROM auth_sessions WHERE key = $1", key)
        return None if r is None else _session(r)

    async def touch_session(self, key: str, last_seen: datetime) -> None:
        """Record that the session was used."""
        await self.pool.execute("UPDATE auth_sessions SET last_seen = $2 WHERE key = $1", key, last_seen)

    async def remove_session(self, key: str) -> None:
        """End one session."""
        await self.pool.execute("DELETE FROM auth_sessions WHERE key = $1", key)

    async def remove_sessions_of(self, user: str) -> int:
        """End every session of a user; how many."""
        status = await self.pool.execute("DELETE FROM auth_sessions WHERE user_name = $1", user)
        return int(status.split()[-1])

    async def purge_sessions(self, now: datetime, idle_before: datetime) -> int:
        """Delete sessions past their end or unused since `idle_before`; how many."""
        status = await self.pool.execute(
            "DELETE FROM auth_sessions WHERE expires <= $1 OR last_seen < $2", now, idle_before
        )
        return int(status.split()[-1])

    async def add_audit(self, entry: AuditEntry) -> None:
        """Append an audit row."""
        e = entry
        await self.pool.execute(
            """INSERT INTO audit_log (time, actor, actor_kind, role, action, target, outcome, remote, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            e.time,
            e.actor,
            e.actor_kind,
            e.role,
            e.action,
            e.target,
            e.outcome,
            e.remote,
            e.detail,
        )

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Audit rows newest first, at most `limit`, older than `before_id` when given."""
        if before_id is None:
            rows = await self.pool.fetch("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1", limit)
        else:
            rows = await self.pool.fetch(
                "SELECT * FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2", before_id, limit
            )
        return [_audit(r) for r in rows]
