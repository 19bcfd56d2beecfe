-- A running task names the runner holding its lease by number (`runner_names`, as its spans
-- do) instead of by its id: a UUID, 53 characters behind a key's id, in every version of the
-- row a claim or a report writes.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS lease_runner_ref BIGINT;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'tasks'
                 AND column_name = 'lease_runner') THEN
        INSERT INTO runner_names (name)
            SELECT DISTINCT lease_runner FROM tasks WHERE lease_runner IS NOT NULL
            ON CONFLICT (name) DO NOTHING;
        UPDATE tasks SET lease_runner_ref = r.id FROM runner_names r
            WHERE r.name = tasks.lease_runner;
        ALTER TABLE tasks DROP COLUMN lease_runner;
    END IF;
END $$;
