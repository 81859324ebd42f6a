"""`storesight hq demo`: head office for the demo (packaging/scripts/demo.sh) on a throwaway PostgreSQL that dies with
it. It registers the demo's stores (their tokens in files for the bridges), loads a few weeks of clearly named sample
stores so the chain view has a chain to show, and serves on loopback only. Sign in as `admin` with
$STORESIGHT_ADMIN_PASSWORD (the shared login's first admin; without it, a generated password is written to the data
folder)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from plugin.cli.hq_bench import bulk_load, evidence_jpeg
from plugin.cli.hq_synth import SynthStore
from plugin.cli.pg_local import LocalPostgres, postgres_missing
from plugin.errors import StoreSightError
from plugin.hq.app import new_hq_app
from plugin.hq.config import HqConfig
from plugin.hq.db import HqDatabase

log = logging.getLogger(__name__)


def _store_arg(text: str) -> tuple[str, str, str]:
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise StoreSightError(f"--store {text!r}: expected ID:NAME:TIMEZONE")
    return parts[0], parts[1], parts[2]


async def _prepare(dsn: str, args: argparse.Namespace, data: Path) -> None:
    db = await HqDatabase.open(dsn, min_size=1, max_size=2)
    try:
        for store_id, name, tz in (_store_arg(s) for s in args.store):
            token = await db.add_store(store_id, name, tz)
            path = data / f"{store_id}.token"
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
        samples = []
        for n in range(1, args.sample_stores + 1):
            s = SynthStore.make(100 + n)
            samples.append(SynthStore(s.id, f"{s.name} (sample)", s.timezone, s.size, s.risk))
        for s in samples:
            await db.add_store(s.id, s.name, s.timezone)
        if samples and args.sample_days:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            await bulk_load(
                db, samples, today - timedelta(days=args.sample_days), args.sample_days, evidence_jpeg(quality=60)
            )
    finally:
        await db.close()


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo's head office until interrupted."""
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not ipaddress.ip_address(host or "0.0.0.0").is_loopback:
        raise StoreSightError(f"--listen {args.listen!r}: the demo serves on a loopback HOST:PORT only")
    if (missing := postgres_missing()) is not None:
        raise StoreSightError(f"the demo needs PostgreSQL: {missing}")
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    # a SIGTERM while the database is being prepared still runs the cleanup below (run_app handles it later on)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pg = LocalPostgres()
    pg.start()
    try:
        dsn = pg.create_database("storesight_hq")
        asyncio.run(_prepare(dsn, args, data))
        link = f"http://{host}:{port}/"

        def ready(_banner: str) -> None:
            # run_app calls this once the port is open: only then may demo.sh start the bridges
            (data / "ready").write_text(link + "\n")
            print(f"head office: open {link}", flush=True)

        config = HqConfig(database_url=dsn, host=host, port=int(port), state_dir=data)
        web.run_app(new_hq_app(config), host=host, port=int(port), print=ready, access_log=None)
    finally:
        pg.stop()
    return 0
