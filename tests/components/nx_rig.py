"""The Nx emulator as the Nx sink tests use it: two devices, a sink trusting the emulator's own CA, incidents, and the
real outbox delivering them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from adapters.sinks.nx.config import NxSinkConfig
from adapters.sinks.nx.sink import NxSink
from components.nx_emulator import NxEmulator, nx_emulator_available, self_signed_cert
from plugin.config.service import OutboxConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink
from plugin.types import Incident

DEV1 = "3a4ad4ea-9269-4b1f-a7aa-2cec537d0248"
DEV2 = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
UNKNOWN_DEV = "11111111-2222-4333-8444-555555555555"
DEVICES = {DEV1: "Checkout 1", DEV2: "Stockroom"}
PASSWORD = "correct horse battery"
T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=5)
WAIT_S = 15.0  # upper bound for the outbox to get through; typical is well under a second


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The emulator's self-signed certificate (its own CA, like an Nx server's) and key."""
    require(nx_emulator_available())
    return self_signed_cert(tmp_path_factory.mktemp("nx-tls"))


@contextlib.asynccontextmanager
async def emulator(cert: tuple[Path, Path], **kw: Any) -> AsyncIterator[NxEmulator]:
    """A running emulator with two devices; afterwards, not one request or reply may have broken the spec."""
    async with NxEmulator(devices=dict(DEVICES), password=PASSWORD, tls=cert, **kw) as nx:
        yield nx
    assert nx.violations == [], "requests the Nx spec does not allow"
    assert nx.response_violations == [], "emulator replies the Nx spec does not allow"


def nx_config(nx: NxEmulator, cert: tuple[Path, Path], **extra: Any) -> NxSinkConfig:
    """An nx sink for the emulator, trusting its certificate, with cam1 on DEV1 and cam2 on DEV2."""
    doc = {"kind": "nx", "id": "nvr", "url": nx.url, "username": "storesight", "password": PASSWORD,
           "cameras": {"cam1": DEV1, "cam2": DEV2}, "ca_bundle": str(cert[0]), "timeout_s": 2} | extra  # fmt: skip
    return NxSinkConfig.model_validate(doc)


@contextlib.asynccontextmanager
async def nx_sink(
    nx: NxEmulator, cert: tuple[Path, Path], database: AsyncDatabase, **extra: Any
) -> AsyncIterator[NxSink]:
    """An nx sink keeping its references in `store`, closed afterwards."""
    sink = NxSink(nx_config(nx, cert, **extra), database)
    try:
        yield sink
    finally:
        await sink.close()


@contextlib.asynccontextmanager
async def opened_database(path: Path) -> AsyncIterator[AsyncDatabase]:
    """A SQLite store (outbox and sink references)."""
    database = AsyncDatabase(path)
    try:
        yield database
    finally:
        await database.close()


def incident(camera: str = "cam1", n: int = 1) -> tuple[Incident, Incident]:
    """A loitering incident's start and its end 12.5 s later."""
    start = Incident(
        id=f"00000000-0000-4000-8000-{n:012d}", rule_id="table-dwell", type="loitering", camera=camera, start=T0,
        state="start", seq=0, explanation=f"Person #{n} stayed at table for 8 s", track_ids=(n,),
    )  # fmt: skip
    end = Incident(
        id=start.id, rule_id=start.rule_id, type=start.type, camera=camera, start=T0, end=T0 + timedelta(seconds=12.5),
        state="end", seq=1, explanation=f"Person #{n} stayed at table for 12.5 s, then left", track_ids=(n,),
    )  # fmt: skip
    return start, end


async def deliver_all(
    database: AsyncDatabase, sink: IncidentSink, incidents: list[Incident], until: Callable[[], bool] | None = None
) -> dict[str, int]:
    """Save the incidents to the outbox and let the real OutboxWorker deliver them (or work until `until()`);
    the final counts."""
    for inc in incidents:
        await database.call(database.sync.save, inc, [sink.id])
    worker = OutboxWorker(database, {sink.id: sink}, Metrics(), FAST)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            counts = (await database.call(database.sync.outbox_counts))[sink.id]
            if (until() if until else counts["pending"] == 0) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
