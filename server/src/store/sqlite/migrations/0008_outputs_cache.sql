-- Data between tasks: each computed task's output, and each job's cache (keys compare
-- bytewise, so listings are in byte order). Rowid tables: values run to kilobytes, and
-- SQLite keeps WITHOUT ROWID rows in the index b-tree, which suits small rows only.
-- A task's output is its value, or (source) the output of one of its subtasks once that
-- computes.
CREATE TABLE outputs (
    task_id TEXT PRIMARY KEY,
    value   BLOB,
    source  TEXT
);
-- Cache entries are versioned: each commit that writes a job's cache takes the job's next
-- cache_seq, and an attempt reads the latest version at or below the cache_seq its claim
-- saw (a NULL value is a delete). Superseded versions go when the job completes.
CREATE TABLE cache_entries (
    job_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    value  BLOB,
    PRIMARY KEY (job_id, key, seq)
);
ALTER TABLE jobs ADD COLUMN cache_seq INTEGER NOT NULL DEFAULT 0;
