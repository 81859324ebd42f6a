"""The outbox's keyed records (head office): a database from before them gains the `kind` column with its rows
kept as incidents; a record key is queued once; only the sinks named get it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from plugin.incidents.database import Database

OLD_OUTBOX = """CREATE TABLE outbox (delivery_key TEXT NOT NULL, sink_id TEXT NOT NULL, incident_id TEXT NOT NULL,
    payload TEXT NOT NULL, created TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0, delivered TEXT, dead TEXT, last_error TEXT, receipt TEXT,
    PRIMARY KEY (delivery_key, sink_id))"""


def test_database_from_before_records_keeps_its_rows_as_incidents(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(OLD_OUTBOX)
    conn.execute("INSERT INTO outbox VALUES ('i:start:0','nx','i','{}','2026-01-01',0,0,NULL,NULL,NULL,NULL)")
    conn.commit()
    conn.close()
    db = Database(path)
    [d] = db.due("nx", now=1e12)
    assert (d.delivery_key, d.kind) == ("i:start:0", "incident")
    db.close()


def test_record_is_queued_once_for_the_sinks_named(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    assert db.enqueue_record("rollup", "rollup:h1", {"hour": "h1"}, ["hq"]) is True
    assert db.enqueue_record("rollup", "rollup:h1", {"hour": "changed"}, ["hq"]) is False
    assert db.record_queued("rollup:h1") and not db.record_queued("rollup:h2")
    [d] = db.due("hq", now=1e12)
    assert (d.kind, d.payload) == ("rollup", {"hour": "h1"})
    assert db.due("nx", now=1e12) == []
    db.close()
