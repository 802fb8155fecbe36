-- AWS-style access keys for the Rekognition-compatible endpoint (SigV4).
-- The secret is never stored: it is derived from the access key id with the
-- server's signing key, which lives outside the database (README "Using AWS SDKs").
CREATE TABLE aws_access_keys (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX aws_access_keys_org ON aws_access_keys (org_id);
