"""A real PostgreSQL for tests: Debian's server binaries, a throwaway cluster in a temporary folder, listening on
127.0.0.1 at a free port (ENVIRONMENT.md, "PostgreSQL for tests"). The server dies with the test process
(PR_SET_PDEATHSIG) and is stopped at the session's end even when tests failed. Each test that needs a database gets
a fresh one (`fresh_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require

BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1


def postgres_missing() -> str | None:
    """None when Debian's PostgreSQL 15 server binaries are installed, else why not (for `require`)."""
    for tool in ("initdb", "postgres"):
        if not os.access(BIN / tool, os.X_OK):
            return f"{BIN / tool} not found (apt-get install postgresql)"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # runs in the child between fork and exec: the server gets SIGQUIT (immediate shutdown) when the test process
    # dies, so a killed pytest leaves no postmaster behind (the signal follows the thread that called Popen: main)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


class PostgresServer:
    """One running cluster; `dsn(db)` for a database in it; `stop()` ends it and removes its folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="storesight-pg-"))
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.process: subprocess.Popen[bytes] | None = None
        as_root = os.geteuid() == 0
        # initdb refuses root: as root the cluster belongs to the postgres user (without group= the gid stays 0)
        self._user: dict[str, object] = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_root else {}
        if as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)

    def dsn(self, database: str = "postgres") -> str:
        """A connection string for the superuser, by TCP on 127.0.0.1 with a scram password."""
        return f"postgresql://postgres:{self.password}@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then the server itself (not pg_ctl, whose postmaster would outlive the tests)."""
        data, sockets, pwfile = self.root / "data", self.root / "sock", self.root / "pw"
        pwfile.write_text(self.password + "\n")
        sockets.mkdir()
        if self._user:
            pw = pwd.getpwnam("postgres")
            for p in (pwfile, sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
            check=True, capture_output=True, timeout=60, **self._user,  # type: ignore[call-overload]
        )  # fmt: skip
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 (kept open for the server's lifetime)
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [str(BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-h", HOST, "-k", str(sockets),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **self._user,
        )  # fmt: skip
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import asyncpg

        async def probe() -> bool:
            try:
                conn = await asyncpg.connect(self.dsn(), timeout=2)
            except (OSError, asyncpg.PostgresError):
                return False
            await conn.close()
            return True

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.server_log()}")
            if asyncio.run(probe()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready in {START_TIMEOUT_S:.0f} s: {self.server_log()}")

    def server_log(self) -> str:
        """The server's own log (its last 2,000 characters)."""
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def create_database(self, name: str) -> str:
        """A new empty database; returns its connection string."""
        return asyncio.run(self.create_database_async(name))

    async def create_database_async(self, name: str) -> str:
        """`create_database` from inside an event loop."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), killed past the timeout; the folder is removed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL 15 on 127.0.0.1 for the whole session; stopped at its end, even on failure."""
    require(postgres_missing())
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


_counter = iter(range(1_000_000))


@pytest.fixture
def fresh_database(postgres: PostgresServer) -> str:
    """The connection string of a new, empty database for this test."""
    return postgres.create_database(f"t{os.getpid()}_{next(_counter)}")
