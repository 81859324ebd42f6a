"""`AuthStore` on the bridge's SQLite database (tables in `plugin/incidents/database.py`, AUTH_SCHEMA): every query
runs on the database's own thread."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from plugin.incidents.database import AsyncDatabase, Database
from plugin.web.auth.store import AuditEntry, Session, User


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _user(row: sqlite3.Row) -> User:
    return User(
        name=row["name"], role=row["role"], stores=tuple(json.loads(row["stores"])),
        password_hash=row["password_hash"], created=_time(row["created"]), updated=_time(row["updated"]),
    )  # fmt: skip


def _session(row: sqlite3.Row) -> Session:
    return Session(
        key=row["key"], user=row["user"], csrf_token=row["csrf_token"], created=_time(row["created"]),
        last_seen=_time(row["last_seen"]), expires=_time(row["expires"]), remote=row["remote"],
    )  # fmt: skip


def _audit(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"], time=_time(row["time"]), actor=row["actor"], actor_kind=row["actor_kind"], role=row["role"],
        action=row["action"], target=row["target"], outcome=row["outcome"], remote=row["remote"], detail=row["detail"],
    )  # fmt: skip


# The queries, each run on the database thread with the synchronous Database.


def _get_user(db: Database, name: str) -> User | None:
    row = db.conn.execute("SELECT * FROM auth_users WHERE name = ?", (name,)).fetchone()
    return None if row is None else _user(row)


def _list_users(db: Database) -> list[User]:
    return [_user(r) for r in db.conn.execute("SELECT * FROM auth_users ORDER BY name")]


def _user_values(user: User) -> tuple[Any, ...]:
    return (user.role, json.dumps(list(user.stores)), user.password_hash, _iso(user.created), _iso(user.updated))


def _add_user(db: Database, user: User) -> bool:
    with db.conn:
        cur = db.conn.execute(
            "INSERT OR IGNORE INTO auth_users (name, role, stores, password_hash, created, updated)"
            " VALUES (?,?,?,?,?,?)",
            (user.name, *_user_values(user)),
        )
        return cur.rowcount == 1


def _update_user(db: Database, user: User) -> bool:
    with db.conn:
        cur = db.conn.execute(
            "UPDATE auth_users SET role=?, stores=?, password_hash=?, updated=? WHERE name=?",
            (user.role, json.dumps(list(user.stores)), user.password_hash, _iso(user.updated), user.name),
        )
        return cur.rowcount == 1


def _remove_user(db: Database, name: str) -> bool:
    with db.conn:
        db.conn.execute("DELETE FROM auth_sessions WHERE user = ?", (name,))
        return db.conn.execute("DELETE FROM auth_users WHERE name = ?", (name,)).rowcount == 1


def _add_session(db: Database, s: Session) -> None:
    with db.conn:
        db.conn.execute(
            "INSERT INTO auth_sessions (key, user, csrf_token, created, last_seen, expires, remote)"
            " VALUES (?,?,?,?,?,?,?)",
            (s.key, s.user, s.csrf_token, _iso(s.created), _iso(s.last_seen), _iso(s.expires), s.remote),
        )


def _get_session(db: Database, key: str) -> Session | None:
    row = db.conn.execute("SELECT * FROM auth_sessions WHERE key = ?", (key,)).fetchone()
    return None if row is None else _session(row)


def _touch_session(db: Database, key: str, last_seen: datetime) -> None:
    with db.conn:
        db.conn.execute("UPDATE auth_sessions SET last_seen = ? WHERE key = ?", (_iso(last_seen), key))


def _remove_session(db: Database, key: str) -> None:
    with db.conn:
        db.conn.execute("DELETE FROM auth_sessions WHERE key = ?", (key,))


def _remove_sessions_of(db: Database, user: str) -> int:
    with db.conn:
        return db.conn.execute("DELETE FROM auth_sessions WHERE user = ?", (user,)).rowcount


def _purge_sessions(db: Database, now: datetime, idle_before: datetime) -> int:
    with db.conn:
        cur = db.conn.execute(
            "DELETE FROM auth_sessions WHERE expires <= ? OR last_seen < ?", (_iso(now), _iso(idle_before))
        )
        return cur.rowcount


def _add_audit(db: Database, e: AuditEntry) -> None:
    with db.conn:
        db.conn.execute(
            "INSERT INTO audit_log (time, actor, actor_kind, role, action, target, outcome, remote, detail)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (_iso(e.time), e.actor, e.actor_kind, e.role, e.action, e.target, e.outcome, e.remote, e.detail),
        )


def _audit_entries(db: Database, limit: int, before_id: int | None) -> list[AuditEntry]:
    if before_id is None:
        rows = db.conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = db.conn.execute("SELECT * FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?", (before_id, limit))
    return [_audit(r) for r in rows]


class SqliteAuthStore:
    """The auth core's `AuthStore` on the bridge's database."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db

    async def get_user(self, name: str) -> User | None:
        """The user with this name."""
        return await self.db.call(_get_user, self.db.sync, name)

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        return await self.db.call(_list_users, self.db.sync)

    async def add_user(self, user: User) -> bool:
        """Insert a user; False when the name is taken."""
        return await self.db.call(_add_user, self.db.sync, user)

    async def update_user(self, user: User) -> bool:
        """Replace a user's role, stores and hash; False when there is no such user."""
        return await self.db.call(_update_user, self.db.sync, user)

    async def remove_user(self, name: str) -> bool:
        """Delete a user and their sessions in one transaction."""
        return await self.db.call(_remove_user, self.db.sync, name)

    async def add_session(self, session: Session) -> None:
        """Store a new session."""
        await self.db.call(_add_session, self.db.sync, session)

    async def get_session(self, key: str) -> Session | None:
        """The session with this key."""
        return await self.db.call(_get_session, self.db.sync, key)

    async def touch_session(self, key: str, last_seen: datetime) -> None:
        """Record that the session was used."""
        await self.db.call(_touch_session, self.db.sync, key, last_seen)

    async def remove_session(self, key: str) -> None:
        """End one session."""
        await self.db.call(_remove_session, self.db.sync, key)

    async def remove_sessions_of(self, user: str) -> int:
        """End every session of a user."""
        return await self.db.call(_remove_sessions_of, self.db.sync, user)

    async def purge_sessions(self, now: datetime, idle_before: datetime) -> int:
        """Delete ended sessions."""
        return await self.db.call(_purge_sessions, self.db.sync, now, idle_before)

    async def add_audit(self, entry: AuditEntry) -> None:
        """Append an audit row."""
        await self.db.call(_add_audit, self.db.sync, entry)

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Audit rows newest first."""
        return await self.db.call(_audit_entries, self.db.sync, limit, before_id)
