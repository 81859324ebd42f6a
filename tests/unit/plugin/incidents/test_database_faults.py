"""Database and disk faults, for real: the database locked by another process, the disk full (a small tmpfs), out
of file handles. Deliveries stop and resume by themselves, /readyz says why meanwhile, incidents wait in memory
and are stored in order, a snapshot that cannot be written leaves the incident without one. Each test prints its
figures (`-s`, lines starting FIGURE)."""

from __future__ import annotations

import asyncio
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from helpers import WebhookReceiver, fill_up, small_tmpfs

from adapters.sinks.webhook import WebhookSink, WebhookSinkConfig
from plugin.app import auth_ctx, database_ctx, new_app, sinks_ctx
from plugin.config.loader import parse_config
from plugin.config.occupancy import StoreOccupancyConfig
from plugin.config.service import OutboxConfig
from plugin.fusion.store_occupancy import StoreOccupancyService
from plugin.incidents.database import AsyncDatabase, Database
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.incidents.outbox import OutboxWorker
from plugin.inference.server import free_port
from plugin.inference.triton import TritonInferenceClient
from plugin.insights.rollups import InsightsRecorder
from plugin.metrics import Metrics
from plugin.rules.base import Measurement, RuleHit
from plugin.types import Frame, Incident
from plugin.web.keys import DATABASE, EMBEDDED_TRITON, INCIDENTS, INFERENCE, OUTBOX, SYSTEM
from plugin.web.routes import setup_routes

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
TOKEN = "test-token-0123456789abcdef"
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=10)

# another process holding the write lock, as a backup tool or `sqlite3` by hand does, until told to let go
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def _hit(n: int, state: str = "start") -> RuleHit:
    return RuleHit(
        rule_id="tamper", type="camera_tamper", key=f"k{n}", state=state, camera="cam1", zone=None,  # type: ignore[arg-type]
        track_ids=(n,), started_at=T0 + timedelta(minutes=n), at=T0 + timedelta(minutes=n, seconds=30),
        severity="warning", facts={"reason": "covered", "duration_s": 30.0}, box=(100.0, 100.0, 200.0, 300.0),
    )  # fmt: skip


def _frame() -> Frame:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, (432, 768, 3), dtype=np.uint8)  # noise: a JPEG of ~300 KB, no tiny file
    return Frame("cam1", 1, T0, 0.0, image)


async def _until(predicate: Callable[[], Any], timeout_s: float = 60.0) -> None:
    """Wait, polling, until predicate() is true (what it watches has no event to wait on: receivers, workers)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _ready(port: int) -> dict[str, Any]:
    """/readyz's details (an admin token: the anonymous answer is only ready or not)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz", headers=auth) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_the_database_locked_by_another_process_pauses_deliveries_which_resume_by_themselves(
    tmp_path: Path,
) -> None:
    """Before: one OperationalError ('database is locked') ended the outbox task and every sink stopped until a
    restart, while readiness said ok. Now the workers wait it out, /readyz names the error, the incident that
    arrives meanwhile waits in memory, and everything goes out once the lock is let go."""
    data = tmp_path / "data"
    seed = Database(data / "storesight.db")
    for n in range(3):  # deliveries already waiting when the lock is taken
        for state in ("start", "end"):
            incident = Incident(
                id=f"00000000-0000-4000-8000-{n:012d}", rule_id="tamper", type="camera_tamper", camera="cam1",
                start=T0, state=state, seq=0 if state == "start" else 1, explanation=f"#{n}",  # type: ignore[arg-type]
                end=None if state == "start" else T0 + timedelta(minutes=1),
            )  # fmt: skip
            seed.save(incident, ["a", "b"])
    seed.close()
    # a first start made the first admin (the only write at start): this start finds the lock taken
    first = new_app(parse_config({"storage": {"path": str(data)}}))
    first.cleanup_ctx.extend([database_ctx, auth_ctx])
    runner = web.AppRunner(first)
    await runner.setup()
    await runner.cleanup()
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(data / "storesight.db"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert locker.stdout is not None and (await locker.stdout.readline()).strip() == b"locked"
        with WebhookReceiver() as a, WebhookReceiver() as b:
            port = free_port()
            config = parse_config({
                "storage": {"path": str(data)}, "outbox": FAST.model_dump(), "web": {"port": port, "token": TOKEN},
                "sinks": [{"kind": "webhook", "id": "a", "url": a.url}, {"kind": "webhook", "id": "b", "url": b.url}],
            })  # fmt: skip
            app = new_app(config)
            app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx])
            app[INFERENCE] = TritonInferenceClient(f"grpc://127.0.0.1:{free_port()}", "yolox_nano")  # nobody there
            app[EMBEDDED_TRITON], app[SYSTEM] = None, None
            setup_routes(app)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                outbox, incidents, db = app[OUTBOX], app[INCIDENTS], app[DATABASE]
                # each sink's worker published its first delivery, then could not record it: both wait, alive
                await _until(lambda: set(outbox.errors) == {"a", "b"})
                assert "database is locked" in outbox.errors["a"]
                # an incident meanwhile: the database cannot take it, the caller carries on
                opened = await incidents.handle(_hit(9), None, None)
                assert opened is not None and incidents.unsaved == 1
                body = await _ready(port)
                assert body["ready"] is False
                assert body["database"]["ready"] is False and "database is locked" in body["database"]["error"]
                assert body["database"]["unsaved_incidents"] == 1
                assert all("database is locked" in s["outbox_error"] and not s["ready"] for s in body["sinks"].values())
                locked_attempts = len(a.keys()) + len(b.keys())
                released = time.monotonic()
                assert locker.stdin is not None
                locker.stdin.write(b"go\n")
                await locker.stdin.drain()
                want = {f"00000000-0000-4000-8000-{n:012d}:{s}:{q}" for n in range(3) for s, q in (("start", 0),
                        ("end", 1))} | {opened.delivery_key}  # fmt: skip
                await _until(lambda: set(a.keys()) >= want and set(b.keys()) >= want)
                resumed_s = time.monotonic() - released
                await _until(lambda: not outbox.errors and incidents.unsaved == 0 and db.health.ok)
                body = await _ready(port)
                database = body["database"]
                assert database["ready"] is True and database["error"] is None and database["failing_since"] is None
                assert database["unsaved_incidents"] == 0 and database["failures"] >= 2
                assert all(s["outbox_error"] is None and s["pending"] == 0 for s in body["sinks"].values())
                stored = await db.call(db.sync.incident, opened.id)
                assert stored is not None and stored["state"] == "start"
                duplicates = len(a.keys()) + len(b.keys()) - 2 * len(want)
                print(
                    f"\nFIGURE db-locked: 2 sinks, {2 * len(want)} deliveries; while locked {locked_attempts} "
                    f"published but not recorded, 1 incident held in memory; after the lock went all delivered in "
                    f"{resumed_s:.1f} s; duplicates (at least once) {duplicates}; database failures "
                    f"{body['database']['failures']}"
                )
            finally:
                await app[INFERENCE].close()
                await runner.cleanup()
    finally:
        if locker.returncode is None:
            locker.kill()
        await locker.wait()


async def test_a_full_disk_holds_incidents_in_memory_and_stores_them_in_order_once_there_is_room(
    tmp_path: Path,
) -> None:
    """The data folder on a real 2 MiB file system, filled to the last byte: snapshots fail (the incident is kept
    without one), the database refuses writes (SQLITE_FULL), the incidents wait in memory, the callers (cameras)
    carry on. Room again: every incident is stored, in order, and delivered."""
    with small_tmpfs(tmp_path / "disk", 2048) as disk, WebhookReceiver() as hook:
        db = AsyncDatabase(disk / "storesight.db")
        sink = WebhookSink(WebhookSinkConfig.model_validate({"kind": "webhook", "id": "hook", "url": hook.url}))
        outbox = OutboxWorker(db, {"hook": sink}, Metrics(), FAST, privacy={"hook": "original"})
        evidence = disk / "evidence"
        manager = IncidentManager(db, evidence, Explainer("UTC"), ["hook"], on_saved=lambda _i: outbox.notify())
        worker = asyncio.create_task(outbox.run())
        retries = asyncio.create_task(manager.run(interval_s=0.2))
        try:
            first = await manager.handle(_hit(0), _frame(), None)
            assert first is not None and first.snapshot is not None  # room: stored with its snapshot
            await _until(lambda: len(hook.keys()) == 1)
            filler = await asyncio.to_thread(fill_up, disk)
            full_at = time.monotonic()
            held: list[Incident] = []
            for n in range(1, 6):  # five incidents open and end on a full disk
                for state in ("start", "end"):
                    incident = await manager.handle(_hit(n, state), _frame() if state == "start" else None, None)
                    assert incident is not None
                    held.append(incident)
            assert manager.unsaved == 10 and manager.store_error is not None and "full" in manager.store_error
            assert all(i.snapshot is None for i in held)
            assert all("No space left" in i.details["snapshot_error"] for i in held if i.state == "start")
            assert not db.health.ok and "full" in (db.health.error or "")
            assert len(hook.keys()) == 1
            os.unlink(filler)  # room again
            freed = time.monotonic()
            await _until(lambda: manager.unsaved == 0)
            stored_s = time.monotonic() - freed
            await _until(lambda: len(hook.keys()) == 11)
            delivered_s = time.monotonic() - freed
            # in order: each incident's end after its start, the incidents in the order they happened
            assert hook.keys() == [first.delivery_key] + [i.delivery_key for i in held]
            docs = {d["id"]: d for d in await db.call(db.sync.incidents)}
            assert all(docs[i.id]["state"] == "end" and docs[i.id]["snapshot"] is None for i in held)
            assert db.health.ok and manager.store_error is None
            print(
                f"\nFIGURE disk-full: 2 MiB tmpfs filled for {freed - full_at:.1f} s; 10 incident states held in "
                f"memory, 5 snapshots skipped (ENOSPC); stored {stored_s:.2f} s and delivered {delivered_s:.2f} s "
                f"after room came back; none lost, order kept"
            )
        finally:
            retries.cancel()
            worker.cancel()
            await asyncio.gather(worker, retries, return_exceptions=True)
            await sink.close()
            await db.close()


@pytest.mark.parametrize("fault", ["disk full", "out of file handles"])
async def test_a_snapshot_that_cannot_be_written_leaves_the_incident_stored_without_one(
    tmp_path: Path, fault: str
) -> None:
    """Before: the OSError escaped, the incident was lost and the camera's pipeline restarted with fresh rule state.
    Now the incident is stored (with the reason, without a snapshot) and the next snapshot works again."""
    db = AsyncDatabase(tmp_path / "db" / "storesight.db")  # the database elsewhere: only the snapshot fails
    try:
        if fault == "disk full":
            with small_tmpfs(tmp_path / "evidence", 512) as evidence:
                manager = IncidentManager(db, evidence, Explainer("UTC"), ["hook"])
                filler = await asyncio.to_thread(fill_up, evidence)
                incident = await manager.handle(_hit(1), _frame(), None)
                os.unlink(filler)
                after = await manager.handle(_hit(2), _frame(), None)
                expected = "No space left on device"
                assert after is not None and after.snapshot is not None
                assert await asyncio.to_thread(Path(after.snapshot).is_file)
        else:
            manager = IncidentManager(db, tmp_path / "evidence", Explainer("UTC"), ["hook"])
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
            spare: list[int] = []
            try:
                while True:  # take every free descriptor below the limit: the next open() fails with EMFILE
                    try:
                        spare.append(os.open(os.devnull, os.O_RDONLY))
                    except OSError:
                        break
                incident = await manager.handle(_hit(1), _frame(), None)
            finally:
                for fd in spare:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            expected = "Too many open files"
            after = await manager.handle(_hit(2), _frame(), None)
            assert after is not None and after.snapshot is not None
        assert incident is not None and incident.snapshot is None
        assert expected in incident.details["snapshot_error"]
        doc = await db.call(db.sync.incident, incident.id)
        assert doc is not None and doc["snapshot"] is None and expected in doc["details"]["snapshot_error"]
        assert manager.snapshot_failures == 1 and manager.unsaved == 0
        # the rule's incident is still open in the manager: its end closes it as usual
        ended = await manager.handle(_hit(1, "end"), None, None)
        assert ended is not None and ended.id == incident.id and ended.state == "end"
    finally:
        await db.close()


async def test_insights_roll_ups_wait_out_a_locked_database(tmp_path: Path) -> None:
    """Before: one 'database is locked' at a flush lost that batch and ended the flusher (no roll-ups until a
    restart). Now the batch stays in memory, merged with what arrives meanwhile, and is written at the next flush."""
    db = AsyncDatabase(tmp_path / "storesight.db", busy_timeout_ms=100)
    recorder = InsightsRecorder(db)
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(tmp_path / "storesight.db"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        for k in range(3):
            recorder.add(Measurement("door-line", "cam1", T0 + timedelta(seconds=k), "in", 1.0))
        recorder.add(Measurement("table-count", "cam1", T0, "people", 2.0, "gauge"))
        assert locker.stdout is not None and (await locker.stdout.readline()).strip() == b"locked"
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await recorder.flush()
        recorder.add(Measurement("door-line", "cam1", T0 + timedelta(seconds=5), "in", 1.0))  # meanwhile
        recorder.add(Measurement("table-count", "cam1", T0 + timedelta(seconds=5), "people", 4.0, "gauge"))
        assert locker.stdin is not None
        locker.stdin.write(b"go\n")
        await locker.stdin.drain()
        await locker.wait()
        await recorder.flush()
        rows = {r["metric"]: r for r in await db.call(db.sync.rollups, "0000", "9999")}
        assert rows["in"]["count"] == 4.0
        assert (rows["people"]["n"], rows["people"]["total"], rows["people"]["peak"], rows["people"]["last"]) == (
            2,
            6.0,
            4.0,
            4.0,
        )
    finally:
        if locker.returncode is None:
            locker.kill()
        await locker.wait()
        await db.close()


async def test_store_occupancy_counts_on_while_the_database_is_locked(tmp_path: Path) -> None:
    """Before: a refused save raised out of the crossing, into the camera pipeline that fed it (restarted with
    fresh rule state), and out of the clock task (ended for good). Now the count goes on in memory and its state
    is saved at the next crossing."""
    db = AsyncDatabase(tmp_path / "storesight.db", busy_timeout_ms=100)
    incidents = IncidentManager(db, tmp_path / "evidence", Explainer("UTC"), [])
    config = StoreOccupancyConfig.model_validate({"id": "store", "lines": ["front"]})
    service = StoreOccupancyService([config], "UTC", db, incidents)
    await service.load()
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(tmp_path / "storesight.db"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:

        def crossing(metric: str, s: float) -> Measurement:
            return Measurement("front", "cam1", T0 + timedelta(seconds=s), metric, 1.0, "count", "person", 1)

        assert locker.stdout is not None and (await locker.stdout.readline()).strip() == b"locked"
        await service.on_measurement(crossing("in", 1), None)  # refused save: no exception into the pipeline
        await service.on_measurement(crossing("in", 2), None)
        await service.tick(T0 + timedelta(seconds=3))  # the clock task's call: no exception either
        assert service.counts[0].state.people == 2
        assert await db.call(db.sync.occupancy_state, "store") is None  # nothing could be saved yet
        assert locker.stdin is not None
        locker.stdin.write(b"go\n")
        await locker.stdin.drain()
        await locker.wait()
        await service.tick(T0 + timedelta(seconds=4))  # no crossing: the unsaved state is saved all the same
        saved = await db.call(db.sync.occupancy_state, "store")
        assert saved is not None and saved["people"] == 2
    finally:
        if locker.returncode is None:
            locker.kill()
        await locker.wait()
        await db.close()
