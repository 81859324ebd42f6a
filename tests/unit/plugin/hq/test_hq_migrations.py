"""Head office's schema migrations against a real PostgreSQL: a fresh database is brought to the latest version,
a second run changes nothing, a newer database is refused with a clear message, two starts at once apply once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from plugin.hq.migrations import SchemaError, current_version, migrate, migrations


async def test_fresh_database_migrates_to_latest_and_again_is_a_no_op(fresh_database: str) -> None:
    latest = migrations()[-1].version
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await current_version(conn) == 0
        assert await migrate(conn) == (0, latest)
        assert await current_version(conn) == latest
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"stores", "ingest_keys", "incidents", "store_hours", "store_days", "feedback"} <= tables
        assert await migrate(conn) == (latest, latest)
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == latest
    finally:
        await conn.close()


async def test_newer_database_is_refused(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn)
        future = migrations()[-1].version + 1
        await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, 'from_the_future')", future)
        with pytest.raises(SchemaError, match=rf"schema version {future}, newer than this program's"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_two_starts_at_once_apply_each_migration_once(fresh_database: str) -> None:
    conns = [await asyncpg.connect(fresh_database) for _ in range(2)]
    try:
        await asyncio.gather(*(migrate(c) for c in conns))
        assert await conns[0].fetchval("SELECT count(*) FROM schema_version") == migrations()[-1].version
    finally:
        for c in conns:
            await c.close()


def test_migration_files_are_numbered_without_gaps() -> None:
    assert [m.version for m in migrations()] == list(range(1, len(migrations()) + 1))


async def test_an_older_database_is_upgraded_keeping_its_rows(fresh_database: str) -> None:
    first, *later = migrations()
    assert later, "there is a migration after the first to upgrade to"
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                           "applied timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        await conn.execute(first.sql)  # a head office from version 1, with a store in it
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (1, $1)", first.name)
        await conn.execute("INSERT INTO stores (id, name, timezone, token_sha256) VALUES ('s1', 'S1', 'UTC', 'x')")
        assert await migrate(conn) == (1, later[-1].version)
        assert await conn.fetchval("SELECT name FROM stores WHERE id = 's1'") == "S1"
        assert await conn.fetchval("SELECT to_regclass('auth_users') IS NOT NULL")
    finally:
        await conn.close()
