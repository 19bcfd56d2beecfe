-- A running task names the runner holding its lease by number (`runner_names`, as its spans
-- do) instead of by its id: a UUID, 53 characters behind a key's id. The row grew by that much
-- when claimed and shrank when it ended, so pages split while tasks ran and stayed part-empty
-- after: about 40 bytes a finished task.
INSERT OR IGNORE INTO runner_names (name)
    SELECT DISTINCT lease_runner FROM tasks WHERE lease_runner IS NOT NULL;
ALTER TABLE tasks ADD COLUMN lease_runner_ref INTEGER;
UPDATE tasks SET lease_runner_ref = (SELECT id FROM runner_names WHERE name = tasks.lease_runner)
    WHERE lease_runner IS NOT NULL;
ALTER TABLE tasks DROP COLUMN lease_runner;
