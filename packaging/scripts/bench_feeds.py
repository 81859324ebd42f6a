#!/usr/bin/env python
"""The inbound feeds against hostile peers, measured (tests check behaviour; this prints the figures):

- receipt text: the time to parse one transaction holding a 400-character line built to make the patterns
  backtrack (a keyword, then one unit repeated: spaces, digits, "1.1 ", "ORIG ", ...), for every shape; the worst
  and the median, and the classic "SALE " + 390 spaces;
- the XProtect Transact feed: the process's resident memory while one peer sends 100 MB at it;
- the SIA DC-09 receiver: the answers one UDP datagram of b"x\\r" * 32000 gets, and their bytes.

    .venv/bin/python packaging/scripts/bench_feeds.py [--mb 100] [--repeat 5] [--json]

Printed with the machine it ran on: compare figures from one run or one machine. It uses only what the code had
before the hardening too, so PYTHONPATH=<an older checkout> measures that one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from adapters.business.alarm.sia_dc09 import SiaDc09Receiver
from adapters.business.pos.receipt_text import ReceiptTextParser
from adapters.business.pos.transact import TransactServer
from plugin.config.alarms import AlarmPanelConfig
from plugin.config.pos import PosConfig, PosTextFeedConfig, PosTransactConfig
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.model import Transaction
from plugin.fusion.pos.service import PosService
from plugin.incidents.database import AsyncDatabase
from plugin.inference.server import free_port
from plugin.pipeline.presence import PresenceLog

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
PREFIXES = ["SALE ", "RETURN ", "*** VOID *** ", "PRICE OVERRIDE ", "EMPLOYEE DISCOUNT ", "TENDER X", "TOTAL ", "TXN ",
            "POST VOID ", "SALE x", ""]  # fmt: skip
UNITS = [" ", "\t", "1", "1 ", "a ", "*", "* ", ".", "1.", "1.1 ", "->", "1.1->", " 1.1 ->", "EMP ", "ORIG ",
         " REFUND", "*** ", "x*", "-1 ", "ORIG x ", "41111"]  # fmt: skip
TAILS = ["", "x", "!", " x", "1.1 x"]


def hostile_lines() -> list[str]:
    """Every shape, 400 characters each."""
    return [(p + u * 400)[: 400 - len(t)] + t for p, u, t in itertools.product(PREFIXES, UNITS, TAILS)]


def parse_ms(feed: PosTextFeedConfig, line: str, repeat: int) -> float:
    """The best of `repeat` times to feed a transaction's hostile line and its end (where the item patterns run)."""
    best = float("inf")
    for _ in range(repeat):
        parser = ReceiptTextParser(feed, ZoneInfo("UTC"), clock=lambda: T0)
        parser.feed_line("TXN 1 LANE 3")
        started = time.perf_counter()
        parser.feed_line(line)
        parser.feed_line("END TXN 1")
        best = min(best, time.perf_counter() - started)
    return best * 1000


def bench_receipt_text(repeat: int) -> dict[str, Any]:
    feed = PosTextFeedConfig(port=0, lane="3")
    parse_ms(feed, "SALE Jeans 39.99", 1)  # warm up: the patterns compile on first use
    times = {line: parse_ms(feed, line, repeat) for line in hostile_lines()}
    worst = max(times, key=lambda k: times[k])
    return {
        "lines": len(times),
        "sale_390_spaces_ms": round(parse_ms(feed, "SALE " + " " * 390, repeat), 3),
        "worst_ms": round(times[worst], 3),
        "worst_line": worst[:40] + "...",
        "median_ms": round(statistics.median(times.values()), 3),
    }


def rss_mb() -> float:
    """This process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench_transact(mb: int, data_dir: Path) -> dict[str, Any]:
    database = AsyncDatabase(data_dir / "transact.sqlite")
    service = PosService(PosConfig(), "store", "UTC", BusinessHub(database), PresenceLog(), None)
    server = TransactServer(PosTransactConfig(port=0), service)
    await server.start()
    chunk = b"x" * (1024 * 1024)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(200):
            if server.clients:
                break
            await asyncio.sleep(0.01)
        before = rss_mb()
        highest = before
        for i in range(mb):
            writer.write(chunk)
            await writer.drain()
            if i % 10 == 9:
                highest = max(highest, rss_mb())
        await asyncio.sleep(0.5)  # let the server read what is in flight
        after = rss_mb()
        txn = Transaction.model_validate({"id": "B1", "lane": "3", "end": T0, "type": "no_sale"})
        await service.submit(txn, "bench")
        async with asyncio.timeout(30):
            while not (await reader.readline()).startswith(b"END TXN"):
                pass
        writer.close()
    finally:
        await server.close()
        await service.close()
        await database.close()
    return {"sent_mb": mb, "rss_before_mb": round(before, 1), "rss_highest_mb": round(max(highest, after), 1),
            "rss_after_mb": round(after, 1), "still_serving": True}  # fmt: skip


class _Hub:
    async def ingest(self, event: Any, dedupe_key: str | None = None) -> tuple[str, bool]:
        return "bench", True


def _frame(body: str) -> bytes:
    from adapters.business.alarm.dc09_framing import crc16_arc

    data = body.encode()
    return b"\n" + f"{crc16_arc(data):04X}{len(data):04X}".encode() + data + b"\r"


def _count_answers(sock: socket.socket, marker: bytes, timeout_s: float) -> list[bytes]:
    """Every datagram the sender gets until the marker's answer (in a thread: the receiver shares the loop)."""
    answers: list[bytes] = []
    sock.settimeout(timeout_s)
    while True:
        data = sock.recv(65536)
        if marker in data:
            return answers
        answers.append(data)


async def bench_dc09() -> dict[str, Any]:
    port = free_port()
    config = AlarmPanelConfig.model_validate(
        {"id": "bench", "protocol": "sia_dc09", "port": port, "transports": ["udp"], "accounts": [{"account": "1234"}]}
    )
    receiver = SiaDc09Receiver(config, _Hub(), "store", now=lambda: T0)  # type: ignore[arg-type]
    await receiver.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):  # root may lift the cap, so that no answer is lost to a full buffer
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 * 1024 * 1024)  # Linux: 33
    sock.connect(("127.0.0.1", port))
    hostile = b"x\r" * 32000
    try:
        started = time.perf_counter()
        counting = asyncio.create_task(asyncio.to_thread(_count_answers, sock, b'"ACK"9999', 300))
        sock.send(hostile)
        # a link test after it: datagrams are taken in order, so its ACK comes after every answer to the first
        sock.send(_frame('"NULL"9999R1L1#1234[]' + T0.strftime("_%H:%M:%S,%m-%d-%Y")))
        answers = await counting
        took = time.perf_counter() - started
    finally:
        sock.close()
        await receiver.close()
    out = sum(len(a) for a in answers)
    return {"datagram_bytes": len(hostile), "answers": len(answers), "answer_bytes": out,
            "reflection": round(out / len(hostile), 2), "seconds": round(took, 2)}  # fmt: skip


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python":
            platform.python_version(), "load_1min": round(load[0], 2)}  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "receipt_text"):
            out["receipt_text"] = bench_receipt_text(args.repeat)
        if args.only in (None, "transact"):
            out["transact"] = await bench_transact(args.mb, Path(tmp))
        if args.only in (None, "dc09_udp"):
            out["dc09_udp"] = await bench_dc09()
    return out


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="megabytes a peer sends the Transact feed")
    parser.add_argument("--repeat", type=int, default=5, help="runs per hostile line (the best is kept)")
    parser.add_argument("--only", choices=["receipt_text", "transact", "dc09_udp"], help="one measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, load {m['load_1min']}")
    if r := result.get("receipt_text"):
        print(
            f"receipt text: {r['lines']} hostile 400-character lines, worst {r['worst_ms']} ms "
            f"({r['worst_line']!r}), median {r['median_ms']} ms; 'SALE ' + 390 spaces {r['sale_390_spaces_ms']} ms"
        )
    if t := result.get("transact"):
        print(
            f"Transact: {t['sent_mb']} MB from one peer: RSS {t['rss_before_mb']} MB before, "
            f"{t['rss_highest_mb']} MB at most, {t['rss_after_mb']} MB after; receipts still served"
        )
    if d := result.get("dc09_udp"):
        print(
            f"DC-09 UDP: one datagram of {d['datagram_bytes']} bytes got {d['answers']} answers "
            f"({d['answer_bytes']} bytes, {d['reflection']}x) in {d['seconds']} s"
        )


if __name__ == "__main__":
    main()
