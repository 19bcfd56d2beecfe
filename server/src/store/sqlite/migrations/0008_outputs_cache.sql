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
CREATE TABLE cache_entries (
    job_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (job_id, key)
);
