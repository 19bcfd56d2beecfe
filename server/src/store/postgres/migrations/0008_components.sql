-- Deployed components (content-addressed by the SHA-256 of their bytes), the digests a job
-- pinned when it was submitted, the component each task runs with and each attempt ran, and
-- what runners say of themselves.
CREATE TABLE IF NOT EXISTS components (
    digest        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    task_types    TEXT NOT NULL,
    deployed_by   TEXT NOT NULL,
    deployed_at   BIGINT NOT NULL,
    undeployed_at BIGINT,
    bytes         BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS components_name ON components(name, deployed_at);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS component TEXT;
ALTER TABLE spans ADD COLUMN IF NOT EXISTS component TEXT;
ALTER TABLE runners ADD COLUMN IF NOT EXISTS deployed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runners ADD COLUMN IF NOT EXISTS host TEXT;
ALTER TABLE runners ADD COLUMN IF NOT EXISTS concurrency BIGINT;
