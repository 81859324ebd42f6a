"""A throwaway PostgreSQL from Debian's server binaries: a cluster in a temporary folder, on 127.0.0.1 at a free port,
dying with the process that started it (PR_SET_PDEATHSIG). The tests, `storesight hq bench` and the demo use it; a
real head office points at a managed server instead (docs/hq.md). As root, initdb and the server run as the postgres
user (initdb refuses root)."""

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
from pathlib import Path
from typing import Any

import asyncpg

BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
PREFIX = "storesight-pg-"
OWNER_FILE = "owner.pid"  # the process that made the folder: when it is gone, so is the server (PDEATHSIG)


def postgres_missing() -> str | None:
    """None when Debian's PostgreSQL 15 server binaries are installed, else why not."""
    for tool in ("initdb", "postgres"):
        if not os.access(BIN / tool, os.X_OK):
            return f"{BIN / tool} not found (apt-get install postgresql)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """A child's preexec_fn: the child gets SIGQUIT when its parent dies."""
    # between fork and exec: the server gets SIGQUIT (immediate shutdown) when the process that started it dies, so a
    # killed test run or benchmark leaves no postmaster behind (the signal follows the thread that called Popen)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _server_alive(folder: Path) -> bool:
    """Whether the cluster's postmaster still runs (it may still be shutting down after its starter died)."""
    try:
        pid = int((folder / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return process_alive(pid)


def sweep_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the folders of clusters whose starter died without `stop()` (a killed test run: its server died with
    it, the folder stayed); a folder whose starter still runs is left alone. Returns what was removed."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):  # not ours to judge (being made right now, or by an older release)
            continue
        if process_alive(owner) or _server_alive(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class LocalPostgres:
    """One running cluster; `dsn(db)` for a database in it; `stop()` ends it and removes its folder."""

    def __init__(self, durable: bool = False) -> None:
        sweep_stale()
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / OWNER_FILE).write_text(f"{os.getpid()}\n")
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.durable = durable  # fsync on: for measuring; off: for tests
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._user = {"user": "postgres", "group": "postgres", "extra_groups": []}  # else the gid stays 0
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)

    def dsn(self, database: str = "postgres") -> str:
        """A connection string for the superuser, by TCP on 127.0.0.1 with a scram password."""
        return f"postgresql://postgres:{self.password}@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then the server itself (not pg_ctl, whose postmaster would outlive its starter)."""
        data, sockets, pwfile = self.root / "data", self.root / "sock", self.root / "pw"
        pwfile.write_text(self.password + "\n")
        sockets.mkdir()
        if self._user:
            pw = pwd.getpwnam("postgres")
            for p in (pwfile, sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                str(BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=60,
            **self._user,
        )
        fast = [] if self.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.root / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-h", HOST, "-k", str(sockets), *fast],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                **self._user,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
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
