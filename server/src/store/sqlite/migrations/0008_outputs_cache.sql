-- Data between tasks: each computed task's output, and each job's cache (keys compare
-- bytewise, so listings are in byte order).
-- A task's output is its value, or (source) the output of one of its subtasks once that
-- computes.
CREATE TABLE outputs (
    task_id TEXT PRIMARY KEY,
    value   BLOB,
    source  TEXT
) WITHOUT ROWID;
CREATE TABLE cache_entries (
    job_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
