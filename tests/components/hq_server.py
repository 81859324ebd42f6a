"""A real head office for tests: plugin/hq's application on a free 127.0.0.1 port against a fresh PostgreSQL
database, with the shared login: the test's users are created through it (argon2id) and sign in through its form
(`RunningHq.session`), so every page is read as a real signed-in person would."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from adapters.sinks.hq import HqSink, HqSinkConfig
from plugin.cli.hq_bench import sign_in
from plugin.cli.hq_synth import SynthStore, hour_incidents, hour_records, verdict_for
from plugin.hq.access import HQ_ROLES
from plugin.hq.app import new_hq_app
from plugin.hq.auth_store import PgAuthStore
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase
from plugin.hq.feedback import Feedback, record_feedback
from plugin.hq.keys import HQ_DB
from plugin.web.auth.users import Actor, add_user

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


PASSWORD = "correct horse battery staple"  # every test user's


@dataclass
class RunningHq:
    """A head office serving at `url`."""

    url: str
    app: web.Application
    runner: web.AppRunner
    tokens: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, tuple[aiohttp.ClientSession, str]] = field(default_factory=dict)

    @property
    def db(self) -> HqDatabase:
        """Its database."""
        return self.app[HQ_DB]

    async def add_store(self, store_id: str, name: str | None = None, timezone: str = "Europe/Berlin") -> str:
        """Register a store; its token."""
        token = await self.db.add_store(store_id, name or store_id.title(), timezone)
        self.tokens[store_id] = token
        return token

    async def add_user(self, name: str, role: str, stores: Sequence[str] = ()) -> None:
        """A user of the shared login (password PASSWORD)."""
        await add_user(PgAuthStore(self.db), HQ_ROLES, Actor("test", "cli", "local"), name, role, PASSWORD, stores)

    async def session(self, user: str) -> tuple[aiohttp.ClientSession, str]:
        """A browser-like session signed in as `user` through the sign-in form, and its CSRF token (kept open)."""
        if user not in self.sessions:
            http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            csrf = await sign_in(http, self.url, user, PASSWORD)
            self.sessions[user] = (http, csrf)
        return self.sessions[user]


@asynccontextmanager
async def hq_server(dsn: str, users: Mapping[str, tuple[str, Sequence[str]]] | None = None, port: int | None = None,
                    **config: object) -> AsyncIterator[RunningHq]:  # fmt: skip
    """Head office on a free port (or `port`: a restart on the same address) until the block ends, with `users`
    ({name: (role, stores)}) created."""
    state = Path(tempfile.mkdtemp(prefix="storesight-hq-state-"))  # the first admin's password file goes here
    app = new_hq_app(HqConfig.model_validate({"database_url": dsn, "state_dir": str(state), **config}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = port or _free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    running = RunningHq(f"http://{HOST}:{port}", app, runner)
    try:
        for name, (role, stores) in (users or {}).items():
            if await PgAuthStore(running.db).get_user(name) is None:
                await running.add_user(name, role, stores)
        yield running
    finally:
        for http, _ in running.sessions.values():
            await http.close()
        await runner.cleanup()
        shutil.rmtree(state, ignore_errors=True)


def start_state(incident: dict[str, object]) -> dict[str, object]:
    """The start state change of a synthetic incident (its JPEG rides on the start)."""
    return incident | {"state": "start", "seq": 0, "end": None}


def end_state(incident: dict[str, object]) -> dict[str, object]:
    """The end state change (no JPEG: head office keeps the start's)."""
    return incident | {"snapshot_jpeg": None}


async def seed(hq: RunningHq, stores: list[SynthStore], start: datetime, hours: int, snapshot: bytes | None,
               verdicts: bool = True) -> int:  # fmt: skip
    """Send `hours` of synthetic records and incidents for each store through the hq sink (real HTTP, real ingest);
    give about a third of the incidents a head-office verdict. Returns how many records were sent."""
    sent = 0
    for store in stores:
        if store.id not in hq.tokens:
            await hq.add_store(store.id, store.name, store.timezone)
        sink = HqSink(HqSinkConfig(kind="hq", id="hq", url=hq.url, store=store.id, token=hq.tokens[store.id]))
        try:
            for h in range(hours):
                hour = start + timedelta(hours=h)
                for inc in hour_incidents(store, hour, snapshot):
                    await sink.publish_record(f"{inc['id']}:start:0", "incident", start_state(inc))
                    await sink.publish_record(f"{inc['id']}:end:1", "incident", end_state(inc))
                    sent += 2
                    judged = verdict_for(store, inc) if verdicts else None
                    if judged is not None:
                        async with hq.db.pool.acquire() as conn:
                            await record_feedback(conn, Feedback(
                                store.id, str(inc["id"]), judged[0], judged[1], "", "analyst", "hq",  # type: ignore[arg-type]
                                datetime.fromisoformat(str(inc["end"])), str(inc["rule_id"]), str(inc["type"]),
                                str(inc["camera"]), datetime.fromisoformat(str(inc["start"])),
                            ))  # fmt: skip
                for kind, key, data in hour_records(store, hour):
                    await sink.publish_record(key, kind, data)
                    sent += 1
        finally:
            await sink.close()
    return sent
