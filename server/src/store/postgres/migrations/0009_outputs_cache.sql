-- Data between tasks: each computed task's output, and each job's cache (keys collate "C",
-- so listings and ranges are in byte order, as in SQLite).
-- A task's output is its value, or (source) the output of one of its subtasks once that
-- computes.
CREATE TABLE IF NOT EXISTS outputs (
    task_id TEXT PRIMARY KEY,
    value   BYTEA,
    source  TEXT
);
-- Cache entries are versioned: each commit that writes a job's cache takes the job's next
-- cache_seq, and an attempt reads the latest version at or below the cache_seq its claim
-- saw (a NULL value is a delete). Superseded versions go when the job completes.
CREATE TABLE IF NOT EXISTS cache_entries (
    job_id TEXT NOT NULL,
    key    TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL,
    value  BYTEA,
    PRIMARY KEY (job_id, key, seq)
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cache_seq BIGINT NOT NULL DEFAULT 0;
