"""The database's schema and its numbered migrations (`PRAGMA user_version`): each change is an entry at the end of
`MIGRATIONS`, applied in its own transaction when plugin/incidents/database.py opens the file; a database of a newer
release is refused and left untouched."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plugin.errors import StorageError
from plugin.private import install_key, keyed_digest

log = logging.getLogger(__name__)

# The schema as it was before it carried a version (StoreSight up to the durability release): migration 1. Its
# statements say IF NOT EXISTS, so a database made by those releases (version 0, tables there) passes through it.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    type TEXT NOT NULL,
    camera TEXT NOT NULL,
    zone TEXT,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start TEXT NOT NULL,
    "end" TEXT,
    track_ids TEXT NOT NULL,
    explanation TEXT NOT NULL,
    snapshot TEXT,
    details TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_start ON incidents(start);
CREATE TABLE IF NOT EXISTS outbox (
    delivery_key TEXT NOT NULL,
    sink_id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    delivered TEXT,
    dead TEXT,  -- dead-letter: set after a rejection or too many failures; cleared by a manual retry
    last_error TEXT,
    receipt TEXT,
    PRIMARY KEY (delivery_key, sink_id)
);
CREATE TABLE IF NOT EXISTS rollups (
    bucket TEXT NOT NULL,  -- UTC hour, ISO text
    camera TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    key TEXT NOT NULL,
    count REAL NOT NULL DEFAULT 0,
    total REAL NOT NULL DEFAULT 0,
    n INTEGER NOT NULL DEFAULT 0,
    peak REAL NOT NULL DEFAULT 0,
    last REAL NOT NULL DEFAULT 0,
    last_t TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (bucket, camera, rule_id, metric, key)
);
CREATE TABLE IF NOT EXISTS business_events (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    site TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    received TEXT NOT NULL,
    dedupe_key TEXT UNIQUE  -- the sender's own id (transaction number, panel sequence) when it has one
);
CREATE INDEX IF NOT EXISTS business_events_time ON business_events(time);
CREATE TABLE IF NOT EXISTS sink_refs (
    sink_id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (sink_id, incident_id)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(sink_id, delivered, dead, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id);
CREATE TABLE IF NOT EXISTS store_occupancy (  -- the live count of each store_occupancy, so a restart keeps it
    id TEXT PRIMARY KEY,
    people INTEGER NOT NULL,
    last_reset TEXT,  -- UTC ISO: the closing the count was last reset at
    out_at_zero INTEGER NOT NULL DEFAULT 0,  -- drift since that reset: outs counted while the count was zero
    last_t TEXT NOT NULL,  -- the latest crossing or tick applied
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_occupancy_resets (  -- each closing reset and the drift it removed
    id TEXT NOT NULL,
    at TEXT NOT NULL,
    removed INTEGER NOT NULL,  -- people still counted at closing (ins never counted out)
    out_at_zero INTEGER NOT NULL,  -- outs counted at zero since the previous reset
    PRIMARY KEY (id, at)
);
"""

# ---- Sign-in and audit (plugin/web/auth; queries in plugin/web/auth/sqlite.py): migration 3. Every statement is
# idempotent, so a database that got these tables at open from a build before versions upgrades through it.
AUTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    stores TEXT NOT NULL,  -- JSON list of store ids; ["*"]: every store
    password_hash TEXT NOT NULL,  -- argon2id, PHC string
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_sessions (
    key TEXT PRIMARY KEY,  -- SHA-256 of the cookie's session id, never the id itself
    user TEXT NOT NULL,  -- auth_users.name (removing a user removes their sessions in the same transaction)
    csrf_token TEXT NOT NULL,
    created TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    expires TEXT NOT NULL,
    remote TEXT
);
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions(user);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    role TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    remote TEXT,
    detail TEXT
);
"""
# ---- end of the sign-in and audit block


RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (  -- verdicts given on the console: who, when, what (sent on to head office)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    comment TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_incident ON feedback(incident_id);
"""


@dataclass
class MigrationContext:
    """What a migration step written in Python gets: the connection (inside the migration's transaction) and the
    data folder (the install key, read only if a step needs it)."""

    conn: sqlite3.Connection
    folder: Path
    _key: bytes | None = None

    def key(self) -> bytes:
        """The install key (plugin/private.py)."""
        if self._key is None:
            self._key = install_key(self.folder)
        return self._key


MigrationStep = str | Callable[[MigrationContext], None]


@dataclass(frozen=True)
class Migration:
    """One schema change: SQL scripts and Python steps, applied in one transaction with the version bump."""

    version: int
    what: str
    steps: tuple[MigrationStep, ...]


def _badges_as_digests(ctx: MigrationContext) -> None:
    """Door events stored the badge id itself: replace it by its keyed digest (and the short ref by the digest's),
    and the dedupe key of an event without a sender id, which ended with the old ref, likewise."""
    rows = ctx.conn.execute("SELECT id, payload, dedupe_key FROM business_events WHERE kind LIKE 'access.%'").fetchall()
    for event_id, payload_text, dedupe_key in rows:
        try:
            payload = json.loads(payload_text)
        except ValueError:  # not written by StoreSight: leave it, rather than refuse to start
            log.warning("business event %s: payload is not JSON; left as it is", event_id)
            continue
        if not isinstance(payload, dict) or "badge" not in payload:
            continue
        badge = payload.pop("badge")
        old_ref = "" if not badge else hashlib.sha256(str(badge).encode()).hexdigest()[:8]
        digest = keyed_digest(ctx.key(), str(badge)) if badge else None
        payload["badge_digest"] = digest
        payload["badge_ref"] = digest[:8] if digest else ""  # as plugin/fusion/access/model.py badge_ref
        if old_ref and dedupe_key is not None and dedupe_key.endswith(":" + old_ref):
            dedupe_key = dedupe_key[: -len(old_ref)] + payload["badge_ref"]
        ctx.conn.execute(
            "UPDATE business_events SET payload = ?, dedupe_key = ? WHERE id = ?",
            (json.dumps(payload), dedupe_key, event_id),
        )


def _outbox_kind(ctx: MigrationContext) -> None:
    """The outbox carries keyed records for head office too: every row so far is an incident."""
    columns = {r[1] for r in ctx.conn.execute("PRAGMA table_info(outbox)")}
    if "kind" not in columns:
        ctx.conn.execute("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'incident'")


# Append only: a released migration never changes (databases out there already carry its number). A new table or
# column is a new entry with the next number: CREATE TABLE IF NOT EXISTS keeps it safe for a database that got the
# table before the entry existed (a branch that created it at open).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the schema before it carried a version", (SCHEMA_V1,)),
    Migration(2, "door events keep a keyed digest of the badge, not the badge", (_badges_as_digests,)),
    Migration(3, "sign-in and audit: users, sessions, the audit log", (AUTH_SCHEMA,)),
    Migration(4, "head office: the outbox's record kind, console feedback", (_outbox_kind, RECORDS_SCHEMA)),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (executescript would commit the migration's transaction half-way)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {current.strip()[:60]!r}")
    return out


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database at `path` to SCHEMA_VERSION, one migration per transaction; returns how many ran.
    A database of a newer release is refused: this code would not know what its tables mean."""
    ran = 0
    ctx = MigrationContext(conn, path.parent)
    while True:
        # read without a lock first: an up-to-date database opens even while another process holds the write lock
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return ran
        conn.execute("BEGIN IMMEDIATE")  # another process opening the same file waits, then sees the new version
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path}: the database has schema version {version}, and this StoreSight knows versions up to "
                    f"{SCHEMA_VERSION}: a newer release wrote it. Run that release (or newer), or restore a backup "
                    "taken before the upgrade; StoreSight does not open it, so as not to damage what it cannot read"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return ran
            step = MIGRATIONS[version]
            for part in step.steps:
                if isinstance(part, str):
                    for statement in _statements(part):
                        conn.execute(statement)
                else:
                    part(ctx)
            conn.execute(f"PRAGMA user_version = {step.version}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        ran += 1
        log.info("%s: database schema %d -> %d: %s", path, version, step.version, step.what)
