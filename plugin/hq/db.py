"""Head office's PostgreSQL: a connection pool, migrated on open, and the stores' credentials."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from plugin.errors import StoreSightError
from plugin.hq.migrations import migrate
from plugin.hq.pg import init_connection


def token_hash(token: str) -> str:
    """What head office keeps of a store's token: its SHA-256 (a random 32-byte token needs no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Store:
    """A store as head office knows it."""

    id: str
    name: str
    timezone: str


class HqDatabase:
    """The pool; `open()` connects and migrates."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._stores: dict[str, Store] | None = None

    @classmethod
    async def open(cls, dsn: str, min_size: int = 2, max_size: int = 10) -> HqDatabase:
        """Connect, bring the schema up to date (refusing a newer one) and return the database."""
        try:
            conn = await asyncpg.connect(dsn, timeout=15)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreSightError(f"head office cannot reach its database: {exc}") from None
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection)
        return cls(pool)

    async def close(self) -> None:
        """Close every connection."""
        await self.pool.close()

    async def add_store(self, store_id: str, name: str, timezone: str, token: str | None = None) -> str:
        """Register a store (or give it a new token); returns the token, which head office does not keep."""
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise StoreSightError(f"timezone {timezone!r} is not an IANA time zone") from None
        token = token or secrets.token_urlsafe(32)
        if len(token) < 24:
            raise StoreSightError("a store token must have at least 24 characters")
        await self.pool.execute(
            """INSERT INTO stores (id, name, timezone, token_sha256) VALUES ($1, $2, $3, $4)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone,
                   token_sha256 = excluded.token_sha256""",
            store_id,
            name,
            timezone,
            token_hash(token),
        )
        self._stores = None
        return token

    async def store_for_token(self, token: str) -> Store | None:
        """The store a token belongs to, found by the token's hash (a lookup by a SHA-256 of 32 random bytes
        leaks nothing an attacker can use, so no constant-time scan is needed)."""
        r = await self.pool.fetchrow("SELECT id, name, timezone FROM stores WHERE token_sha256 = $1", token_hash(token))
        return None if r is None else Store(r["id"], r["name"], r["timezone"])

    async def stores(self) -> dict[str, Store]:
        """Every store, by id (cached: stores are added rarely)."""
        if self._stores is None:
            rows = await self.pool.fetch("SELECT id, name, timezone FROM stores ORDER BY id")
            self._stores = {r["id"]: Store(r["id"], r["name"], r["timezone"]) for r in rows}
        return self._stores

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a query."""
        return list(await self.pool.fetch(sql, *args))
