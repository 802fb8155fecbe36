-- An idempotency reservation is a lease: a pending row whose lease has run out
-- (its request ended without releasing it, e.g. the release could not reach
-- the database) is taken over by the next request with that key.
-- Unix milliseconds; 0 = no lease recorded (rows of older versions, which
-- fall back to the fixed pending timeout on updated_at).
ALTER TABLE idempotency ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
