-- How many tasks each job has, kept as subtasks are recorded, so that a job's size can be
-- bounded (StoreConfig::max_job_tasks) without counting its tasks.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS task_total BIGINT NOT NULL DEFAULT 1;
UPDATE jobs SET task_total = (SELECT COUNT(*) FROM tasks WHERE tasks.job_id = jobs.id);
