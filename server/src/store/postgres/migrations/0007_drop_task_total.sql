-- A job's task total is the sum of its kept counts by state (0005): no column of its own.
ALTER TABLE jobs DROP COLUMN IF EXISTS task_total;
