-- A span names the runner that ran it by a small number, as it names its component: a job's
-- spans were run by a few runners, whose ids (a UUID, behind the key's id for a runner with a
-- key) are each kept once, here.
CREATE TABLE runner_names (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE UNIQUE INDEX runner_names_name ON runner_names(name);
INSERT INTO runner_names (name) SELECT DISTINCT runner_id FROM spans;
ALTER TABLE spans ADD COLUMN runner_ref INTEGER NOT NULL DEFAULT 0;
UPDATE spans SET runner_ref = (SELECT id FROM runner_names WHERE name = spans.runner_id);
ALTER TABLE spans DROP COLUMN runner_id;
