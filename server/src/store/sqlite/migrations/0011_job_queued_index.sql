-- A job's tasks were indexed by state, computed ones included: 60 bytes a task, mostly for
-- tasks that will never be looked up by state again. Only a job's queued tasks are (to cancel
-- them, to say why they wait); the rare reads by another state walk the job's tasks in tree
-- order (tasks_job_path) instead.
DROP INDEX IF EXISTS tasks_job_state;
CREATE INDEX IF NOT EXISTS tasks_job_queued ON tasks(job_id) WHERE state = 'queued';
