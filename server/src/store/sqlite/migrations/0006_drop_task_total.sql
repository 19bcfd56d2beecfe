-- A job's task total is the sum of its kept counts by state (0004): no column of its own.
ALTER TABLE jobs DROP COLUMN task_total;
