-- Deployed components (content-addressed by the SHA-256 of their bytes), the digests a job
-- pinned when it was submitted, the component each task runs with and each attempt ran, and
-- what runners say of themselves.
CREATE TABLE components (
    digest        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    task_types    TEXT NOT NULL,
    deployed_by   TEXT NOT NULL,
    deployed_at   INTEGER NOT NULL,
    undeployed_at INTEGER,
    bytes         BLOB NOT NULL
);
CREATE INDEX components_name ON components(name, deployed_at);
ALTER TABLE jobs ADD COLUMN pins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN component TEXT;
ALTER TABLE spans ADD COLUMN component TEXT;
ALTER TABLE runners ADD COLUMN deployed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN host TEXT;
ALTER TABLE runners ADD COLUMN concurrency INTEGER;
