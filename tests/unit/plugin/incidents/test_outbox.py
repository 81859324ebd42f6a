"""The outbox with real HTTP receivers: outages, slow sinks, auth, rejections, dead letters, signatures, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import WebhookReceiver, write_config

from adapters.sinks.webhook import WebhookSink, WebhookSinkConfig, verify
from plugin.config.service import OutboxConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.outbox import OutboxWorker
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink, Receipt
from plugin.types import Incident

FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=10)
SECRET = "0123456789abcdef-secret"


def incident(n: int, state: str = "start") -> Incident:
    """A synthetic incident; (n, state) fixes its delivery key."""
    start = datetime(2026, 11, 29, 14, 0, tzinfo=UTC) + timedelta(minutes=n)
    return Incident(
        id=f"00000000-0000-4000-8000-{n:012d}", rule_id="table-dwell", type="loitering", camera="cam1", start=start,
        state=state, seq=0 if state == "start" else 1, explanation=f"Person #{n} stayed", track_ids=(n,),  # type: ignore[arg-type]
    )  # fmt: skip


def webhook(sink_id: str, url: str, **kw: object) -> WebhookSink:
    """A webhook sink."""
    return WebhookSink(WebhookSinkConfig.model_validate({"kind": "webhook", "id": sink_id, "url": url} | kw))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """A fresh SQLite store."""
    s = AsyncDatabase(tmp_path / "db.sqlite")
    yield s
    await s.close()


async def run_worker(
    database: AsyncDatabase, sinks: dict[str, IncidentSink], config: OutboxConfig = FAST
) -> asyncio.Task[None]:
    """Start an outbox worker in the background."""
    worker = OutboxWorker(database, sinks, Metrics(), config)
    return asyncio.create_task(worker.run())


async def wait_for(predicate: object, timeout_s: float = 20.0) -> None:
    """Poll until predicate() is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def stop(task: asyncio.Task[None], sinks: dict[str, IncidentSink]) -> None:
    """Cancel the worker and close the sinks."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for s in sinks.values():
        await s.close()


async def save_all(database: AsyncDatabase, sink_ids: list[str], n: int) -> None:
    """n incidents, each with start and end."""
    for i in range(n):
        await database.call(database.sync.save, incident(i), sink_ids)
        await database.call(database.sync.save, incident(i, "end"), sink_ids)


async def test_sink_down_then_back_gets_everything_exactly_once(database: AsyncDatabase) -> None:
    blocker = socket.socket()  # bound, not listening: refused connections, and the port stays ours
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    sinks: dict[str, IncidentSink] = {"hook": webhook("hook", f"http://127.0.0.1:{port}/in")}
    await save_all(database, ["hook"], 5)
    task = await run_worker(database, sinks)
    await asyncio.sleep(1.0)  # nothing listens: every attempt fails and is rescheduled
    assert sinks["hook"].health.ok is False
    blocker.close()
    with WebhookReceiver(port=port) as hook:
        await wait_for(lambda: len(hook.keys()) >= 10)
        await asyncio.sleep(0.5)  # nothing more may arrive
        keys = hook.keys()
    await stop(task, sinks)
    assert len(keys) == 10 and len(set(keys)) == 10
    # in stored order: after an outage an incident's end never arrives before its start
    assert keys == [incident(i, state).delivery_key for i in range(5) for state in ("start", "end")]
    assert sinks["hook"].health.ok is True
    counts = await database.call(database.sync.outbox_counts)
    assert counts["hook"] == {"pending": 0, "delivered": 10, "dead": 0}


async def test_a_slow_sink_does_not_hold_up_the_others(database: AsyncDatabase) -> None:
    release = threading.Event()
    with WebhookReceiver(hold=release) as slow, WebhookReceiver() as fast:
        sinks: dict[str, IncidentSink] = {"slow": webhook("slow", slow.url), "fast": webhook("fast", fast.url)}
        await save_all(database, ["slow", "fast"], 4)
        # a publish timeout longer than the wait below: a sink queued behind the held request would stay queued
        task = await run_worker(database, sinks, FAST.model_copy(update={"timeout_s": 60}))
        try:
            # the slow sink's first request stays unanswered until the fast sink has all eight of its own: this
            # wait fails if the fast sink's deliveries queue behind it
            await wait_for(lambda: slow.arrived >= 1 and len(fast.keys()) == 8)
        finally:
            release.set()
        await wait_for(lambda: len(slow.keys()) == 8)
        await stop(task, sinks)
    assert set(slow.keys()) == set(fast.keys())


async def test_auth_failure_holds_and_rejection_dead_letters(database: AsyncDatabase) -> None:
    with WebhookReceiver(status=401) as denied, WebhookReceiver(status=400) as picky:
        sinks: dict[str, IncidentSink] = {"denied": webhook("denied", denied.url), "picky": webhook("picky", picky.url)}
        await save_all(database, ["denied", "picky"], 1)
        task = await run_worker(database, sinks)
        await wait_for(lambda: sinks["denied"].health.auth_failed)
        await asyncio.sleep(0.5)  # time for the 400s to be dead-lettered and for retries that must not happen
        await stop(task, sinks)
    counts = await database.call(database.sync.outbox_counts)
    assert counts["denied"]["pending"] == 2 and counts["denied"]["dead"] == 0  # held, never given up
    assert counts["picky"]["dead"] == 2  # a 400 is not retried
    dead = await database.call(database.sync.deliveries, "dead")
    assert {d["sink"] for d in dead} == {"picky"}
    assert all("rejected: " in d["last_error"] and "HTTP 400" in d["last_error"] for d in dead)
    incident_doc = await database.call(database.sync.incident, incident(0).id)
    assert incident_doc is not None
    assert {(d["sink"], d["state"]) for d in incident_doc["deliveries"]} == {("denied", "pending"), ("picky", "dead")}

    # fixed receiver + manual retry: the dead letters go out
    with WebhookReceiver() as picky_fixed:
        sinks2: dict[str, IncidentSink] = {"picky": webhook("picky", picky_fixed.url)}
        assert await database.call(database.sync.retry_dead, "picky", None) == 2
        task = await run_worker(database, sinks2)
        await wait_for(lambda: len(picky_fixed.keys()) == 2)
        await stop(task, sinks2)


async def test_too_many_failures_dead_letter(database: AsyncDatabase) -> None:
    with WebhookReceiver(status=503) as down:
        sinks: dict[str, IncidentSink] = {"down": webhook("down", down.url)}
        await database.call(database.sync.save, incident(1), ["down"])
        task = await run_worker(database, sinks, FAST.model_copy(update={"max_attempts": 3}))

        async def dead() -> int:
            return int((await database.call(database.sync.outbox_counts))["down"]["dead"])

        for _ in range(100):
            if await dead() == 1:
                break
            await asyncio.sleep(0.05)
        await stop(task, sinks)
    [row] = await database.call(database.sync.deliveries, "dead")
    assert row["attempts"] == 3 and "gave up after 3 attempts" in row["last_error"]


async def test_signed_webhook_verifies_and_detects_tampering(database: AsyncDatabase) -> None:
    with WebhookReceiver() as hook:
        sinks: dict[str, IncidentSink] = {"signed": webhook("signed", hook.url, secret=SECRET)}
        await database.call(database.sync.save, incident(3), ["signed"])
        task = await run_worker(database, sinks)
        await wait_for(lambda: len(hook.keys()) == 1)
        await stop(task, sinks)
        [req] = hook.requests
    assert verify(SECRET, req["raw"], req["signature"])
    assert not verify(SECRET, req["raw"].replace(b"Person", b"Persen"), req["signature"])
    assert not verify("another-secret-of-16", req["raw"], req["signature"])
    assert not verify(SECRET, req["raw"], req["signature"], now=time.time() + 3600)  # a replay an hour later
    assert not verify(SECRET, req["raw"], "garbage")


@pytest.mark.triton
@pytest.mark.slow
class CancelsItsWorker:
    """A real webhook sink that has the outbox worker cancelled as each answer comes back: the cancel lands while
    publish finishes, the moment Python 3.11's asyncio.wait_for lost it (it returned the answer, or raised the
    sink's error, instead) and the worker went on forever (the Nx approval test hung until its timeout)."""

    def __init__(self, inner: WebhookSink) -> None:
        self.inner, self.id, self.health = inner, inner.id, inner.health
        self.worker: asyncio.Task[None] | None = None
        self.answers = 0

    async def publish(self, delivery_key: str, payload: Mapping[str, Any]) -> Receipt:
        """The webhook's publish; its answer and the worker's cancel arrive together."""
        try:
            return await self.inner.publish(delivery_key, payload)
        finally:
            self.answers += 1
            assert self.worker is not None
            asyncio.get_running_loop().call_soon(self.worker.cancel)

    async def close(self) -> None:
        """Close the webhook sink."""
        await self.inner.close()


@pytest.mark.parametrize("status", [200, 503], ids=["delivered", "not ready"])
async def test_a_cancel_that_lands_as_a_delivery_finishes_stops_the_worker(
    database: AsyncDatabase, status: int
) -> None:
    with WebhookReceiver(status=status) as hook:
        sink = CancelsItsWorker(webhook("hook", hook.url))
        try:
            for n in range(10):
                await database.call(database.sync.save, incident(n), ["hook"])
                answered = sink.answers
                sink.worker = await run_worker(database, {"hook": sink})  # type: ignore[dict-item]
                # a bound, not a timing: a worker that lost its cancel runs on for good
                done, _ = await asyncio.wait({sink.worker}, timeout=30)
                assert done and sink.worker.cancelled(), f"worker {n} went on after its cancel"
                assert sink.answers == answered + 1  # the cancel came with its first answer, and it stopped there
        finally:
            await sink.close()
    # stopped between the answer and its bookkeeping, a delivery stays pending (sent again later): nothing is lost
    counts = (await database.call(database.sync.outbox_counts))["hook"]
    assert counts["pending"] + counts["delivered"] == 10 and counts["dead"] == 0
    assert counts["delivered"] == 0 if status == 503 else len(hook.keys()) >= counts["delivered"]


def test_sigkill_during_an_outage_loses_nothing(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    # hold the VMS port bound but not listening: connections are refused, and no other server can take the port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    doc = {
        "storage": {"path": str(tmp_path / "data")},
        "triton": {"url": triton.grpc_url},
        "web": {"port": free_port()},
        "cameras": [{"id": "cam1", "source": str(clip), "start_time": "2026-11-29T14:00:00+00:00",
                     "zones": [{"id": "table", "polygon": [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]}]}],
        "rules": [{"id": "table-dwell", "type": "loitering", "camera": "cam1", "zone": "table", "min_dwell_s": 8}],
        "sinks": [{"kind": "webhook", "id": "vms", "url": f"http://127.0.0.1:{port}/in"}],
        "outbox": {"backoff_start_s": 0.2, "backoff_max_s": 1.0},
    }  # fmt: skip
    cfg = write_config(tmp_path / "store.yaml", doc)
    db = tmp_path / "data" / "storesight.db"
    env = dict(os.environ)
    first = subprocess.Popen([sys.executable, "-m", "plugin.cli", "run", "-c", str(cfg)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        pending = 0
        while time.monotonic() < deadline:
            if db.exists():
                with sqlite3.connect(db) as con:
                    sql = "SELECT COUNT(*) FROM outbox WHERE delivered IS NULL AND dead IS NULL"
                    pending = con.execute(sql).fetchone()[0]
                if pending >= 12:
                    break
            time.sleep(0.5)
        assert pending == 12, "the clip should leave 6 incidents x 2 states waiting for the absent VMS"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the VMS comes back; StoreSight restarts (this time without the camera: only the outbox has work)
    doc["cameras"], doc["rules"] = [], []
    write_config(cfg, doc)
    blocker.close()
    with WebhookReceiver(port=port) as vms:
        second = subprocess.Popen([sys.executable, "-m", "plugin.cli", "run", "-c", str(cfg)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(vms.keys()) < 12 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
            keys = vms.keys()
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err[-2000:]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert sorted(k.split(":")[1] for k in keys) == ["end"] * 6 + ["start"] * 6


def test_outbox_cli_lists_and_requeues_dead_letters(tmp_path: Path) -> None:
    from helpers import run_cli

    from plugin.incidents.database import Database, Delivery

    cfg = write_config(tmp_path / "c.yaml", {"storage": {"path": str(tmp_path / "data")}})
    database = Database(tmp_path / "data" / "storesight.db")
    database.save(incident(7), ["vms"])
    [due] = database.due("vms", time.time())
    database.mark_dead(Delivery(due.delivery_key, "vms", due.incident_id, {}, 0), "rejected: HTTP 422")
    database.close()
    listed = run_cli("outbox", "list", "-c", str(cfg), "--state", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"last_error": "rejected: HTTP 422"' in listed.stdout and due.delivery_key in listed.stdout
    retried = run_cli("outbox", "retry", "-c", str(cfg), "--sink", "vms")
    assert retried.returncode == 0 and "requeued 1 dead-lettered delivery" in retried.stdout
    database = Database(tmp_path / "data" / "storesight.db")
    assert database.outbox_counts()["vms"] == {"pending": 1, "delivered": 0, "dead": 0}
    database.close()


def test_vms_test_reports_each_sink(tmp_path: Path) -> None:
    from helpers import run_cli

    with WebhookReceiver() as good, WebhookReceiver(status=401) as denied:
        doc = {
            "storage": {"path": str(tmp_path / "data")},
            "sinks": [
                {"kind": "webhook", "id": "soc", "url": good.url, "secret": SECRET},
                {"kind": "webhook", "id": "old", "url": denied.url.replace("/hook", "/hook?token=hunter2")},
            ],
        }
        cfg = write_config(tmp_path / "c.yaml", doc)
        res = run_cli("vms", "test", "-c", str(cfg))
        [req] = good.requests
    assert res.returncode == 1  # one sink failed
    assert "soc (webhook): OK: POST" in res.stdout
    assert "old (webhook): FAILED (credentials)" in res.stdout and "hunter2" not in res.stdout
    assert req["body"]["incident"]["test"] is True and req["key"].startswith("storesight-test:")
    assert verify(SECRET, req["raw"], req["signature"])
    only = run_cli("vms", "test", "-c", str(cfg), "--sink", "nope")
    assert only.returncode == 1 and "no sink 'nope' in the config (sinks: soc, old)" in only.stderr
