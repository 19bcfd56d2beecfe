-- Each job's task counts by state and its attempts' time, kept as tasks change (see
-- store::driver::JobTally), so that reading a job costs the same at 10 tasks and at a million.
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS tasks_queued   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tasks_running  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tasks_computed BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tasks_failed   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tasks_canceled BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS task_time_ns   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_end       BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET
    tasks_queued   = c.queued,
    tasks_running  = c.running,
    tasks_computed = c.computed,
    tasks_failed   = c.failed,
    tasks_canceled = c.canceled
FROM (SELECT job_id,
             COUNT(*) FILTER (WHERE state = 'queued')   AS queued,
             COUNT(*) FILTER (WHERE state = 'running')  AS running,
             COUNT(*) FILTER (WHERE state = 'computed') AS computed,
             COUNT(*) FILTER (WHERE state = 'failed')   AS failed,
             COUNT(*) FILTER (WHERE state = 'canceled') AS canceled
      FROM tasks GROUP BY job_id) AS c
WHERE jobs.id = c.job_id;
UPDATE jobs SET task_time_ns = s.time, last_end = s.last
FROM (SELECT job_id, LEAST(SUM("end" - start), 9223372036854775807)::BIGINT AS time,
             MAX("end") AS last
      FROM spans WHERE "end" IS NOT NULL GROUP BY job_id) AS s
WHERE jobs.id = s.job_id;
