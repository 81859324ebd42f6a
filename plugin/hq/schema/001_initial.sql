-- Head office, schema version 1. Times are UTC (timestamptz); a store's day is its local date (stores.timezone).

CREATE TABLE stores (
    id text PRIMARY KEY,
    name text NOT NULL,
    timezone text NOT NULL,
    token_sha256 text NOT NULL UNIQUE,   -- the store's credential: only its hash is kept
    created timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz                -- the last accepted record: "offline since" on the dashboards
);

-- Every accepted record, by the store's delivery key: a replay of the same key and body changes nothing, a replay
-- with another body is refused (409). The digest is the SHA-256 of the record's canonical JSON.
CREATE TABLE ingest_keys (
    store_id text NOT NULL REFERENCES stores(id),
    key text NOT NULL,
    kind text NOT NULL,
    digest text NOT NULL,
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, key)
);

CREATE TABLE incidents (
    store_id text NOT NULL REFERENCES stores(id),
    id text NOT NULL,
    rule_id text NOT NULL,
    type text NOT NULL,
    camera text NOT NULL,
    zone text,
    severity text NOT NULL,
    state text NOT NULL,
    seq integer NOT NULL,
    start_at timestamptz NOT NULL,
    end_at timestamptz,
    explanation text NOT NULL,
    details jsonb NOT NULL,
    snapshot bytea,                      -- the evidence JPEG as the store sent it
    updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, id)
);
CREATE INDEX incidents_store_start ON incidents (store_id, start_at);

-- One row per store and hour: the bridge's hourly roll-up rows as sent (series), with the figures the chain
-- views sum pulled out into columns.
CREATE TABLE store_hours (
    store_id text NOT NULL REFERENCES stores(id),
    hour timestamptz NOT NULL,
    visitors integer NOT NULL DEFAULT 0,       -- "in" crossings over the store's counting lines
    series jsonb NOT NULL DEFAULT '[]',        -- [{camera, rule_id, metric, key, count, total, n, peak, last}]
    limits jsonb NOT NULL DEFAULT '{}',        -- {queue rule id: {max_length, max_wait_s}}
    rules jsonb NOT NULL DEFAULT '{}',         -- {rule id: its config as the store runs it}
    transactions integer NOT NULL DEFAULT 0,
    amount double precision NOT NULL DEFAULT 0,
    pos jsonb NOT NULL DEFAULT '[]',           -- [{lane, operator, transactions, amount, exceptions}]
    health jsonb NOT NULL DEFAULT '{}',        -- {camera: {state: seconds}}
    PRIMARY KEY (store_id, hour)
);
CREATE INDEX store_hours_hour ON store_hours (hour);

-- Per store and local day: what the chain overview and the ROI report sum, kept current as records arrive.
CREATE TABLE store_days (
    store_id text NOT NULL REFERENCES stores(id),
    day date NOT NULL,
    visitors integer NOT NULL DEFAULT 0,
    transactions integer NOT NULL DEFAULT 0,
    amount double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, day)
);
CREATE TABLE day_types (
    store_id text NOT NULL REFERENCES stores(id),
    day date NOT NULL,
    type text NOT NULL,
    incidents integer NOT NULL DEFAULT 0,
    seconds double precision NOT NULL DEFAULT 0,   -- summed durations of the ended incidents
    PRIMARY KEY (store_id, day, type)
);
CREATE INDEX day_types_day ON day_types (day);

-- A rule's configuration from the day it changed: the precision views mark threshold changes with it.
CREATE TABLE rule_versions (
    store_id text NOT NULL REFERENCES stores(id),
    rule_id text NOT NULL,
    since timestamptz NOT NULL,
    config jsonb NOT NULL,
    PRIMARY KEY (store_id, rule_id, since)
);

-- Feedback on incidents: every verdict is kept (the latest counts), with who, when and from where (audit).
CREATE TABLE feedback (
    id bigserial PRIMARY KEY,
    store_id text NOT NULL REFERENCES stores(id),
    incident_id text NOT NULL,
    verdict text NOT NULL CHECK (verdict IN ('confirmed', 'false_alarm', 'unsure')),
    reason text NOT NULL,
    comment text NOT NULL DEFAULT '',
    by_user text NOT NULL,
    source text NOT NULL CHECK (source IN ('hq', 'store')),
    at timestamptz NOT NULL,
    -- the incident as it was judged, so precision reads this table alone
    rule_id text NOT NULL,
    type text NOT NULL,
    camera text NOT NULL,
    incident_start timestamptz NOT NULL
);
CREATE INDEX feedback_incident ON feedback (store_id, incident_id, at);
CREATE INDEX feedback_start ON feedback (incident_start);

-- The verdict that counts per incident (the latest given), for precision and the confirmed rate.
CREATE TABLE verdicts (
    store_id text NOT NULL REFERENCES stores(id),
    incident_id text NOT NULL,
    verdict text NOT NULL,
    at timestamptz NOT NULL,
    rule_id text NOT NULL,
    type text NOT NULL,
    camera text NOT NULL,
    incident_start timestamptz NOT NULL,
    PRIMARY KEY (store_id, incident_id)
);
CREATE INDEX verdicts_start ON verdicts (incident_start);
CREATE INDEX verdicts_rule ON verdicts (store_id, rule_id, incident_start);

-- The latest verdicts counted per store day (the incident's start, the store's own day), type, rule and camera:
-- what precision, the confirmed rate and the ROI report sum, kept current as verdicts are given or changed.
CREATE TABLE verdict_days (
    store_id text NOT NULL REFERENCES stores(id),
    day date NOT NULL,
    type text NOT NULL,
    rule_id text NOT NULL,
    camera text NOT NULL,
    confirmed integer NOT NULL DEFAULT 0,
    false_alarm integer NOT NULL DEFAULT 0,
    unsure integer NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, day, type, rule_id, camera)
);
CREATE INDEX verdict_days_day ON verdict_days (day);
