-- A task's logs by time, as SQLite has had since its first schema (the task view filters by task).
CREATE INDEX IF NOT EXISTS logs_task_time ON logs(task_id, time, id);
