"""The hq sink through the real outbox into a real head office on PostgreSQL: incidents with their evidence and
the hourly records arrive exactly once, keyed, across a head-office outage, a lost reply and a bridge restart;
console feedback travels the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from components.hq_server import hq_server

from adapters.sinks.hq import HqSink, HqSinkConfig
from plugin.app import auth_ctx, database_ctx, new_app, sinks_ctx
from plugin.cli.hq_bench import sign_in
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.inference.server import free_port
from plugin.insights.hq_feed import HourlyRecords
from plugin.insights.rollups import InsightsRecorder
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink
from plugin.types import BusinessEvent, Incident
from plugin.web.keys import DATABASE, OUTBOX
from plugin.web.routes import setup_routes

API_TOKEN = "console-api-token-0123456789"
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=10)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def jpeg(path: Path) -> str:
    """A real JPEG evidence file."""
    image = np.full((48, 64, 3), 90, np.uint8)
    cv2.rectangle(image, (10, 10), (40, 40), (0, 0, 255), 2)
    path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    return str(path)


def incident(n: int, state: str = "start", snapshot: str | None = None) -> Incident:
    """An incident state change."""
    return Incident(
        id=f"inc-{n}", rule_id="table-dwell", type="loitering", camera="cam1", start=T0 + timedelta(minutes=n),
        state=state, seq=0 if state == "start" else 1, explanation=f"Person #{n} stayed", track_ids=(n,),  # type: ignore[arg-type]
        end=T0 + timedelta(minutes=n, seconds=90) if state == "end" else None, zone="table", snapshot=snapshot,
        details={"dwell_s": 90.0} if state == "end" else {},
    )  # fmt: skip


def hq_sink(url: str, token: str, store: str = "berlin-1") -> HqSink:
    """This store's sink."""
    return HqSink(HqSinkConfig(kind="hq", id="hq", url=url, store=store, token=token))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """The bridge's SQLite database."""
    db = AsyncDatabase(tmp_path / "db.sqlite")
    yield db
    await db.close()


# the evidence as taken: these tests make no blurred copy (the incident manager does; test_privacy_blur.py covers it)
ORIGINAL: dict[str, Literal["blur", "original"]] = {"hq": "original"}


async def drain(db: AsyncDatabase, sinks: dict[str, IncidentSink]) -> OutboxWorker:
    """Run an outbox worker until nothing is pending."""
    worker = OutboxWorker(db, sinks, Metrics(), FAST, privacy=ORIGINAL)
    task = asyncio.create_task(worker.run())
    try:
        assert await worker.wait_drained(30.0), await db.call(db.sync.deliveries, None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return worker


async def test_outage_then_delivery_exactly_once_with_snapshot(fresh_database: str, database: AsyncDatabase,
                                                               tmp_path: Path) -> None:  # fmt: skip
    port = free_port()
    snap = jpeg(tmp_path / "e.jpg")
    for n in range(3):
        await database.call(database.sync.save, incident(n, snapshot=snap), ["hq"])
        await database.call(database.sync.save, incident(n, "end"), ["hq"])
    async with hq_server(fresh_database) as first:  # register the store, then head office goes away
        token = await first.add_store("berlin-1")
    sink = hq_sink(f"http://127.0.0.1:{port}", token)
    try:
        await _outage_then_delivery(database, sink, fresh_database, port, snap)
    finally:
        await sink.close()


async def _outage_then_delivery(database: AsyncDatabase, sink: HqSink, dsn: str, port: int, snap: str) -> None:
    worker = OutboxWorker(database, {"hq": sink}, Metrics(), FAST, privacy=ORIGINAL)
    assert await worker.deliver_due("hq") == 1  # head office down: the first waits, nothing overtakes it
    pending = await database.call(database.sync.deliveries, "pending")
    assert len(pending) == 6 and pending[-1]["attempts"] == 1 and "ClientConnectorError" in pending[-1]["last_error"]
    assert sink.health.ok is False
    async with hq_server(dsn, port=port) as hq:
        await drain(database, {"hq": sink})
        rows = await hq.db.fetch("SELECT id, state, snapshot FROM incidents ORDER BY id")
        assert [(r["id"], r["state"]) for r in rows] == [(f"inc-{n}", "end") for n in range(3)]
        evidence = await asyncio.to_thread(Path(snap).read_bytes)
        assert all(r["snapshot"] == evidence for r in rows)
        assert await hq.db.pool.fetchval("SELECT count(*) FROM ingest_keys") == 6
        assert await hq.db.pool.fetchval("SELECT sum(incidents) FROM day_types") == 3
        # a lost reply: the outbox sends the same key again; head office says so and changes nothing
        again = await sink.publish("inc-0:start:0", incident_to_json(incident(0, snapshot=snap)))
        assert again.detail == "HTTP 200 duplicate"
        assert await hq.db.pool.fetchval("SELECT count(*) FROM ingest_keys") == 6


async def test_bridge_restart_resends_nothing_twice(fresh_database: str, tmp_path: Path) -> None:
    async with hq_server(fresh_database) as hq:
        token = await hq.add_store("berlin-1")
        path = tmp_path / "db.sqlite"
        db = AsyncDatabase(path)
        for n in range(4):
            await db.call(db.sync.save, incident(n), ["hq"])
        sink = hq_sink(hq.url, token)
        await drain(db, {"hq": sink})
        await db.close()  # the bridge stops and starts again
        db = AsyncDatabase(path)
        for n in range(4, 6):
            await db.call(db.sync.save, incident(n), ["hq"])
        await drain(db, {"hq": sink})
        counts = await db.call(db.sync.outbox_counts)
        await db.close()
        await sink.close()
        assert counts == {"hq": {"pending": 0, "delivered": 6, "dead": 0}}
        assert await hq.db.pool.fetchval("SELECT count(*) FROM incidents") == 6
        assert await hq.db.pool.fetchval("SELECT count(*) FROM ingest_keys") == 6


async def test_hourly_records_are_queued_once_and_arrive(fresh_database: str, database: AsyncDatabase) -> None:
    insights = InsightsRecorder(database)
    now = [T0 + timedelta(minutes=30)]
    hourly = HourlyRecords(
        database, insights, ["hq"], lambda: None, health=lambda: {"cam1": "online", "cam2": "offline"},
        limits={"queue-1": {"max_length": 4, "max_wait_s": None}}, rules={"entrance": {"type": "line_crossing"}},
        clock=lambda: now[0],
    )  # fmt: skip
    from plugin.rules.base import Measurement

    for i in range(5):
        insights.add(Measurement("entrance", "cam1", T0 + timedelta(minutes=i), "in", 1.0, "count", "person"))
    hourly.sample_health(60.0)
    hourly.sample_health(60.0)
    await insights.flush()
    txn = {"id": "17", "lane": "2", "operator": "op1", "end": T0.isoformat(), "total": 25.5, "lines": []}
    void = {"lane": "2", "operator": "op1"}
    for event_id, kind, payload in (("e1", "pos.transaction", txn), ("e2", "pos.void", void)):
        event = BusinessEvent("pos", "s", T0, kind, payload)
        await database.call(database.sync.save_business_event, event_id, event)
    assert await hourly.publish_due() == 0  # 09:30: the 09:00 hour is still open
    now[0] = T0 + timedelta(hours=1, minutes=5)
    assert await hourly.publish_due() == 3
    assert await hourly.publish_due() == 0  # queued once, whatever happens later
    async with hq_server(fresh_database) as hq:
        sink = hq_sink(hq.url, await hq.add_store("berlin-1", timezone="UTC"))
        await drain(database, {"hq": sink})
        await sink.close()
        h = await hq.db.pool.fetchrow("SELECT * FROM store_hours")
        assert (h["hour"], h["visitors"], h["transactions"], h["amount"]) == (T0, 5, 1, 25.5)
        assert h["pos"] == [{"lane": "2", "operator": "op1", "transactions": 1, "amount": 25.5,
                             "exceptions": {"void": 1}}]  # fmt: skip
        assert h["health"] == {"cam1": {"online": 120.0}, "cam2": {"offline": 120.0}}
        assert h["limits"] == {"queue-1": {"max_length": 4, "max_wait_s": None}}
        assert all(row["rule_id"] != "camera-health" for row in h["series"])


async def test_console_feedback_travels_to_head_office(fresh_database: str, tmp_path: Path) -> None:
    async with hq_server(fresh_database) as hq:
        token = await hq.add_store("berlin-1")
        config = parse_config({
            "site": {"id": "berlin-1", "timezone": "Europe/Berlin"},
            "storage": {"path": str(tmp_path / "data")},
            "web": {"token": API_TOKEN},
            "cameras": [{"id": "cam1", "source": str(tmp_path / "none.mp4")}],
            "sinks": [{"kind": "hq", "id": "hq", "url": hq.url, "store": "berlin-1", "token": token}],
        })  # fmt: skip
        app = new_app(config)
        app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx])
        setup_routes(app)
        async with TestClient(TestServer(app)) as client:
            db = app[DATABASE]
            await db.call(db.sync.save, incident(1), ["hq"])
            url = "/api/incidents/inc-1/feedback"
            bearer = {"Authorization": f"Bearer {API_TOKEN}"}
            anonymous = await client.post(url, json={"verdict": "confirmed", "reason": "theft_seen"})
            assert anonymous.status == 401
            bad = await client.post(url, json={"verdict": "maybe", "reason": "other"}, headers=bearer)
            assert bad.status == 400 and "verdict must be one of" in await bad.text()
            ok = await client.post(url, json={"verdict": "confirmed", "reason": "theft_seen", "comment": "bag"},
                                   headers=bearer)  # fmt: skip
            assert ok.status == 201
            # a person on the console: signed in, the incident's verdict buttons post the page's form
            password = (tmp_path / "data" / "initial-admin-password").read_text().strip()
            csrf = await sign_in(client, "", "admin", password)
            page = await (await client.get("/")).text()
            assert 'action="/api/incidents/inc-1/feedback"' in page and 'value="false_alarm"' in page
            form = {"csrf_token": csrf, "reason": "staff_activity", "verdict": "false_alarm"}
            clicked = await client.post(url, data=form, allow_redirects=False)
            assert clicked.status == 303 and clicked.headers["Location"] == "/#incident-inc-1"
            assert "verdict: false alarm (staff doing their job) by admin" in await (await client.get("/")).text()
            listed = await (await client.get(url, headers=bearer)).json()
            assert [(f["verdict"], f["by_user"]) for f in listed] == [
                ("confirmed", "api-token"),
                ("false_alarm", "admin"),
            ]
            assert await app[OUTBOX].wait_drained(30.0)
        rows = await hq.db.fetch("SELECT * FROM feedback ORDER BY at")
        assert [(r["verdict"], r["reason"], r["by_user"], r["source"], r["rule_id"], r["camera"]) for r in rows] == [
            ("confirmed", "theft_seen", "api-token", "store", "table-dwell", "cam1"),
            ("false_alarm", "staff_activity", "admin", "store", "table-dwell", "cam1")]  # fmt: skip
        assert await hq.db.pool.fetchval("SELECT verdict FROM verdicts") == "false_alarm"


async def test_self_test_checks_the_token_and_stores_nothing(fresh_database: str) -> None:
    from plugin.errors import SinkAuthError

    async with hq_server(fresh_database) as hq:
        good = hq_sink(hq.url, await hq.add_store("berlin-1"))
        wrong = hq_sink(hq.url, "x" * 32)
        try:
            assert "accepts store berlin-1's token" in await good.self_test()
            with pytest.raises(SinkAuthError, match="HTTP 401"):
                await wrong.self_test()
        finally:
            await good.close()
            await wrong.close()
        assert await hq.db.pool.fetchval("SELECT count(*) FROM ingest_keys") == 0
