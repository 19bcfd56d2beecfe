-- A task's latest attempt is kept on its own row instead of in `spans`: its start is the row's
-- `started_at`, the rest is the `span_*` columns, and `spans` keeps only the earlier attempts of
-- tasks that ran more than once (moved there by the claim that starts the next attempt). A span
-- row with its two index entries was about 160 bytes a task; the row's columns and one index
-- entry are about half that.
--
-- Every span keeps one key, from one counter (`spans`' AUTOINCREMENT), whether it is on a task
-- row (`span_key`) or in `spans` (`id`): spans page in (start, key) order across both, and a
-- page cursor stays valid when an attempt moves.
--
-- span_outcome: 0 running, 1 computed, 2 failed, 3 abandoned, 4 expired, 5 canceled.
ALTER TABLE tasks ADD COLUMN span_key INTEGER;
ALTER TABLE tasks ADD COLUMN span_end INTEGER;
ALTER TABLE tasks ADD COLUMN span_outcome INTEGER;
ALTER TABLE tasks ADD COLUMN span_error TEXT;
ALTER TABLE tasks ADD COLUMN span_runner_ref INTEGER;
ALTER TABLE tasks ADD COLUMN span_component_id INTEGER;
UPDATE tasks SET span_key = s.id, started_at = s.start, span_end = s."end",
    span_outcome = CASE s.outcome WHEN 'running' THEN 0 WHEN 'computed' THEN 1
        WHEN 'failed' THEN 2 WHEN 'abandoned' THEN 3 WHEN 'expired' THEN 4 ELSE 5 END,
    span_error = s.error, span_runner_ref = s.runner_ref, span_component_id = s.component_id
FROM spans s WHERE s.task_id = tasks.id AND s.attempt = tasks.attempt;
CREATE TABLE spans_kept (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    start        INTEGER NOT NULL,
    "end"        INTEGER,
    outcome      TEXT NOT NULL,
    error        TEXT,
    component_id INTEGER,
    runner_ref   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO spans_kept (id, job_id, task_id, attempt, name, start, "end", outcome, error,
        component_id, runner_ref)
    SELECT id, job_id, task_id, attempt, name, start, "end", outcome, error, component_id,
        runner_ref
    FROM spans WHERE id NOT IN (SELECT span_key FROM tasks WHERE span_key IS NOT NULL);
DROP TABLE spans;
ALTER TABLE spans_kept RENAME TO spans;
DELETE FROM sqlite_sequence WHERE name IN ('spans', 'spans_kept');
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'spans', COALESCE(MAX(id), 0) FROM (SELECT id FROM spans UNION ALL
        SELECT span_key FROM tasks WHERE span_key IS NOT NULL);
CREATE INDEX spans_job_start ON spans(job_id, start, id);
CREATE UNIQUE INDEX spans_task_attempt ON spans(task_id, attempt);
CREATE INDEX tasks_job_span ON tasks(job_id, started_at, span_key) WHERE span_key IS NOT NULL;
