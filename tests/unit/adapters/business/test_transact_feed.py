"""The XProtect Transact feed against hostile peers: one that streams data at it (memory stays flat), peers that are
not XProtect (refused: the feed carries every receipt), and peers that try to take the connection slots (XProtect
still gets in, and its own reconnects replace its dead connections). The real server on loopback with the real POS
service and SQLite database; other peers connect from 127.0.0.2-3."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.business.pos.transact import TransactServer
from plugin.config.pos import PosConfig, PosTransactConfig
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.model import Transaction
from plugin.fusion.pos.service import PosService
from plugin.incidents.database import AsyncDatabase
from plugin.pipeline.presence import PresenceLog

pytestmark = [pytest.mark.pos]

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
XPROTECT = "127.0.0.1"


@dataclass
class Rig:
    service: PosService
    server: TransactServer
    sent: int = 0

    async def sale(self) -> str:
        """Store one transaction; returns its id (the feed sends its receipt once it is stored)."""
        self.sent += 1
        txn = Transaction.model_validate(
            {"id": f"T{self.sent}", "lane": "3", "end": T0, "lines": [{"description": "Jeans", "amount": 39.99}]}
        )
        await self.service.submit(txn, "test")
        return txn.id


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    over: dict[str, Any] = getattr(request, "param", {})
    database = AsyncDatabase(tmp_path / "db.sqlite")
    service = PosService(PosConfig(), "store-42", "UTC", BusinessHub(database), PresenceLog(), None)
    server = TransactServer(PosTransactConfig.model_validate({"port": 0, **over}), service)
    await server.start()
    try:
        yield Rig(service, server)
    finally:
        await server.close()
        await service.close()
        await database.close()


async def connect(rig: Rig, source: str = XPROTECT) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", rig.server.port, local_addr=(source, 0))


async def until(check: Any, timeout_s: float = 15.0) -> None:
    """Poll `check()` (a state the listener reaches) until it holds."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached in {timeout_s} s")


async def receipt(reader: asyncio.StreamReader, timeout_s: float = 15.0) -> list[str]:
    """The next receipt's lines, TXN to END TXN."""
    lines: list[str] = []
    async with asyncio.timeout(timeout_s):
        while not lines or not lines[-1].startswith("END TXN"):
            lines.append((await reader.readline()).decode().rstrip("\r\n"))
    return lines


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float = 15.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            return await reader.read() == b""
    except ConnectionError:
        return True


async def test_a_peer_streaming_data_leaves_memory_flat(rig: Rig) -> None:
    """20 MB from one peer: the old feed buffered it all until EOF (reader.read()); now it is read in 16 kB
    chunks and dropped. Measured with tracemalloc (the Python heap the buffering lived on); the same peer then
    still gets its receipts."""
    reader, writer = await connect(rig)
    await until(lambda: rig.server.clients == 1)
    chunk = b"x" * (1024 * 1024)
    tracemalloc.start()
    try:
        for _ in range(20):
            writer.write(chunk)
            await writer.drain()
        await rig.sale()
        lines = await receipt(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n20 MB sent to the Transact feed: Python heap peak {peak / 1e6:.2f} MB")
    assert peak < 4_000_000
    assert lines[0].startswith("TXN T1 LANE 3") and lines[-1] == "END TXN T1"
    writer.close()


@pytest.mark.parametrize("rig", [{"allow_from": [XPROTECT]}], indirect=True)
async def test_only_the_xprotect_addresses_get_receipts(rig: Rig) -> None:
    stranger = await connect(rig, "127.0.0.2")
    assert await closed_by_server(stranger[0])
    xprotect = await connect(rig)
    await until(lambda: rig.server.clients == 1)
    await rig.sale()
    assert (await receipt(xprotect[0]))[-1] == "END TXN T1"
    assert rig.server.slots.refused == 1
    for _, writer in (stranger, xprotect):
        writer.close()


@pytest.mark.parametrize("rig", [{"allow_from": [XPROTECT, "127.0.0.2"], "max_clients": 4}], indirect=True)
async def test_peers_cannot_lock_xprotect_out(rig: Rig) -> None:
    """Four strangers (today they took all four slots); then XProtect reconnecting five times over connections
    it no longer reads (a network blip leaves them half-open): each reconnect replaces its own oldest, so the
    fifth is served; an allowed address with no connection cannot take a slot from it either."""
    strangers = [await connect(rig, "127.0.0.3") for _ in range(4)]
    for reader, _ in strangers:
        assert await closed_by_server(reader)
    sessions = []
    for _ in range(5):
        sessions.append(await connect(rig))
        await until(lambda: rig.server.clients == min(len(sessions), 4))
    assert await closed_by_server(sessions[0][0])  # the oldest was replaced
    late = await connect(rig, "127.0.0.2")
    assert await closed_by_server(late[0])  # full, and 127.0.0.2 has nothing to replace
    await rig.sale()
    assert (await receipt(sessions[-1][0]))[-1] == "END TXN T1"
    assert rig.server.slots.replaced == 1 and rig.server.slots.refused == 5
    for _, writer in (*strangers, *sessions, late):
        writer.close()


def test_a_lan_bind_needs_an_allow_list() -> None:
    with pytest.raises(ValueError, match=r"allow_from: required when listening on 0\.0\.0\.0"):
        PosTransactConfig.model_validate({"host": "0.0.0.0", "port": 9000})
    PosTransactConfig.model_validate({"host": "0.0.0.0", "port": 9000, "allow_from": ["10.0.0.0/24"]})
