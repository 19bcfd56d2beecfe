-- A task's latest attempt is kept on its own row instead of in `spans`: its start is the row's
-- `started_at`, the rest is the `span_*` columns, and `spans` keeps only the earlier attempts of
-- tasks that ran more than once (moved there by the claim that starts the next attempt).
--
-- Every span keeps one key, from `spans`' id sequence, whether it is on a task row
-- (`span_key`) or in `spans` (`id`): spans page in (start, key) order across both, and a page
-- cursor stays valid when an attempt moves.
--
-- span_outcome: 0 running, 1 computed, 2 failed, 3 abandoned, 4 expired, 5 canceled.
-- Safe to run again: a span already moved is found in `spans` no more.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS span_key BIGINT,
    ADD COLUMN IF NOT EXISTS span_end BIGINT,
    ADD COLUMN IF NOT EXISTS span_outcome BIGINT,
    ADD COLUMN IF NOT EXISTS span_error TEXT,
    ADD COLUMN IF NOT EXISTS span_runner_ref BIGINT,
    ADD COLUMN IF NOT EXISTS span_component_id BIGINT;
UPDATE tasks SET span_key = s.id, started_at = s.start, span_end = s."end",
    span_outcome = CASE s.outcome WHEN 'running' THEN 0 WHEN 'computed' THEN 1
        WHEN 'failed' THEN 2 WHEN 'abandoned' THEN 3 WHEN 'expired' THEN 4 ELSE 5 END,
    span_error = s.error, span_runner_ref = s.runner_ref, span_component_id = s.component_id
FROM spans s WHERE s.task_id = tasks.id AND s.attempt = tasks.attempt;
DELETE FROM spans USING tasks WHERE spans.id = tasks.span_key;
CREATE INDEX IF NOT EXISTS tasks_job_span ON tasks(job_id, started_at, span_key)
    WHERE span_key IS NOT NULL;
