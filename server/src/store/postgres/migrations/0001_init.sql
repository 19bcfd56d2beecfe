-- The first schema.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    root_id       TEXT NOT NULL,
    canceled      BOOLEAN NOT NULL DEFAULT FALSE,
    failed        BOOLEAN NOT NULL DEFAULT FALSE,
    submitted_at  BIGINT NOT NULL,
    started_at    BIGINT,
    completed_at  BIGINT
);
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    parent_id        TEXT,
    depth            INTEGER NOT NULL,
    path             TEXT COLLATE "C" NOT NULL,
    name             TEXT NOT NULL,
    major            BIGINT NOT NULL,
    minor            BIGINT NOT NULL,
    input            TEXT NOT NULL,
    display          TEXT,
    cluster          TEXT NOT NULL,
    state            TEXT NOT NULL,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    pending_deps     BIGINT NOT NULL DEFAULT 0,
    children         BIGINT NOT NULL DEFAULT 0,
    open_children    BIGINT NOT NULL DEFAULT 0,
    completed        BOOLEAN NOT NULL DEFAULT FALSE,
    retries_used     BIGINT NOT NULL DEFAULT 0,
    max_retries      BIGINT NOT NULL DEFAULT 0,
    attempt          BIGINT NOT NULL DEFAULT 0,
    lease            BIGINT NOT NULL DEFAULT 0,
    lease_runner     TEXT,
    lease_expires_at BIGINT,
    not_before       BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
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
);
CREATE TABLE progress (
    job_id TEXT NOT NULL,
    label  TEXT NOT NULL,
    done   BIGINT NOT NULL,
    total  BIGINT NOT NULL,
    PRIMARY KEY (job_id, label)
);
CREATE TABLE logs (
    id        BIGSERIAL PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    attempt   BIGINT NOT NULL,
    time      BIGINT NOT NULL,
    level     BIGINT NOT NULL,
    message   TEXT NOT NULL,
    fields    TEXT NOT NULL
);
CREATE INDEX logs_job_time ON logs(job_id, time, id);
CREATE TABLE spans (
    id        BIGSERIAL PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    attempt   BIGINT NOT NULL,
    runner_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    start     BIGINT NOT NULL,
    "end"     BIGINT,
    outcome   TEXT NOT NULL,
    error     TEXT
);
CREATE INDEX spans_job_start ON spans(job_id, start, id);
CREATE UNIQUE INDEX spans_task_attempt ON spans(task_id, attempt);
