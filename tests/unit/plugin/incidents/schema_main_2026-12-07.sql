-- The database schema as StoreSight main had it on 2026-12-07 (plugin/incidents/database.py SCHEMA), before the
-- schema carried a version: test_database_lifecycle.py upgrades a database made with it.
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
