-- Head office, schema version 3: each store-day's totals for the chain pages, kept by triggers from the day tables.
-- The chain overview ranks every store over weeks; summing day_types (a row per store, day and type) and
-- verdict_days (per store, day, type, rule and camera) for 500 stores took over a second a view. store_days (one row
-- per store and day) now also carries what those pages need, and the triggers keep it current whoever writes the
-- day tables (ingest, verdicts, the benchmark's bulk load), so no writer can forget it.

ALTER TABLE store_days
    ADD COLUMN incidents integer NOT NULL DEFAULT 0,   -- risk incidents: not system or camera-offline ones
    ADD COLUMN exceptions integer NOT NULL DEFAULT 0,  -- POS exceptions (pos_*)
    ADD COLUMN alarms integer NOT NULL DEFAULT 0,      -- alarm verification outcomes (alarm_*)
    ADD COLUMN confirmed integer NOT NULL DEFAULT 0,   -- verdicts: confirmed
    ADD COLUMN judged integer NOT NULL DEFAULT 0;      -- verdicts: confirmed or false alarm (unsure left out)

-- the classification the chain pages used on day_types (plugin/hq/chain.py NOT_RISK_SQL)
CREATE FUNCTION store_day_kinds(t text) RETURNS integer[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY[
        CASE WHEN t LIKE 'system%' OR t = 'camera_offline' THEN 0 ELSE 1 END,
        CASE WHEN t LIKE 'pos\_%' THEN 1 ELSE 0 END,
        CASE WHEN t LIKE 'alarm\_%' THEN 1 ELSE 0 END
    ]
$$;

CREATE FUNCTION store_days_from_day_types() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k integer[];
    delta integer;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN  -- take the old row's count away
        k := store_day_kinds(OLD.type);
        UPDATE store_days SET incidents = incidents - k[1] * OLD.incidents,
                              exceptions = exceptions - k[2] * OLD.incidents, alarms = alarms - k[3] * OLD.incidents
        WHERE store_id = OLD.store_id AND day = OLD.day;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        k := store_day_kinds(NEW.type);
        delta := NEW.incidents;
        INSERT INTO store_days (store_id, day, incidents, exceptions, alarms)
        VALUES (NEW.store_id, NEW.day, k[1] * delta, k[2] * delta, k[3] * delta)
        ON CONFLICT (store_id, day) DO UPDATE SET incidents = store_days.incidents + excluded.incidents,
            exceptions = store_days.exceptions + excluded.exceptions, alarms = store_days.alarms + excluded.alarms;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION store_days_from_verdict_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE store_days SET confirmed = confirmed - OLD.confirmed, judged = judged - OLD.confirmed - OLD.false_alarm
        WHERE store_id = OLD.store_id AND day = OLD.day;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO store_days (store_id, day, confirmed, judged)
        VALUES (NEW.store_id, NEW.day, NEW.confirmed, NEW.confirmed + NEW.false_alarm)
        ON CONFLICT (store_id, day) DO UPDATE SET confirmed = store_days.confirmed + excluded.confirmed,
            judged = store_days.judged + excluded.judged;
    END IF;
    RETURN NULL;
END
$$;

-- what the day tables hold already
INSERT INTO store_days (store_id, day, incidents, exceptions, alarms)
SELECT store_id, day, sum((store_day_kinds(type))[1] * incidents), sum((store_day_kinds(type))[2] * incidents),
       sum((store_day_kinds(type))[3] * incidents)
FROM day_types GROUP BY store_id, day
ON CONFLICT (store_id, day) DO UPDATE SET incidents = excluded.incidents, exceptions = excluded.exceptions,
    alarms = excluded.alarms;
INSERT INTO store_days (store_id, day, confirmed, judged)
SELECT store_id, day, sum(confirmed), sum(confirmed + false_alarm) FROM verdict_days GROUP BY store_id, day
ON CONFLICT (store_id, day) DO UPDATE SET confirmed = excluded.confirmed, judged = excluded.judged;

CREATE TRIGGER day_types_totals AFTER INSERT OR UPDATE OR DELETE ON day_types
    FOR EACH ROW EXECUTE FUNCTION store_days_from_day_types();
CREATE TRIGGER verdict_days_totals AFTER INSERT OR UPDATE OR DELETE ON verdict_days
    FOR EACH ROW EXECUTE FUNCTION store_days_from_verdict_days();
CREATE INDEX store_days_day ON store_days (day);
