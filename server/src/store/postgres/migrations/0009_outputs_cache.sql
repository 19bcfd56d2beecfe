-- Data between tasks: each computed task's output, and each job's cache (keys collate "C",
-- so listings and ranges are in byte order, as in SQLite).
-- A task's output is its value, or (source) the output of one of its subtasks once that
-- computes.
CREATE TABLE IF NOT EXISTS outputs (
    task_id TEXT PRIMARY KEY,
    value   BYTEA,
    source  TEXT
);
CREATE TABLE IF NOT EXISTS cache_entries (
    job_id TEXT NOT NULL,
    key    TEXT COLLATE "C" NOT NULL,
    value  BYTEA NOT NULL,
    PRIMARY KEY (job_id, key)
);
