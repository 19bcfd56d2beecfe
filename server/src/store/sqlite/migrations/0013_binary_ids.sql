-- Job and task ids are stored as the 16 bytes of their UUID instead of its 36 characters of
-- text: a task's row names three ids, its span two, and five indexes one each, so this is
-- about 200 bytes per task. The columns keep their declared TEXT type (SQLite stores a blob
-- in a TEXT column as it is, and rebuilding every table for a name would copy the database);
-- the driver binds and reads them through `Id` and `IdText`. Text that is not a canonical id
-- stays as it was, so nothing is lost if a hand-edited row holds one.
UPDATE jobs SET
    id = CASE WHEN length(id) = 36 THEN coalesce(unhex(replace(id, '-', '')), id) ELSE id END,
    root_id = CASE WHEN length(root_id) = 36
        THEN coalesce(unhex(replace(root_id, '-', '')), root_id) ELSE root_id END
WHERE typeof(id) = 'text' OR typeof(root_id) = 'text';
UPDATE tasks SET
    id = CASE WHEN length(id) = 36 THEN coalesce(unhex(replace(id, '-', '')), id) ELSE id END,
    job_id = CASE WHEN length(job_id) = 36
        THEN coalesce(unhex(replace(job_id, '-', '')), job_id) ELSE job_id END,
    parent_id = CASE WHEN length(parent_id) = 36
        THEN coalesce(unhex(replace(parent_id, '-', '')), parent_id) ELSE parent_id END
WHERE typeof(id) = 'text' OR typeof(job_id) = 'text' OR typeof(parent_id) = 'text';
UPDATE task_deps SET
    depends_on = CASE WHEN length(depends_on) = 36
        THEN coalesce(unhex(replace(depends_on, '-', '')), depends_on) ELSE depends_on END,
    task_id = CASE WHEN length(task_id) = 36
        THEN coalesce(unhex(replace(task_id, '-', '')), task_id) ELSE task_id END;
UPDATE progress SET job_id = CASE WHEN length(job_id) = 36
    THEN coalesce(unhex(replace(job_id, '-', '')), job_id) ELSE job_id END;
UPDATE logs SET
    job_id = CASE WHEN length(job_id) = 36
        THEN coalesce(unhex(replace(job_id, '-', '')), job_id) ELSE job_id END,
    task_id = CASE WHEN length(task_id) = 36
        THEN coalesce(unhex(replace(task_id, '-', '')), task_id) ELSE task_id END;
UPDATE spans SET
    job_id = CASE WHEN length(job_id) = 36
        THEN coalesce(unhex(replace(job_id, '-', '')), job_id) ELSE job_id END,
    task_id = CASE WHEN length(task_id) = 36
        THEN coalesce(unhex(replace(task_id, '-', '')), task_id) ELSE task_id END;
UPDATE outputs SET task_id = CASE WHEN length(task_id) = 36
    THEN coalesce(unhex(replace(task_id, '-', '')), task_id) ELSE task_id END;
UPDATE cache_entries SET job_id = CASE WHEN length(job_id) = 36
    THEN coalesce(unhex(replace(job_id, '-', '')), job_id) ELSE job_id END;
