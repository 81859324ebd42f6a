"""`storesight hq bench`: head office under a chain's load, measured (never asserted). A synthetic chain
(plugin/cli/hq_synth.py: N stores x 16 cameras) is sent through the real sink path (adapters/sinks/hq.py, HTTP, the
ingest handler, PostgreSQL) to a head office running as its own process, for the ingest rate against the chain's
average arrival rate; then `--days` of history are bulk-loaded (COPY, the same generator) and the chain overview, a
store page and the ROI report are timed (p50/p95); PostgreSQL's size per store-day and the head-office process's
memory are reported.

The pages are read as a signed-in admin: the benchmark's head office (`storesight hq serve` on 127.0.0.1) creates its
first admin with a random per-run password and the benchmark signs in through the sign-in form."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np

from adapters.sinks.hq import HqSink, HqSinkConfig
from plugin.cli.hq_synth import SynthStore, hour_incidents, hour_records, verdict_for
from plugin.cli.pg_local import LocalPostgres, die_with_parent, postgres_missing
from plugin.errors import StoreSightError
from plugin.hq.db import HqDatabase

log = logging.getLogger(__name__)
CSRF_VALUE = re.compile(r'name="csrf_token" value="([^"]+)"')
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def evidence_jpeg(quality: int = 80, width: int | None = None) -> bytes:
    """An evidence picture of a realistic size: a frame of the demo clip when it is here, else a drawn one (`width`:
    scaled down, for the bulk-loaded history's placeholders)."""
    clip = Path(os.environ.get("STORESIGHT_MEDIA_DIR", "storesight-data/media")) / "one-by-one-person-detection.mp4"
    frame = None
    if clip.is_file():
        cap = cv2.VideoCapture(str(clip))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
        ok, frame = cap.read()
        cap.release()
        frame = frame if ok else None
    if frame is None:
        rng = np.random.default_rng(7)
        frame = cv2.GaussianBlur(rng.integers(0, 255, (432, 768, 3), dtype=np.uint8), (9, 9), 3)
    if width is not None:
        frame = cv2.resize(frame, (width, width * frame.shape[0] // frame.shape[1]), interpolation=cv2.INTER_AREA)
    return bytes(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())


class HqProcess:
    """Head office as its own process (so its memory and CPU are its own), with the per-run bench sign-in."""

    def __init__(self, dsn: str, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.password = secrets.token_urlsafe(18)
        env = {**os.environ, "STORESIGHT_HQ_DATABASE_URL": dsn, "STORESIGHT_ADMIN_PASSWORD": self.password}
        self.log = open(workdir / "hq.log", "wb")  # noqa: SIM115 (open while the process runs)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "hq", "serve", "--listen", f"{HOST}:{self.port}"],
            env=env,
            cwd=workdir,  # its state (storesight-data/hq) stays in the benchmark's folder
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a benchmark killed outright takes its head office with it
        )

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /healthz answers."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise StoreSightError(f"head office exited with {self.proc.returncode}")
                try:
                    async with s.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise StoreSightError("head office did not answer /healthz in time")

    def memory_mib(self) -> dict[str, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM)."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
        return out

    def stop(self) -> None:
        """SIGTERM, then kill."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def arrival_rate(stores: list[SynthStore], day: datetime) -> tuple[float, float]:
    """The chain's average records per second and incidents per store-day, from one day of every store (each
    incident is two records: its start and its end)."""
    records = incidents = 0
    for store in stores:
        for h in range(24):
            hour = day + timedelta(hours=h)
            n = len(hour_incidents(store, hour, None))
            incidents += n
            records += 2 * n + 3
    return records / 86400.0, incidents / len(stores)


def live_records(stores: list[SynthStore], start: datetime, jpeg: bytes) -> Iterator[tuple[int, str, str, dict]]:  # type: ignore[type-arg]
    """The records the chain sends from `start` on, hour by hour, in the order they happen: (store, key, kind, data)."""
    h = 0
    while True:
        hour = start + timedelta(hours=h)
        for i, store in enumerate(stores):
            for inc in hour_incidents(store, hour, jpeg):
                yield i, f"{inc['id']}:start:0", "incident", inc | {"state": "start", "seq": 0, "end": None}
                yield i, f"{inc['id']}:end:1", "incident", inc | {"snapshot_jpeg": None}
            for kind, key, data in hour_records(store, hour):
                yield i, key, kind, data
        h += 1


async def measure_ingest(
    url: str,
    stores: list[SynthStore],
    tokens: dict[str, str],
    start: datetime,
    jpeg: bytes,
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """Post the chain's records through the hq sink (one sink per store, `concurrency` at once) for `seconds`."""
    sinks = [HqSink(HqSinkConfig(kind="hq", id="hq", url=url, store=s.id, token=tokens[s.id])) for s in stores]
    feed = live_records(stores, start, jpeg)
    sent, refused, latencies = 0, 0, []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal sent, refused
        while time.monotonic() < deadline:
            i, key, kind, data = next(feed)
            t = time.perf_counter()
            try:
                await sinks[i].publish_record(key, kind, data)
                sent += 1
            except Exception:  # counted: the figure is what was accepted
                refused += 1
            latencies.append(time.perf_counter() - t)

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for sink in sinks:
            await sink.close()
    elapsed = time.monotonic() - t0
    latencies.sort()
    return {
        "records": sent,
        "refused": refused,
        "seconds": round(elapsed, 1),
        "per_s": round(sent / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1) if latencies else None,
    }


async def bulk_load(
    db: HqDatabase, stores: list[SynthStore], first: datetime, days: int, thumb: bytes
) -> dict[str, Any]:
    """`days` of history for every store, straight into the tables (COPY), then the day tables from them."""
    t0 = time.monotonic()
    async with db.pool.acquire() as conn:
        for s in stores:
            hours, incidents, verdicts, versions = [], [], [], []
            last_rules: dict[str, Any] = {}
            for h in range(days * 24):
                hour = first + timedelta(hours=h)
                (_, _, rollup), (_, _, pos), (_, _, health) = hour_records(s, hour)
                visitors = int(sum(r["count"] for r in rollup["rows"] if r["metric"] == "in"))
                txns = sum(r["transactions"] for r in pos["rows"])
                hours.append(
                    (
                        s.id,
                        hour,
                        visitors,
                        rollup["rows"],
                        rollup["limits"],
                        rollup["rules"],
                        txns,
                        round(sum(r["amount"] for r in pos["rows"]), 2),
                        pos["rows"],
                        health["cameras"],
                    )
                )
                for rid, cfg in rollup["rules"].items():
                    if last_rules.get(rid) != cfg:
                        versions.append((s.id, rid, hour, cfg))
                        last_rules[rid] = cfg
                for inc in hour_incidents(s, hour, None):
                    start, end = datetime.fromisoformat(inc["start"]), datetime.fromisoformat(inc["end"])
                    incidents.append(
                        (
                            s.id,
                            inc["id"],
                            inc["rule_id"],
                            inc["type"],
                            inc["camera"],
                            inc["zone"],
                            inc["severity"],
                            "end",
                            1,
                            start,
                            end,
                            inc["explanation"],
                            inc["details"] | {"track_ids": inc["track_ids"]},
                            thumb,
                        )
                    )
                    judged = verdict_for(s, inc)
                    if judged is not None:
                        verdicts.append(
                            (
                                s.id,
                                inc["id"],
                                judged[0],
                                judged[1],
                                "",
                                "analyst",
                                "hq",
                                end,
                                inc["rule_id"],
                                inc["type"],
                                inc["camera"],
                                start,
                            )
                        )
            await conn.copy_records_to_table(
                "store_hours",
                records=hours,
                columns=[
                    "store_id",
                    "hour",
                    "visitors",
                    "series",
                    "limits",
                    "rules",
                    "transactions",
                    "amount",
                    "pos",
                    "health",
                ],
            )
            await conn.copy_records_to_table(
                "incidents",
                records=incidents,
                columns=[
                    "store_id",
                    "id",
                    "rule_id",
                    "type",
                    "camera",
                    "zone",
                    "severity",
                    "state",
                    "seq",
                    "start_at",
                    "end_at",
                    "explanation",
                    "details",
                    "snapshot",
                ],
            )
            await conn.copy_records_to_table(
                "feedback",
                records=verdicts,
                columns=[
                    "store_id",
                    "incident_id",
                    "verdict",
                    "reason",
                    "comment",
                    "by_user",
                    "source",
                    "at",
                    "rule_id",
                    "type",
                    "camera",
                    "incident_start",
                ],
            )
            await conn.copy_records_to_table(
                "verdicts",
                records=[(v[0], v[1], v[2], v[7], v[8], v[9], v[10], v[11]) for v in verdicts],
                columns=["store_id", "incident_id", "verdict", "at", "rule_id", "type", "camera", "incident_start"],
            )
            await conn.executemany("INSERT INTO rule_versions VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", versions)
        loaded = time.monotonic() - t0
        # the day tables, as ingest would have kept them, for the loaded stores and days only
        span = ([s.id for s in stores], first, first + timedelta(days=days))
        await conn.execute(
            """INSERT INTO store_days (store_id, day, visitors, transactions, amount)
               SELECT h.store_id, (h.hour AT TIME ZONE s.timezone)::date, sum(visitors), sum(transactions),
                      sum(amount) FROM store_hours h JOIN stores s ON s.id = h.store_id
               WHERE h.store_id = ANY($1) AND h.hour >= $2 AND h.hour < $3 GROUP BY 1, 2
               ON CONFLICT (store_id, day) DO UPDATE SET visitors = store_days.visitors + excluded.visitors,
                   transactions = store_days.transactions + excluded.transactions,
                   amount = store_days.amount + excluded.amount""",
            *span,
        )
        await conn.execute(
            """INSERT INTO day_types (store_id, day, type, incidents, seconds)
               SELECT i.store_id, (i.start_at AT TIME ZONE s.timezone)::date, i.type, count(*),
                      coalesce(sum(extract(epoch FROM i.end_at - i.start_at)), 0)
               FROM incidents i JOIN stores s ON s.id = i.store_id
               WHERE i.store_id = ANY($1) AND i.start_at >= $2 AND i.start_at < $3 GROUP BY 1, 2, 3
               ON CONFLICT (store_id, day, type) DO UPDATE SET incidents = day_types.incidents + excluded.incidents,
                   seconds = day_types.seconds + excluded.seconds""",
            *span,
        )
        await conn.execute(
            """INSERT INTO verdict_days (store_id, day, type, rule_id, camera, confirmed, false_alarm, unsure)
               SELECT v.store_id, (v.incident_start AT TIME ZONE s.timezone)::date, v.type, v.rule_id, v.camera,
                      count(*) FILTER (WHERE verdict = 'confirmed'), count(*) FILTER (WHERE verdict = 'false_alarm'),
                      count(*) FILTER (WHERE verdict = 'unsure')
               FROM verdicts v JOIN stores s ON s.id = v.store_id
               WHERE v.store_id = ANY($1) AND v.incident_start >= $2 AND v.incident_start < $3 GROUP BY 1, 2, 3, 4, 5
               ON CONFLICT (store_id, day, type, rule_id, camera) DO UPDATE SET
                   confirmed = verdict_days.confirmed + excluded.confirmed,
                   false_alarm = verdict_days.false_alarm + excluded.false_alarm,
                   unsure = verdict_days.unsure + excluded.unsure""",
            *span,
        )
        await conn.execute("ANALYZE")
    return {"seconds": round(time.monotonic() - t0, 1), "copy_seconds": round(loaded, 1)}


async def sign_in(http: aiohttp.ClientSession, base: str, name: str, password: str) -> str:
    """Sign in through the shared login's form as a browser does; the session's CSRF token for forms. The session
    needs a cookie jar that keeps cookies from an IP host (`aiohttp.CookieJar(unsafe=True)`)."""
    async with http.get(f"{base}/login") as resp:
        found = CSRF_VALUE.findall(await resp.text())
    if not found:
        raise StoreSightError(f"{base}/login: no sign-in form")
    form = {"username": name, "password": password, "csrf_token": found[0], "next": "/"}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        if resp.status != 303:
            raise StoreSightError(f"sign-in as {name} refused: HTTP {resp.status}")
    async with http.get(f"{base}/") as resp:
        found = CSRF_VALUE.findall(await resp.text())
    return found[0] if found else ""


async def time_pages(url: str, password: str, pages: dict[str, str], samples: int) -> dict[str, dict[str, float]]:
    """Each page `samples` times, one request at a time, signed in as admin: p50 and p95 in milliseconds."""
    out = {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await sign_in(s, url, "admin", password)
        for name, path in pages.items():
            times = []
            for _ in range(samples + 2):
                t = time.perf_counter()
                async with s.get(url + path) as r:
                    await r.read()
                    if r.status != 200:
                        raise StoreSightError(f"{path}: HTTP {r.status}")
                times.append(1000 * (time.perf_counter() - t))
            times = sorted(times[2:])  # the first two warm the caches
            out[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
            }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark."""
    local = None
    dsn = args.database_url or os.environ.get("STORESIGHT_HQ_DATABASE_URL")
    if not dsn:
        if (missing := postgres_missing()) is not None:
            raise StoreSightError(f"no --database-url and no local PostgreSQL to start: {missing}")
        local = LocalPostgres(durable=True)  # fsync on: the figures are a real server's
        await asyncio.to_thread(local.start)
        dsn = await local.create_database_async("hqbench")
    workdir = Path(tempfile.mkdtemp(prefix="storesight-hqbench-"))
    hq = HqProcess(dsn, workdir)
    result: dict[str, Any] = {
        "stores": args.stores,
        "cameras_per_store": 16,
        "days": args.days,
        "load_average_at_start": os.getloadavg(),
    }
    try:
        await hq.wait_ready()
        db = await HqDatabase.open(dsn, min_size=1, max_size=2)
        stores = [SynthStore.make(n) for n in range(args.stores)]
        tokens = {s.id: await db.add_store(s.id, s.name, s.timezone) for s in stores}
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=args.days)
        rate, per_day = arrival_rate(stores, today - timedelta(days=1))
        jpeg = evidence_jpeg()
        result["arrival"] = {
            "records_per_s": round(rate, 2),
            "incidents_per_store_day": round(per_day, 1),
            "evidence_jpeg_bytes": len(jpeg),
        }
        print(
            f"hq bench: {args.stores} stores send {rate:.2f} records/s on average; ingesting for "
            f"{args.ingest_seconds:.0f} s",
            file=sys.stderr,
        )
        result["ingest"] = await measure_ingest(
            hq.url, stores, tokens, today, jpeg, args.ingest_seconds, args.concurrency
        )
        result["ingest"]["times_average_arrival"] = round(result["ingest"]["per_s"] / rate, 1)
        result["memory_after_ingest_mib"] = hq.memory_mib()
        if args.days:
            print(f"hq bench: bulk-loading {args.days} days of {args.stores} stores", file=sys.stderr)
            # a small placeholder per incident keeps the load quick; the size figure adds the real picture's bytes
            thumb = evidence_jpeg(quality=50, width=96)
            result["bulk_load"] = await bulk_load(db, stores, first, args.days, thumb)
            size = int(await db.pool.fetchval("SELECT pg_database_size(current_database())"))
            incidents = int(await db.pool.fetchval("SELECT count(*) FROM incidents"))
            store_days = args.stores * args.days
            result["size"] = {
                "database_bytes": size,
                "incidents": incidents,
                "bytes_per_store_day_with_thumbnail": round(size / store_days),
                "thumbnail_bytes": len(thumb),
                "bytes_per_store_day_with_real_evidence": round(
                    (size + incidents * (len(jpeg) - len(thumb))) / store_days
                ),
            }
        riskiest = stores[0].id
        pages = {
            "chain overview (28 days)": "/?days=28",
            "store page (7 days)": f"/stores/{riskiest}?days=7",
            "ROI report (month, chain)": "/roi?period=month",
            "ROI report (month, one store)": f"/roi?period=month&store={riskiest}",
        }
        result["pages"] = await time_pages(hq.url, hq.password, pages, args.page_samples)
        result["memory_end_mib"] = hq.memory_mib()
        await db.close()
    finally:
        hq.stop()
        if local is not None:
            await asyncio.to_thread(local.stop)
    result["load_average_at_end"] = os.getloadavg()
    return result


def report(args: argparse.Namespace) -> int:
    """Run the benchmark and print what it measured."""
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    a, i = result["arrival"], result["ingest"]
    print(
        f"chain: {result['stores']} stores x 16 cameras, {a['incidents_per_store_day']} incidents per store-day, "
        f"{a['records_per_s']} records/s on average"
    )
    print(
        f"ingest through the hq sink: {i['per_s']} records/s ({i['times_average_arrival']}x the average arrival), "
        f"p50 {i['p50_ms']} ms, p95 {i['p95_ms']} ms, {i['refused']} refused"
    )
    if "size" in result:
        s = result["size"]
        print(
            f"{result['days']} days loaded in {result['bulk_load']['seconds']} s: database "
            f"{s['database_bytes'] / 2**30:.2f} GiB, {s['bytes_per_store_day_with_thumbnail'] / 1024:.0f} KiB per "
            f"store-day ({s['bytes_per_store_day_with_real_evidence'] / 2**20:.2f} MiB with full-size evidence)"
        )
    for name, p in result["pages"].items():
        print(f"{name}: p50 {p['p50_ms']} ms, p95 {p['p95_ms']} ms")
    print(
        f"head-office process memory: {result['memory_end_mib']}; load average {result['load_average_at_start']}"
        f" -> {result['load_average_at_end']}"
    )
    return 0
