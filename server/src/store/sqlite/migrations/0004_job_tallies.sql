-- Each job's task counts by state and its attempts' time, kept as tasks change (see
-- store::driver::JobTally), so that reading a job costs the same at 10 tasks and at a million.
ALTER TABLE jobs ADD COLUMN tasks_queued   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tasks_running  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tasks_computed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tasks_failed   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tasks_canceled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN task_time_ns   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN last_end       INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET
    tasks_queued   = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.state = 'queued'),
    tasks_running  = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.state = 'running'),
    tasks_computed = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.state = 'computed'),
    tasks_failed   = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.state = 'failed'),
    tasks_canceled = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.state = 'canceled'),
    task_time_ns   = (SELECT COALESCE(SUM(s.end - s.start), 0) FROM spans s
                      WHERE s.job_id = jobs.id AND s.end IS NOT NULL),
    last_end       = (SELECT COALESCE(MAX(s.end), 0) FROM spans s
                      WHERE s.job_id = jobs.id AND s.end IS NOT NULL);
