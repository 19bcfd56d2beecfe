-- The first schema.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    root_id       TEXT NOT NULL,
    canceled      INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    submitted_at  INTEGER NOT NULL,
    started_at    INTEGER,
    completed_at  INTEGER
);
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    parent_id        TEXT,
    depth            INTEGER NOT NULL,
    path             TEXT NOT NULL,
    name             TEXT NOT NULL,
    major            INTEGER NOT NULL,
    minor            INTEGER NOT NULL,
    input            TEXT NOT NULL,
    display          TEXT,
    cluster          TEXT NOT NULL,
    state            TEXT NOT NULL,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    pending_deps     INTEGER NOT NULL DEFAULT 0,
    children         INTEGER NOT NULL DEFAULT 0,
    open_children    INTEGER NOT NULL DEFAULT 0,
    completed        INTEGER NOT NULL DEFAULT 0,
    retries_used     INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    lease            INTEGER NOT NULL DEFAULT 0,
    lease_runner     TEXT,
    lease_expires_at INTEGER,
    not_before       INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX tasks_job_path ON tasks(job_id, path);
CREATE INDEX tasks_parent_path ON tasks(parent_id, path);
CREATE INDEX tasks_job_state ON tasks(job_id, state);
CREATE INDEX tasks_queued ON tasks(cluster, job_id, path) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks(lease_expires_at) WHERE state = 'running';
CREATE TABLE task_deps (
    depends_on TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
) WITHOUT ROWID;
CREATE TABLE progress (
    job_id TEXT NOT NULL,
    label  TEXT NOT NULL,
    done   INTEGER NOT NULL,
    total  INTEGER NOT NULL,
    PRIMARY KEY (job_id, label)
) WITHOUT ROWID;
CREATE TABLE logs (
    id        INTEGER PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    time      INTEGER NOT NULL,
    level     INTEGER NOT NULL,
    message   TEXT NOT NULL,
    fields    TEXT NOT NULL
);
CREATE INDEX logs_job_time ON logs(job_id, time, id);
CREATE INDEX logs_task_time ON logs(task_id, time, id);
CREATE TABLE spans (
    id        INTEGER PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    runner_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    start     INTEGER NOT NULL,
    end       INTEGER,
    outcome   TEXT NOT NULL,
    error     TEXT
);
CREATE INDEX spans_job_start ON spans(job_id, start, id);
CREATE UNIQUE INDEX spans_task_attempt ON spans(task_id, attempt);
