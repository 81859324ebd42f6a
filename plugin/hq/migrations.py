"""Schema migrations: numbered SQL files (schema/NNN_name.sql, package data) applied in order, each in its own
transaction with its version row; a database whose version is newer than this program knows is refused."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from plugin.errors import StoreSightError
from plugin.hq.pg import Conn

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# one migrator at a time: two head-office processes starting together must not both apply version 1
_LOCK_ID = 0x5354_4F52  # "STOR"


class SchemaError(StoreSightError):
    """The database's schema cannot be used by this program (newer, or a migration failed)."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this program, in order (numbers must run 1, 2, 3, ... without gaps)."""
    found = []
    for entry in resources.files("plugin.hq").joinpath("schema").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mg: mg.version)
    for expected, mg in enumerate(found, start=1):
        if mg.version != expected:
            raise SchemaError(f"migration {mg.version:03d}_{mg.name}.sql: expected number {expected:03d}")
    return found


async def current_version(conn: Conn) -> int:
    """The schema version the database is at (0: empty)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: Conn) -> tuple[int, int]:
    """Bring the schema up to date; (version before, version after). Refuses a newer database."""
    known = migrations()
    latest = known[-1].version if known else 0
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"""
        )
        before = await current_version(conn)
        if before > latest:
            raise SchemaError(
                f"the head-office database is at schema version {before}, newer than this program's {latest}: "
                "upgrade StoreSight (a downgrade would lose data)"
            )
        for mg in known[before:]:
            try:
                async with conn.transaction():
                    await conn.execute(mg.sql)
                    await conn.execute(
                        "INSERT INTO schema_version (version, name) VALUES ($1, $2)", mg.version, mg.name
                    )
            except asyncpg.PostgresError as exc:
                raise SchemaError(f"migration {mg.version:03d}_{mg.name}.sql failed: {exc}") from exc
            log.info("head office: schema migrated to version %d (%s)", mg.version, mg.name)
        return before, latest
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
