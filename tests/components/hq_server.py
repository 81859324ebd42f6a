"""A real head office for tests: plugin/hq's application on a free 127.0.0.1 port against a fresh PostgreSQL
database. Until the shared login is used, pages get their user from a test-only authenticator: the `test-user`
cookie names one of the principals the test passed (this lives in tests/ and never ships)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiohttp import web

from adapters.sinks.hq import HqSink, HqSinkConfig
from plugin.cli.hq_synth import SynthStore, hour_incidents, hour_records, verdict_for
from plugin.hq.access import Principal
from plugin.hq.app import new_hq_app
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase
from plugin.hq.feedback import Feedback, record_feedback
from plugin.hq.keys import HQ_DB

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningHq:
    """A head office serving at `url`."""

    url: str
    app: web.Application
    runner: web.AppRunner
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> HqDatabase:
        """Its database."""
        return self.app[HQ_DB]

    async def add_store(self, store_id: str, name: str | None = None, timezone: str = "Europe/Berlin") -> str:
        """Register a store; its token."""
        token = await self.db.add_store(store_id, name or store_id.title(), timezone)
        self.tokens[store_id] = token
        return token


async def _cookie_user(principals: Mapping[str, Principal], request: web.Request) -> Principal | None:
    return principals.get(request.cookies.get("test-user", ""))


@asynccontextmanager
async def hq_server(dsn: str, principals: Mapping[str, Principal] | None = None, port: int | None = None,
                    **config: object) -> AsyncIterator[RunningHq]:  # fmt: skip
    """Head office on a free port (or `port`: a restart on the same address) until the block ends."""
    known = dict(principals or {})

    async def authenticate(request: web.Request) -> Principal | None:
        return await _cookie_user(known, request)

    app = new_hq_app(HqConfig.model_validate({"database_url": dsn, **config}), authenticate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = port or _free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    try:
        yield RunningHq(f"http://{HOST}:{port}", app, runner)
    finally:
        await runner.cleanup()


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
