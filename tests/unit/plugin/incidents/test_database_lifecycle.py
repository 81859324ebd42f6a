"""The database's life: schema versions and migrations (from the schema main had before versions), a newer database
refused, private files (0700 folders, 0600 files), acknowledged writes synced to disk, retention purges, and a
wall clock that went back not stalling retries."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from conftest import require

from adapters.business.listeners import DeadLetters
from plugin.app import auth_ctx, database_ctx, new_app, retention_ctx, sinks_ctx
from plugin.config.loader import parse_config
from plugin.config.service import RetentionConfig
from plugin.errors import ConfigError, StorageError
from plugin.fusion.access.model import badge_digest, badge_ref
from plugin.incidents import migrations as migrations_module
from plugin.incidents.database import AsyncDatabase, Database
from plugin.incidents.evidence import write_jpeg
from plugin.incidents.migrations import MIGRATIONS, SCHEMA_VERSION, Migration, MigrationContext
from plugin.incidents.retention import Retention
from plugin.private import install_key, write_private
from plugin.types import BusinessEvent, Incident
from plugin.web.keys import DATABASE, RETENTION

# main's schema before versions: as the durability branch started from it, and as it was when auth had landed
MAIN_SCHEMAS = {
    "main a886ede": Path(__file__).with_name("schema_main_2026-12-07.sql"),
    "main 90fb137 (auth tables)": Path(__file__).with_name("schema_main_2026-12-07_auth.sql"),
}
MAIN_SCHEMA = MAIN_SCHEMAS["main 90fb137 (auth tables)"]
BADGE = "04A1B2C3D4E5F6"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _schema(path: Path) -> set[tuple[str, str]]:
    """Every table and index with its SQL, as SQLite keeps them."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    conn.close()
    return {(name, " ".join(sql.split())) for name, sql in rows}


def _main_database(path: Path, schema: Path = MAIN_SCHEMA) -> None:
    """A database as main made it (no version), with an incident, its deliveries and two door events: one carrying
    a badge as main stored it (the id itself, and a SHA-256 prefix as ref), one without."""
    conn = sqlite3.connect(path)
    conn.executescript(schema.read_text())
    old_ref = hashlib.sha256(BADGE.encode()).hexdigest()[:8]
    conn.execute(
        """INSERT INTO incidents VALUES ('i1','table-dwell','loitering','cam1','table','warning','end',1,
           '2026-11-01T10:00:00+00:00','2026-11-01T10:01:00+00:00','[3]','Person #3 stayed',NULL,'{}',
           '2026-11-01T10:01:00+00:00')"""
    )
    conn.execute(
        "INSERT INTO outbox (delivery_key, sink_id, incident_id, payload, created, delivered) VALUES"
        " ('i1:end:1','hook','i1','{}','2026-11-01T10:01:00+00:00','2026-11-01T10:01:01+00:00')"
    )
    payload = {"door": "D1", "kind": "granted", "badge": BADGE, "badge_ref": old_ref, "camera": "cam1"}
    conn.execute(
        "INSERT INTO business_events VALUES ('e1','access.webhook','s','2026-11-01T10:00:00+00:00','access.granted',"
        "?,'2026-11-01T10:00:01+00:00',?)",
        (json.dumps(payload), f"D1:granted:2026-11-01T10:00:00+00:00:{old_ref}"),
    )
    plain = {"door": "D1", "kind": "forced", "badge": None, "badge_ref": "", "camera": "cam1"}
    conn.execute(
        "INSERT INTO business_events VALUES ('e2','access.webhook','s','2026-11-01T10:05:00+00:00','access.forced',"
        "?,'2026-11-01T10:05:01+00:00',NULL)",
        (json.dumps(plain),),
    )
    conn.commit()
    conn.close()


def test_migrations_are_numbered_one_by_one() -> None:
    """The version is the count of migrations applied: numbers run 1, 2, 3... with no gap or repeat."""
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == SCHEMA_VERSION


@pytest.mark.parametrize("schema", list(MAIN_SCHEMAS.values()), ids=list(MAIN_SCHEMAS))
def test_a_database_of_main_before_versions_is_upgraded_at_open(tmp_path: Path, schema: Path) -> None:
    old = tmp_path / "old" / "storesight.db"
    old.parent.mkdir()
    _main_database(old, schema)
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()
    db = Database(old)
    try:
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # what was there is still there
        [incident] = db.incidents()
        assert incident["id"] == "i1" and incident["deliveries"][0]["state"] == "delivered"
        rows = {r["id"]: r for r in db.business_events("2026-01-01", "2027-01-01")}
        # the badge itself is gone; its keyed digest (under this installation's key) and the digest's ref remain
        key = install_key(old.parent)
        badge = rows["e1"]["payload"]
        assert "badge" not in badge and BADGE not in json.dumps(rows["e1"])
        assert badge["badge_digest"] == badge_digest(key, BADGE)
        assert badge["badge_ref"] == badge_ref(key, BADGE)
        # a resend of the same event (no sender id) still dedupes: its key carries the new ref
        assert rows["e1"]["dedupe_key"] == f"D1:granted:2026-11-01T10:00:00+00:00:{badge_ref(key, BADGE)}"
        assert rows["e2"]["payload"]["badge_digest"] is None and rows["e2"]["payload"]["badge_ref"] == ""
    finally:
        db.close()
    # the upgraded database has exactly the schema a new one gets
    fresh = tmp_path / "new" / "storesight.db"
    Database(fresh).close()
    assert _schema(old) == _schema(fresh)
    # opening again runs nothing (the version says it is done)
    again = Database(old)
    try:
        assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        stored = again.conn.execute("SELECT payload FROM business_events WHERE id='e1'").fetchone()[0]
        assert json.loads(stored) == badge
    finally:
        again.close()


def test_a_database_of_a_newer_release_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "storesight.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE from_the_future (x)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError) as err:
        Database(path)
    text = str(err.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in text and f"versions up to {SCHEMA_VERSION}" in text
    assert "a newer release wrote it" in text and str(path) in text
    assert path.read_bytes() == before


def test_a_migration_that_fails_leaves_the_database_at_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each migration is one transaction with its version bump: one that fails half-way changes nothing, and the
    next start tries it again."""
    path = tmp_path / "storesight.db"
    _main_database(path)

    def fails(ctx: MigrationContext) -> None:
        raise RuntimeError("disk trouble half-way")

    broken = Migration(SCHEMA_VERSION + 1, "a table, then a failure", ("CREATE TABLE later (x TEXT);", fails))
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(migrations_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="half-way"):
        Database(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # the earlier ones committed
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'later'").fetchone() is None
    conn.close()


def test_a_door_event_whose_payload_is_not_json_does_not_stop_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "storesight.db"
    _main_database(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO business_events VALUES ('bad','access.webhook','s','2026-11-01T11:00:00+00:00',"
            "'access.granted','not json','2026-11-01T11:00:01+00:00',NULL)"
        )
    conn.close()
    db = Database(path)
    try:
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.conn.execute("SELECT payload FROM business_events WHERE id='bad'").fetchone()[0] == "not json"
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------------- file modes


async def test_the_data_folder_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    """Whatever the umask: the folder, the database and its WAL files, evidence, the API token, the install key."""
    old_umask = os.umask(0o022)
    try:
        data = tmp_path / "site" / "data"
        config = parse_config({"storage": {"path": str(data)}, "sinks": [
            {"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/in"}]})  # fmt: skip
        app = new_app(config)
        app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx])
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            db = app[DATABASE]
            await db.call(db.sync.save_business_event, "e1", BusinessEvent("pos", "s", NOW, "pos.transaction", {}))
            key = install_key(data)
            write_jpeg(data / "evidence" / "2026-12-07" / "x.jpg", np.zeros((8, 8, 3), np.uint8))
            await DeadLetters(data / "dead-letter" / "pos-text.jsonl").add("unparsable", text="SALE ...")
            files = {
                "dead-letter": data / "dead-letter" / "pos-text.jsonl",
                "storesight.db": data / "storesight.db",
                "storesight.db-wal": data / "storesight.db-wal",
                "storesight.db-shm": data / "storesight.db-shm",
                "api_token": data / "api_token",
                "install_key": data / "install_key",
                "evidence": data / "evidence" / "2026-12-07" / "x.jpg",
            }
            assert {k: oct(_mode(p)) for k, p in files.items()} == dict.fromkeys(files, oct(0o600))
            folders = [data, data / "evidence", data / "evidence" / "2026-12-07", data / "dead-letter"]
            assert [oct(_mode(d)) for d in folders] == [oct(0o700)] * 4
            assert _mode(tmp_path / "site") == 0o700  # a parent it had to create too
            assert len(key) == 32 and install_key(data) == key  # made once, then read
        finally:
            await runner.cleanup()
    finally:
        os.umask(old_umask)


def test_an_existing_database_from_before_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "storesight.db"
    _main_database(path)
    os.chmod(path, 0o644)
    Database(path).close()
    assert _mode(path) == 0o600


def test_private_writes_replace_atomically_and_leave_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "rejected" / "a.xml"
    target.parent.mkdir()
    write_private(target, b"first")
    write_private(target, b"second")
    assert target.read_bytes() == b"second" and _mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.xml"]


# ---------------------------------------------------------------------------------------------------- durability

_WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from plugin.incidents.database import Database
    from plugin.types import BusinessEvent
    db = Database(Path(sys.argv[1]))
    event = BusinessEvent("alarm", "s", datetime.now(UTC), "alarm.burglary", {"zone": "1"})
    import os
    # the first commit into a new WAL syncs its header whatever the setting: measure the second one
    db.save_business_event("e0", event, None, sys.argv[2] == "durable")
    os.write(2, b"MARK-BEFORE\\n")
    db.save_business_event("e1", event, None, sys.argv[2] == "durable")
    os.write(2, b"MARK-AFTER\\n")
    db.close()
""")


def _syncs_during_save(tmp_path: Path, mode: str) -> list[str]:
    """The fsync/fdatasync calls a real process makes while it stores one business event (strace)."""
    strace = shutil.which("strace")
    require(None if strace else "strace is not installed (packaging/scripts/setup.sh --test installs it)")
    assert strace is not None
    path = tmp_path / mode / "storesight.db"
    path.parent.mkdir()
    Database(path).close()  # the schema exists: the traced process only writes the event
    out = subprocess.run(
        [strace, "-f", "-e", "trace=fsync,fdatasync,write", "-e", "signal=none", sys.executable, "-c", _WRITER,
         str(path), mode],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[4],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if 'write(2, "MARK-BEFORE' in line)
    end = next(i for i, line in enumerate(lines) if 'write(2, "MARK-AFTER' in line)
    return [line for line in lines[start:end] if "sync(" in line]


def test_an_acknowledged_business_event_is_synced_to_disk_before_the_call_returns(tmp_path: Path) -> None:
    """A DC-09 ACK or a POS 202 goes out after `save_business_event` returns: by then the WAL is on the disk (an
    fsync of it), so a power cut cannot take back what the sender was told; NORMAL would leave it in the page
    cache until the next checkpoint."""
    durable = _syncs_during_save(tmp_path, "durable")
    normal = _syncs_during_save(tmp_path, "normal")
    assert durable, "no fsync while storing an acknowledged event"
    assert normal == []  # the measurement can tell: without FULL the same write syncs nothing


# ---------------------------------------------------------------------------------------------------- clock


async def test_a_retry_scheduled_before_the_clock_went_back_is_due_at_once(tmp_path: Path) -> None:
    """An NTP step back by an hour must not hold a delivery's retry for an hour: a retry is never scheduled further
    ahead than the longest backoff, so one further ahead is due now."""
    db = AsyncDatabase(tmp_path / "db.sqlite")
    try:
        incident = Incident(id="i1", rule_id="r", type="loitering", camera="cam1", start=NOW, state="start", seq=0,
                            explanation="x")  # fmt: skip
        await db.call(db.sync.save, incident, ["hook"])
        [d] = await db.call(db.sync.due, "hook", 1000.0)
        await db.call(db.sync.mark_retry, d, "down", 1000.0 + 30)  # scheduled 30 s ahead, by the old clock
        assert await db.call(db.sync.due, "hook", 1000.0, 50, 300.0) == []  # 30 s ahead: a real backoff, waits
        # the clock went back an hour: the retry now looks 3630 s ahead, more than any backoff (300 s)
        [again] = await db.call(db.sync.due, "hook", 1000.0 - 3600, 50, 300.0)
        assert again.delivery_key == d.delivery_key
        assert await db.call(db.sync.due, "hook", 1000.0 - 3600) == []  # without the bound it would wait the hour
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------------- retention


def _incident(n: int, start: datetime, state: str = "end", snapshot: str | None = None) -> Incident:
    return Incident(
        id=f"i{n}", rule_id="r", type="loitering", camera="cam1", start=start, state=state,  # type: ignore[arg-type]
        seq=1 if state == "end" else 0, explanation=f"#{n}", end=start + timedelta(minutes=1) if state == "end"
        else None, snapshot=snapshot,
    )  # fmt: skip


@pytest.fixture
async def aged(tmp_path: Path) -> AsyncIterator[tuple[AsyncDatabase, Path]]:
    """A database and a data folder with data of every kind, some past its retention and some not."""
    db = AsyncDatabase(tmp_path / "data" / "storesight.db")
    evidence = tmp_path / "data" / "evidence"
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=5)
    for day in (old, NOW - timedelta(days=31), recent):
        folder = evidence / day.strftime("%Y-%m-%d")
        folder.mkdir(parents=True)
        (folder / "x.jpg").write_bytes(b"jpeg")
    snap = str(evidence / old.strftime("%Y-%m-%d") / "x.jpg")
    # 1: old, ended, delivered -> purged; 2: old, ended, still pending -> kept; 3: old, open -> kept;
    # 4: recent -> kept; 5: old, ended, dead-lettered -> purged (a dead letter is not waiting for anything)
    await db.call(db.sync.save, _incident(1, old, snapshot=snap), ["hook"])
    await db.call(db.sync.save, _incident(2, old), ["hook"])
    await db.call(db.sync.save, _incident(3, old, state="start"), ["hook"])
    await db.call(db.sync.save, _incident(4, recent), ["hook"])
    await db.call(db.sync.save, _incident(5, old), ["hook"])
    for d in await db.call(db.sync.due, "hook", 1e12):
        if d.incident_id in ("i1", "i3", "i4"):
            await db.call(db.sync.mark_delivered, d, "ok")
        elif d.incident_id == "i5":
            await db.call(db.sync.mark_dead, d, "rejected")
    await db.call(db.sync.put_ref, "nx", "i1", "bookmark-1")

    def event(n: int, t: datetime, kind: str, payload: dict[str, object]) -> None:
        db.sync.save_business_event(f"e{n}", BusinessEvent("panel1", "s", t, kind, payload), None, False)

    await db.call(event, 1, old, "pos.transaction", {})
    await db.call(event, 2, recent, "pos.transaction", {})
    # two areas' arm/disarm reports, all old: the latest of each area is the armed state, so it stays
    await db.call(event, 3, old, "alarm.arm", {"account": "1234", "area": "1"})
    await db.call(event, 4, old + timedelta(hours=1), "alarm.disarm", {"account": "1234", "area": "1"})
    await db.call(event, 5, old, "alarm.arm", {"account": "1234", "area": "2"})
    yield db, tmp_path / "data"
    await db.close()


async def test_retention_purges_each_kind_past_its_days_and_keeps_what_is_still_needed(
    aged: tuple[AsyncDatabase, Path], tmp_path: Path
) -> None:
    db, data = aged
    drop = tmp_path / "pos"
    for name, age_days in (("done/old.xml", 40), ("done/new.xml", 1), ("rejected/old.xml", 40),
                           ("rejected/old.xml.reason", 40)):  # fmt: skip
        f = drop / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
        t = (NOW - timedelta(days=age_days)).timestamp()
        os.utime(f, (t, t))
    secret = tmp_path / "secret"
    secret.write_bytes(b"not StoreSight's")
    os.utime(secret, (0, 0))
    (drop / "done" / "link.xml").symlink_to(secret)  # not a file StoreSight wrote: left alone, and its target
    triton = data / "triton"
    triton.mkdir()
    for name, age_days in (("tritonserver-1-1.log", 20), ("tritonserver-2-2.log", 1)):
        (triton / name).write_text("log")
        t = (NOW - timedelta(days=age_days)).timestamp()
        os.utime(triton / name, (t, t))
    retention = Retention(RetentionConfig(), db, data / "evidence", [drop / "done", drop / "rejected"], triton)
    gone = await retention.purge(NOW)
    ids = sorted(i["id"] for i in await db.call(db.sync.incidents))
    assert ids == ["i2", "i3", "i4"]
    assert gone["incidents"] == 2 and gone["deliveries"] == 2 and gone["sink_refs"] == 1
    assert await db.call(db.sync.get_ref, "nx", "i1") is None
    # evidence: day folders before the cutoff (30 days) are gone, newer ones stay
    days = sorted(p.name for p in (data / "evidence").iterdir())
    assert days == [(NOW - timedelta(days=5)).strftime("%Y-%m-%d")]
    assert gone["evidence_files"] == 2
    events = {e["id"] for e in await db.call(db.sync.business_events, "0000", "9999")}
    assert events == {"e2", "e4", "e5"}  # recent; the latest report of area 1 and of area 2
    kept = sorted(str(p.relative_to(drop)) for p in drop.rglob("*"))
    assert kept == ["done", "done/link.xml", "done/new.xml", "rejected"]
    assert secret.read_bytes() == b"not StoreSight's"
    assert sorted(p.name for p in triton.iterdir()) == ["tritonserver-2-2.log"]
    # a second pass finds nothing more
    again = await retention.purge(NOW)
    assert not any(again.values()), again


async def test_head_office_records_go_once_sent_and_old_and_verdicts_go_with_their_incident(
    aged: tuple[AsyncDatabase, Path],
) -> None:
    db, data = aged
    old, recent = (NOW - timedelta(days=800)).isoformat(), (NOW - timedelta(days=2)).isoformat()
    for key in ("rollup:old-sent", "rollup:old-pending", "pos:recent-sent"):
        await db.call(db.sync.enqueue_record, key.split(":")[0], key, {"hour": key}, ["hq"])
    await db.call(db.sync.save_feedback, {"incident_id": "i1", "verdict": "confirmed", "reason": "theft",
                                          "comment": "", "by_user": "admin", "at": recent}, ["hq"])  # fmt: skip

    def age_and_send() -> None:
        with db.sync.conn:
            for key, created in (("rollup:old-sent", old), ("rollup:old-pending", old), ("pos:recent-sent", recent)):
                db.sync.conn.execute("UPDATE outbox SET created = ? WHERE delivery_key = ?", (created, key))
            db.sync.conn.execute(
                "UPDATE outbox SET delivered = ? WHERE delivery_key IN ('rollup:old-sent', 'pos:recent-sent')"
                " OR kind = 'feedback'", (recent,),
            )  # fmt: skip

    await db.call(age_and_send)
    gone = await Retention(RetentionConfig(rollups_days=1), db, data / "evidence").purge(NOW)
    keys = {d["delivery_key"] for d in await db.call(db.sync.deliveries, None)}
    assert "rollup:old-sent" not in keys and gone["records"] == 1  # sent and older than its hours' days: gone
    assert {"rollup:old-pending", "pos:recent-sent"} <= keys  # pending: head office has not had it; within a week
    assert gone["feedback"] == 1 and await db.call(db.sync.feedback, "i1") == []  # i1 went, its verdict with it
    assert not [k for k in keys if k.startswith("feedback:")]


async def test_zero_days_keeps_a_kind_for_ever(aged: tuple[AsyncDatabase, Path]) -> None:
    db, data = aged
    config = RetentionConfig(incidents_days=0, evidence_days=0, business_events_days=0, rollups_days=0)
    gone = await Retention(config, db, data / "evidence").purge(NOW)
    assert "incidents" not in gone and "evidence_files" not in gone and "business_events" not in gone
    assert len(await db.call(db.sync.incidents)) == 5


async def test_the_purge_runs_by_itself_in_the_app(tmp_path: Path) -> None:
    """`run` starts the purge in the background (at start, then every interval_h); nobody calls it."""
    data = tmp_path / "data"
    db = AsyncDatabase(data / "storesight.db")
    old = datetime.now(UTC) - timedelta(days=400)
    await db.call(db.sync.save, _incident(1, old), [])
    await db.call(db.sync.save, _incident(2, datetime.now(UTC)), [])
    await db.close()
    config = parse_config({"storage": {"path": str(data), "retention": {"incidents_days": 30}}})
    app = new_app(config)
    app.cleanup_ctx.extend([database_ctx, sinks_ctx, retention_ctx])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        retention = app[RETENTION]
        assert retention is not None
        async with asyncio.timeout(30):
            await retention.done.wait()
        assert [i["id"] for i in await app[DATABASE].call(app[DATABASE].sync.incidents)] == ["i2"]
        assert retention.last["incidents"] == 1 and retention.error is None
    finally:
        await runner.cleanup()


def test_retention_config_keys_have_their_defaults_and_name_a_bad_value() -> None:
    config = parse_config({})
    r = config.storage.retention
    assert (r.incidents_days, r.evidence_days, r.business_events_days, r.pos_files_days, r.rollups_days,
            r.interval_h) == (180, 30, 90, 30, 730, 1.0)  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config({"storage": {"retention": {"evidence_days": -1}}})
    assert "storage.retention.evidence_days" in str(err.value)
