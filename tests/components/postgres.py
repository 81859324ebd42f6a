"""A real PostgreSQL for tests (ENVIRONMENT.md, "PostgreSQL for tests"): Debian's server binaries, a throwaway
cluster in a temporary folder on 127.0.0.1 at a free port, started once per session by plugin/cli/pg_local.py (initdb
and the server as the postgres user when root; `postgres -D ... -p PORT -h 127.0.0.1 -k SOCKDIR` directly, not
pg_ctl; PR_SET_PDEATHSIG so it dies with the tests) and stopped at the session's end even when tests failed. Each test
that needs a database gets a fresh one (`fresh_database`), so tests never see each other's rows. In CI a missing
PostgreSQL fails the tests that need it (`require`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import require

from plugin.cli.pg_local import LocalPostgres, postgres_missing

PostgresServer = LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A running PostgreSQL 15 on 127.0.0.1 for the whole session; stopped at its end, even on failure."""
    require(postgres_missing())
    server = LocalPostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


_counter = iter(range(1_000_000))


@pytest.fixture
def fresh_database(postgres: LocalPostgres) -> str:
    """The connection string of a new, empty database for this test."""
    return postgres.create_database(f"t{os.getpid()}_{next(_counter)}")
