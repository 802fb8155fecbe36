-- facecompare accounts schema (SQLite). Times are unix milliseconds (INTEGER);
-- the PostgreSQL twin lives in migrations/postgres/0001_init.sql.

CREATE TABLE orgs (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    -- Kept equal to SUM(ledger.delta) for the org: every change writes both.
    balance     INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    s3_prefix   TEXT    NOT NULL,
    rate_limit  TEXT    NOT NULL,
    threshold   REAL    CHECK (threshold IS NULL OR (threshold >= 0 AND threshold <= 100)),
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- SHA-256 hex of the secret; the secret itself is never stored.
    key_hash    TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    delta       INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    request_id  TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ledger_org ON ledger (org_id, id);

-- GCRA state: the theoretical arrival time, in microseconds, per org.
CREATE TABLE rate_limits (
    org_id      TEXT    PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    tat_us      INTEGER NOT NULL
);

CREATE TABLE idempotency (
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    idem_key    TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    status      INTEGER,
    body        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, idem_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
