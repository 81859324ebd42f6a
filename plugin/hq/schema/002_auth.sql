-- Head office, schema version 2: the shared login's users, sessions and audit log (plugin/web/auth/store.py),
-- held by plugin/hq/auth_store.py.

CREATE TABLE auth_users (
    name text PRIMARY KEY,
    role text NOT NULL,
    stores text[] NOT NULL,              -- store ids; {"*"}: every store
    password_hash text NOT NULL,         -- argon2id, PHC string
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL
);
CREATE TABLE auth_sessions (
    key text PRIMARY KEY,                -- SHA-256 of the cookie's session id, never the id itself
    user_name text NOT NULL REFERENCES auth_users(name) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    expires timestamptz NOT NULL,
    remote text
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_name);
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL,
    actor text NOT NULL,
    actor_kind text NOT NULL,
    role text,
    action text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    remote text,
    detail text
);
