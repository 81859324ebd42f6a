#!/usr/bin/env python3
"""What `synchronous=FULL` costs for acknowledged writes (a DC-09 ACK, a POS 202 wait for one): N business events
stored one by one, as the intake does, with NORMAL (synced at checkpoints only) and FULL (the WAL synced at each
commit), on the file system that holds DIR (use the data folder's disk: tmpfs or a RAM-backed /tmp measures
nothing).

    .venv/bin/python packaging/scripts/sync_cost.py --dir /var/lib/storesight --events 500

Prints per-write latency (p50, p95, max) and writes/s for each mode, interleaved in rounds so a busy neighbour
hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from plugin.incidents.database import Database
from plugin.types import BusinessEvent


def _round(db: Database, n: int, durable: bool) -> list[float]:
    """n events, each its own transaction; the seconds each took."""
    took = []
    for i in range(n):
        event = BusinessEvent("pos", "store", datetime.now(UTC), "pos.transaction", {"n": i, "total": 12.5})
        t0 = time.perf_counter()
        db.save_business_event(str(uuid.uuid4()), event, None, durable)
        took.append(time.perf_counter() - t0)
    return took


def main() -> None:
    """Measure and print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("."), help="a folder on the disk to measure (a temp folder in it)")
    p.add_argument("--events", type=int, default=500, help="events per mode")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (the events are split among them)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="storesight-sync-") as tmp:
        db = Database(Path(tmp) / "storesight.db")
        _round(db, 20, False)  # the first commits create the WAL (its header is synced whatever the mode)
        results: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
        per_round = max(1, args.events // args.rounds)
        for _ in range(args.rounds):
            results["NORMAL"] += _round(db, per_round, False)
            results["FULL"] += _round(db, per_round, True)
        db.close()
    print(f"{per_round * args.rounds} acknowledged writes per mode on {args.dir.resolve()}")
    for mode, took in results.items():
        ms = sorted(1000 * t for t in took)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(f"{mode:>6}: p50 {statistics.median(ms):6.2f} ms  p95 {p95:6.2f} ms  max {ms[-1]:7.2f} ms  "
              f"{len(ms) / sum(took):8.0f} writes/s")  # fmt: skip


if __name__ == "__main__":
    main()
