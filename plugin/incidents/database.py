"""The SQLite (WAL) database: incidents, the outbox, business events, rollups and sink references. Nothing is
acknowledged before it is committed here, and what is acknowledged to a sender (business events: a POS 202, a DC-09
ACK) is committed with `synchronous=FULL`, so it survives a power cut, not only a crash.

The schema carries a version (`PRAGMA user_version`): each change is a numbered migration at the end of
`MIGRATIONS` (plugin/incidents/migrations.py), applied in its own transaction at open; a database of a newer release
is refused.

All calls run on one dedicated thread (SQLite connections are single-threaded and writes are serial anyway),
so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from plugin.incidents.documents import incident_to_json
from plugin.incidents.migrations import migrate
from plugin.private import create_private, private_dir
from plugin.types import BusinessEvent, Incident

T = TypeVar("T")
log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000  # another writer (a backup, `sqlite3` by hand) holds the lock: wait this long, then fail


def _delivery_json(row: sqlite3.Row) -> dict[str, Any]:
    state = "delivered" if row["delivered"] else "dead" if row["dead"] else "pending"
    return {
        "delivery_key": row["delivery_key"],
        "sink": row["sink_id"],
        "incident_id": row["incident_id"],
        "state": state,
        "attempts": row["attempts"],
        "created": row["created"],
        "delivered": row["delivered"],
        "dead": row["dead"],
        "last_error": row["last_error"],
        "receipt": row["receipt"],
    }


def _row_to_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "rule_id": row["rule_id"],
        "type": row["type"],
        "camera": row["camera"],
        "zone": row["zone"],
        "severity": row["severity"],
        "state": row["state"],
        "seq": row["seq"],
        "track_ids": json.loads(row["track_ids"]),
        "start": row["start"],
        "end": row["end"],
        "explanation": row["explanation"],
        "snapshot": row["snapshot"],
        "details": json.loads(row["details"]),
    }


@dataclass(frozen=True)
class Delivery:
    """One pending outbox row."""

    delivery_key: str
    sink_id: str
    incident_id: str
    payload: dict[str, Any]
    attempts: int
    kind: str = "incident"  # or a head-office record kind (rollup, pos, camera_health, feedback): hq sinks only


class Database:
    """Synchronous SQLite access; use `AsyncDatabase` from the event loop."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        private_dir(path.parent)
        # 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if f == path or f.exists():
                create_private(f)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: durable across process crashes; what a sender is acknowledged for is written FULL
            self.conn.execute("PRAGMA synchronous=NORMAL")
            migrate(self.conn, path)
        except BaseException:
            self.conn.close()
            raise

    def save(self, incident: Incident, sink_ids: Sequence[str]) -> None:
        """Upsert the incident and enqueue one delivery per sink, in one transaction (idempotent by key)."""
        doc = incident_to_json(incident)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                """INSERT INTO incidents (id, rule_id, type, camera, zone, severity, state, seq, start, "end",
                       track_ids, explanation, snapshot, details, updated)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET state=excluded.state, seq=excluded.seq, "end"=excluded."end",
                       track_ids=excluded.track_ids, explanation=excluded.explanation,
                       snapshot=COALESCE(excluded.snapshot, incidents.snapshot), details=excluded.details,
                       updated=excluded.updated""",
                (
                    incident.id, incident.rule_id, incident.type, incident.camera, incident.zone,
                    incident.severity, incident.state, incident.seq, doc["start"], doc["end"],
                    json.dumps(doc["track_ids"]), incident.explanation, incident.snapshot,
                    json.dumps(doc["details"]), datetime.now(UTC).isoformat(),
                ),
            )  # fmt: skip
            now = datetime.now(UTC).isoformat()
            for sink_id in sink_ids:
                self.conn.execute(
                    "INSERT OR IGNORE INTO outbox (delivery_key, sink_id, incident_id, payload, created)"
                    " VALUES (?,?,?,?,?)",
                    (incident.delivery_key, sink_id, incident.id, json.dumps(doc), now),
                )

    def incidents(self, limit: int = 1000, camera: str | None = None) -> list[dict[str, Any]]:
        """Stored incidents, newest first."""
        sql = "SELECT * FROM incidents"
        args: list[Any] = []
        if camera:
            sql += " WHERE camera = ?"
            args.append(camera)
        sql += " ORDER BY start DESC LIMIT ?"
        args.append(limit)
        docs = [_row_to_json(r) for r in self.conn.execute(sql, args)]
        self._attach_deliveries(docs)
        return docs

    def open_incidents(self, exclude_camera: str | None = None) -> list[dict[str, Any]]:
        """Incidents whose last stored state is not an end (what a run that stopped left open), oldest first."""
        sql = "SELECT * FROM incidents WHERE state != 'end'"
        args: list[Any] = []
        if exclude_camera is not None:
            sql += " AND camera != ?"
            args.append(exclude_camera)
        return [_row_to_json(r) for r in self.conn.execute(sql + " ORDER BY start, id", args)]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident by id."""
        row = self.conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            return None
        doc = _row_to_json(row)
        self._attach_deliveries([doc])
        return doc

    def _attach_deliveries(self, docs: list[dict[str, Any]]) -> None:
        """Each incident's delivery state per sink and state change, so the API shows what reached the VMS."""
        by_id = {d["id"]: d for d in docs}
        for d in docs:
            d["deliveries"] = []
        if not by_id:
            return
        marks = ",".join("?" * len(by_id))
        rows = self.conn.execute(
            f"""SELECT delivery_key, sink_id, incident_id, created, attempts, next_attempt, delivered, dead,
                       last_error, receipt FROM outbox WHERE incident_id IN ({marks}) ORDER BY created, rowid""",
            list(by_id),
        )
        for r in rows:
            entry = _delivery_json(r)
            del entry["incident_id"]
            by_id[r["incident_id"]]["deliveries"].append(entry)

    def due(self, sink_id: str, now: float, limit: int = 50, max_wait_s: float | None = None) -> list[Delivery]:
        """One sink's due deliveries in stored order, stopping at the first one still backing off.

        Head-of-line order: an incident's end never overtakes its start while the start is being retried.
        `max_wait_s`: the longest wait a retry is ever scheduled for; one due further ahead than that was scheduled
        before the wall clock went back (an NTP step), and is due now rather than after the jump.
        """
        rows = self.conn.execute(
            """SELECT delivery_key, sink_id, incident_id, payload, attempts, next_attempt, kind FROM outbox
               WHERE sink_id = ? AND delivered IS NULL AND dead IS NULL
               ORDER BY created, rowid LIMIT ?""",
            (sink_id, limit),
        )
        out = []
        for r in rows:
            if r[5] > now and (max_wait_s is None or r[5] - now <= max_wait_s):
                break
            out.append(Delivery(r[0], r[1], r[2], json.loads(r[3]), r[4], r[6]))
        return out

    def next_due(self, sink_id: str) -> float | None:
        """When this sink's oldest pending delivery is due (epoch seconds), None when nothing is pending."""
        row = self.conn.execute(
            """SELECT next_attempt FROM outbox WHERE sink_id = ? AND delivered IS NULL AND dead IS NULL
               ORDER BY created, rowid LIMIT 1""",
            (sink_id,),
        ).fetchone()
        if row is None:
            return None
        return None if row[0] is None else float(row[0])

    def mark_delivered(self, d: Delivery, receipt: str) -> None:
        """Record success."""
        with self.conn:
            self.conn.execute(
                "UPDATE outbox SET delivered=?, receipt=?, attempts=attempts+1, last_error=NULL"
                " WHERE delivery_key=? AND sink_id=?",
                (datetime.now(UTC).isoformat(), receipt, d.delivery_key, d.sink_id),
            )

    def mark_retry(self, d: Delivery, error: str, next_attempt: float) -> None:
        """Record a failure to retry later."""
        with self.conn:
            self.conn.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=?"
                " WHERE delivery_key=? AND sink_id=?",
                (error, next_attempt, d.delivery_key, d.sink_id),
            )

    def mark_dead(self, d: Delivery, error: str) -> None:
        """Move to the dead-letter state: kept for inspection and a manual retry, never retried by itself."""
        with self.conn:
            self.conn.execute(
                "UPDATE outbox SET attempts=attempts+1, dead=?, last_error=? WHERE delivery_key=? AND sink_id=?",
                (datetime.now(UTC).isoformat(), error, d.delivery_key, d.sink_id),
            )

    def retry_dead(self, sink_id: str | None = None, delivery_key: str | None = None) -> int:
        """Put dead letters back in the queue (all, one sink's, or one delivery); returns how many."""
        sql = "UPDATE outbox SET dead=NULL, attempts=0, next_attempt=0 WHERE dead IS NOT NULL"
        args: list[Any] = []
        if sink_id:
            sql += " AND sink_id=?"
            args.append(sink_id)
        if delivery_key:
            sql += " AND delivery_key=?"
            args.append(delivery_key)
        with self.conn:
            return self.conn.execute(sql, args).rowcount

    def deliveries(self, state: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Outbox rows without payload: state is pending, delivered or dead."""
        where = {
            None: "1=1",
            "pending": "delivered IS NULL AND dead IS NULL",
            "delivered": "delivered IS NOT NULL",
            "dead": "dead IS NOT NULL",
        }[state]
        rows = self.conn.execute(
            f"""SELECT delivery_key, sink_id, incident_id, created, attempts, next_attempt, delivered, dead,
                       last_error, receipt FROM outbox WHERE {where} ORDER BY created DESC, rowid DESC LIMIT ?""",
            (limit,),
        )
        return [_delivery_json(r) for r in rows]

    def outbox_counts(self) -> dict[str, dict[str, int]]:
        """Per sink: pending / delivered / dead row counts."""
        rows = self.conn.execute(
            """SELECT sink_id, SUM(delivered IS NULL AND dead IS NULL), SUM(delivered IS NOT NULL),
                      SUM(dead IS NOT NULL) FROM outbox GROUP BY sink_id"""
        )
        return {r[0]: {"pending": r[1] or 0, "delivered": r[2] or 0, "dead": r[3] or 0} for r in rows}

    def add_rollups(self, batch: Mapping[tuple[str, str, str, str, str], Any]) -> None:
        """Merge hourly roll-ups (counts add, gauges add samples, keep the peak and the latest value)."""
        with self.conn:
            for (bucket, camera, rule_id, metric, key), r in batch.items():
                self.conn.execute(
                    """INSERT INTO rollups (bucket, camera, rule_id, metric, key, count, total, n, peak, last, last_t)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(bucket, camera, rule_id, metric, key) DO UPDATE SET
                         count = count + excluded.count, total = total + excluded.total, n = n + excluded.n,
                         peak = MAX(peak, excluded.peak),
                         last = CASE WHEN excluded.last_t >= last_t THEN excluded.last ELSE last END,
                         last_t = MAX(last_t, excluded.last_t)""",
                    (bucket, camera, rule_id, metric, key, r.count, r.total, r.n, r.peak, r.last, r.last_t),
                )

    def rollups(self, start: str, end: str) -> list[dict[str, Any]]:
        """Roll-ups whose hour lies in [start, end) (ISO UTC text)."""
        rows = self.conn.execute(
            "SELECT * FROM rollups WHERE bucket >= ? AND bucket < ? ORDER BY bucket, camera, rule_id, metric, key",
            (start, end),
        )
        return [dict(r) for r in rows]

    def save_occupancy(self, state: Mapping[str, Any], reset: Mapping[str, Any] | None = None) -> None:
        """Upsert one store occupancy's live state, and record the reset that led to it, in one transaction."""
        with self.conn:
            self.conn.execute(
                """INSERT INTO store_occupancy (id, people, last_reset, out_at_zero, last_t, updated)
                   VALUES (?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET people=excluded.people, last_reset=excluded.last_reset,
                     out_at_zero=excluded.out_at_zero, last_t=excluded.last_t, updated=excluded.updated""",
                (
                    state["id"], state["people"], state["last_reset"], state["out_at_zero"], state["last_t"],
                    datetime.now(UTC).isoformat(),
                ),
            )  # fmt: skip
            if reset is not None:
                self.conn.execute(
                    "INSERT OR REPLACE INTO store_occupancy_resets (id, at, removed, out_at_zero) VALUES (?,?,?,?)",
                    (reset["id"], reset["at"], reset["removed"], reset["out_at_zero"]),
                )

    def occupancy_state(self, occupancy_id: str) -> dict[str, Any] | None:
        """One store occupancy's saved live state."""
        row = self.conn.execute("SELECT * FROM store_occupancy WHERE id = ?", (occupancy_id,)).fetchone()
        return None if row is None else dict(row)

    def occupancy_resets(self, start: str, end: str) -> list[dict[str, Any]]:
        """Closing resets in [start, end) (ISO UTC text), oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM store_occupancy_resets WHERE at >= ? AND at < ? ORDER BY at, id", (start, end)
        )
        return [dict(r) for r in rows]

    def incidents_between(self, start: str, end: str) -> list[dict[str, Any]]:
        """Incidents that started in [start, end)."""
        rows = self.conn.execute("SELECT * FROM incidents WHERE start >= ? AND start < ? ORDER BY start", (start, end))
        return [_row_to_json(r) for r in rows]

    def save_business_event(
        self, event_id: str, event: BusinessEvent, dedupe_key: str | None = None, durable: bool = True
    ) -> bool:
        """Store durably (committed, and synced to disk, before the sender is acknowledged); False when
        `dedupe_key` was seen before. `durable=False` only for measuring what the sync costs."""
        if durable:
            # FULL syncs the WAL at this commit (and so everything committed before it): an acknowledged event
            # survives a power cut; NORMAL would sync only at the next checkpoint
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            return self._insert_business_event(event_id, event, dedupe_key)
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    def _insert_business_event(self, event_id: str, event: BusinessEvent, dedupe_key: str | None) -> bool:
        with self.conn:
            cur = self.conn.execute(
                """INSERT OR IGNORE INTO business_events (id, source, site, time, kind, payload, received, dedupe_key)
                   VALUES (?,?,?,?,?,?,?,?)""",
                (
                    event_id, event.source, event.site, event.time.astimezone(UTC).isoformat(), event.kind,
                    json.dumps(dict(event.payload), default=str), datetime.now(UTC).isoformat(), dedupe_key,
                ),
            )  # fmt: skip
            return cur.rowcount == 1

    def business_events(self, start: str, end: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored business events with time in [start, end)."""
        sql = "SELECT * FROM business_events WHERE time >= ? AND time < ?"
        args: list[Any] = [start, end]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self.conn.execute(sql + " ORDER BY time", args)
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def purge(
        self,
        incidents_before: str | None,
        snapshots_before: str | None,
        events_before: str | None,
        rollups_before: str | None,
    ) -> dict[str, int]:
        """Delete what retention no longer keeps (ISO UTC cutoffs; None keeps that kind), in one transaction;
        returns how many rows of each kind went. Kept whatever its age: an incident still open, and one with a
        delivery still pending (the sink has not had it); the latest arm/disarm report of each panel area (the
        armed state rules read)."""
        gone: dict[str, int] = {}
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if incidents_before is not None:
                self.conn.execute(
                    """CREATE TEMP TABLE IF NOT EXISTS purged (id TEXT PRIMARY KEY)"""
                )  # fmt: skip
                self.conn.execute("DELETE FROM temp.purged")
                self.conn.execute(
                    """INSERT INTO temp.purged SELECT id FROM incidents i WHERE i.start < ? AND i.state = 'end'
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id
                                       AND o.delivered IS NULL AND o.dead IS NULL)""",
                    (incidents_before,),
                )
                gone["deliveries"] = self.conn.execute(
                    "DELETE FROM outbox WHERE incident_id IN (SELECT id FROM temp.purged)"
                ).rowcount
                gone["sink_refs"] = self.conn.execute(
                    "DELETE FROM sink_refs WHERE incident_id IN (SELECT id FROM temp.purged)"
                ).rowcount
                gone["incidents"] = self.conn.execute(
                    "DELETE FROM incidents WHERE id IN (SELECT id FROM temp.purged)"
                ).rowcount
                gone["feedback"] = self.conn.execute(
                    "DELETE FROM feedback WHERE incident_id IN (SELECT id FROM temp.purged)"
                ).rowcount
            if snapshots_before is not None:  # the files go after this commits (plugin/incidents/retention.py)
                gone["snapshots"] = self.conn.execute(
                    "UPDATE incidents SET snapshot = NULL WHERE start < ? AND snapshot IS NOT NULL", (snapshots_before,)
                ).rowcount
            if events_before is not None:
                gone["business_events"] = self.conn.execute(
                    """DELETE FROM business_events WHERE time < ? AND id NOT IN (
                         SELECT id FROM (
                           SELECT id, ROW_NUMBER() OVER (
                             PARTITION BY COALESCE(json_extract(payload, '$.panel'), source),
                                          COALESCE(json_extract(payload, '$.account'), ''),
                                          COALESCE(json_extract(payload, '$.area'), '0')
                             ORDER BY time DESC, received DESC) AS n
                           FROM business_events WHERE kind IN ('alarm.arm', 'alarm.disarm'))
                         WHERE n = 1)""",
                    (events_before,),
                ).rowcount
            if rollups_before is not None:
                gone["rollups"] = self.conn.execute("DELETE FROM rollups WHERE bucket < ?", (rollups_before,)).rowcount
                gone["occupancy_resets"] = self.conn.execute(
                    "DELETE FROM store_occupancy_resets WHERE at < ?", (rollups_before,)
                ).rowcount
                # head office's hourly records once sent (or dead-lettered), with the hours they describe; never
                # within a week, so the feed's look-back (48 h) still finds the hours it queued
                week_ago = (datetime.now(UTC) - timedelta(days=7)).isoformat()
                gone["records"] = self.conn.execute(
                    """DELETE FROM outbox WHERE kind NOT IN ('incident', 'feedback') AND created < ? AND created < ?
                       AND (delivered IS NOT NULL OR dead IS NOT NULL)""",
                    (rollups_before, week_ago),
                ).rowcount
        return gone

    def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        """A sink's stored reference for an incident."""
        row = self.conn.execute(
            "SELECT ref FROM sink_refs WHERE sink_id=? AND incident_id=?", (sink_id, incident_id)
        ).fetchone()
        return None if row is None else str(row[0])

    def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        """Database a sink's reference for an incident."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO sink_refs (sink_id, incident_id, ref, updated) VALUES (?,?,?,?)"
                " ON CONFLICT(sink_id, incident_id) DO UPDATE SET ref=excluded.ref, updated=excluded.updated",
                (sink_id, incident_id, ref, datetime.now(UTC).isoformat()),
            )

    # --- keyed records for head office (docs/hq.md): the outbox's `kind` column and local feedback -------------
    # Kept apart from SCHEMA so the database's migration mechanism can take it over as one step.

    def enqueue_record(self, kind: str, key: str, payload: Mapping[str, Any], sink_ids: Sequence[str]) -> bool:
        """Queue one keyed record (a roll-up hour, a POS hour, camera health, feedback) for the given sinks;
        False when the key was queued before (a record is sent once, whatever happens later)."""
        now = datetime.now(UTC).isoformat()
        added = 0
        with self.conn:
            for sink_id in sink_ids:
                added += self.conn.execute(
                    "INSERT OR IGNORE INTO outbox (delivery_key, sink_id, incident_id, payload, created, kind)"
                    " VALUES (?,?,?,?,?,?)",
                    (key, sink_id, key, json.dumps(dict(payload)), now, kind),
                ).rowcount
        return added > 0

    def record_queued(self, key: str) -> bool:
        """Whether a record with this key was ever queued (sent or not)."""
        return self.conn.execute("SELECT 1 FROM outbox WHERE delivery_key = ? LIMIT 1", (key,)).fetchone() is not None

    def save_feedback(self, doc: Mapping[str, Any], sink_ids: Sequence[str]) -> None:
        """Store a verdict on an incident and queue it for head office, in one transaction."""
        with self.conn:
            cur = self.conn.execute(
                """INSERT INTO feedback (incident_id, verdict, reason, comment, by_user, at) VALUES (?,?,?,?,?,?)""",
                (doc["incident_id"], doc["verdict"], doc["reason"], doc["comment"], doc["by_user"], doc["at"]),
            )
            key = f"feedback:{doc['incident_id']}:{cur.lastrowid}"
            for sink_id in sink_ids:
                self.conn.execute(
                    "INSERT OR IGNORE INTO outbox (delivery_key, sink_id, incident_id, payload, created, kind)"
                    " VALUES (?,?,?,?,?,'feedback')",
                    (key, sink_id, doc["incident_id"], json.dumps(dict(doc)), doc["at"]),
                )

    def feedback_of(self, incident_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The verdicts given here on each of these incidents, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in incident_ids}
        marks = ",".join("?" * len(out))
        if marks:
            rows = self.conn.execute(f"SELECT * FROM feedback WHERE incident_id IN ({marks}) ORDER BY id", list(out))
            for r in rows:
                out[r["incident_id"]].append(dict(r))
        return out

    def feedback(self, incident_id: str) -> list[dict[str, Any]]:
        """Every verdict given on an incident here, oldest first."""
        rows = self.conn.execute("SELECT * FROM feedback WHERE incident_id = ? ORDER BY id", (incident_id,))
        return [dict(r) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# Database methods that write: one of them succeeding means the database takes writes again
WRITES = frozenset({
    "save", "mark_delivered", "mark_retry", "mark_dead", "retry_dead", "add_rollups", "save_occupancy",
    "save_business_event", "put_ref", "purge",
})  # fmt: skip


@dataclass
class DatabaseHealth:
    """The database's last failure (disk full, locked by another process, I/O error), for /readyz: set by a call
    that failed, cleared by the next write that succeeds."""

    error: str | None = None
    since: datetime | None = None  # the first failure of this run of failures
    failures: int = 0  # calls that failed since start
    last_failure_monotonic: float = field(default=0.0, repr=False)

    @property
    def ok(self) -> bool:
        """True unless the last write, or any call since, failed."""
        return self.error is None


class AsyncDatabase:
    """The database, called from the event loop; every call runs on the database's own thread."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        try:
            self.sync = self._executor.submit(Database, path, busy_timeout_ms).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self.health = DatabaseHealth()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the database thread; a database failure is recorded in `health` and raised."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            h = self.health
            if h.error is None:
                h.since = datetime.now(UTC)
                log.error("database %s: %s failed: %s", self.sync.path, getattr(fn, "__name__", fn), exc)
            h.error = f"{getattr(fn, '__name__', 'call')}: {type(exc).__name__}: {exc}"
            h.failures += 1
            h.last_failure_monotonic = time.monotonic()
            raise
        if self.health.error is not None and getattr(fn, "__name__", "") in WRITES:
            log.warning("database %s: writes work again (failing since %s)", self.sync.path, self.health.since)
            self.health.error, self.health.since = None, None
        return result

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        """SinkRefs: a sink's stored reference for an incident."""
        return await self.call(self.sync.get_ref, sink_id, incident_id)

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        """SinkRefs: store a sink's reference for an incident."""
        await self.call(self.sync.put_ref, sink_id, incident_id, ref)

    async def close(self) -> None:
        """Close the connection and stop the thread."""
        await self.call(self.sync.close)
        self._executor.shutdown(wait=True)
