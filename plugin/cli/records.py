"""`storesight incidents`, `outbox` and `insights`: what the database holds, read without the bridge running."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from plugin.config.loader import load_config
from plugin.errors import StoreSightError

if TYPE_CHECKING:
    pass


def cmd_incidents(args: argparse.Namespace) -> int:
    """Print stored incidents."""
    from plugin.incidents.database import Database

    config = load_config(args.config)
    db = config.storage.path / "storesight.db"
    rows = Database(db).incidents(limit=args.limit) if db.exists() else []
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['start']}  {r['camera']:<10} {r['rule_id']:<20} {r['state']:<5} {r['explanation']}")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Inspect deliveries, or requeue dead letters."""
    from plugin.incidents.database import Database

    config = load_config(args.config)
    db = config.storage.path / "storesight.db"
    if not db.exists():
        raise StoreSightError(f"no database yet at {db}")
    database = Database(db)
    try:
        if args.outbox_command == "retry":
            n = database.retry_dead(args.sink, args.key)
            print(f"requeued {n} dead-lettered deliver{'y' if n == 1 else 'ies'}; a running bridge sends them now")
            return 0
        rows = database.deliveries(args.state, args.limit)
    finally:
        database.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['created']}  {r['sink']:<12} {r['state']:<9} {r['attempts']:>3}  {r['delivery_key']}  "
                  f"{r['last_error'] or ''}")  # fmt: skip
    return 0


def _parse_when(text: str, tz: str, flag: str) -> datetime:
    """An ISO date or date-time; without an offset it is local time of the site."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        example = "e.g. 2026-11-29 or 2026-11-29T09:00"
        raise StoreSightError(f"{flag}: {text!r} is not an ISO date or date-time ({example})") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))


def cmd_insights(args: argparse.Namespace) -> int:
    """Footfall, occupancy, incidents and dwell for a time range."""
    from plugin.incidents.database import Database
    from plugin.insights.rollups import hour_bucket, summarise

    config = load_config(args.config)
    tz = config.site.timezone
    start = _parse_when(args.from_, tz, "--from") if args.from_ else datetime(1970, 1, 1, tzinfo=UTC)
    end = _parse_when(args.to, tz, "--to") if args.to else datetime(9999, 1, 1, tzinfo=UTC)
    if end <= start:
        raise StoreSightError("--to must be after --from")
    db = config.storage.path / "storesight.db"
    rows: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []
    if db.exists():
        database = Database(db)
        try:
            rows = database.rollups(hour_bucket(start), end.astimezone(UTC).isoformat())
            incidents = database.incidents_between(start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat())
            resets = database.occupancy_resets(start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat())
        finally:
            database.close()
    summary = summarise(rows, incidents, resets)
    doc = {"site": config.site.id, "from": start.isoformat(), "to": end.isoformat(), **summary}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{config.site.id}: {doc['from']} .. {doc['to']}")
    for rule_id, c in doc["lines"].items():
        print(f"  line {rule_id}: in {c['in']}, out {c['out']}")
    for rule_id, o in doc["occupancy"].items():
        print(f"  occupancy {rule_id} (zone {o['zone']}): max {o['max']}, mean {o['avg']}")
    for rule_id, q in doc["queues"].items():
        print(f"  queue {rule_id} (zone {q['zone']}): longest {q['max_length']}, mean {q['avg_length']}; ", end="")
        print(f"wait up to {q['max_wait_s']} s, mean {q['avg_wait_s']} s")
    for store_id, s in doc["store_occupancy"].items():
        print(f"  store occupancy {store_id}: max {s['max']}, mean {s['avg']}, last {s['last']}; drift: ", end="")
        print(f"{s['out_at_zero']} out(s) at zero, {s['removed_at_reset']} removed at {s['resets']} closing reset(s)")
    for zone, d in doc["dwell"].items():
        print(f"  dwell in {zone}: {d['visits']} visit(s) over threshold, mean {d['avg_s']} s, longest {d['max_s']} s")
    for rule_id, n in doc["incidents"].items():
        print(f"  incidents {rule_id}: {n}")
    return 0
