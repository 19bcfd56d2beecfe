-- A span names the runner that ran it by a small number, as it names its component: a job's
-- spans were run by a few runners, whose ids (a UUID, behind the key's id for a runner with a
-- key) are each kept once, here.
CREATE TABLE IF NOT EXISTS runner_names (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runner_names_name ON runner_names(name);
ALTER TABLE spans ADD COLUMN IF NOT EXISTS runner_ref BIGINT NOT NULL DEFAULT 0;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'spans'
                 AND column_name = 'runner_id') THEN
        INSERT INTO runner_names (name) SELECT DISTINCT runner_id FROM spans
            ON CONFLICT (name) DO NOTHING;
        UPDATE spans SET runner_ref = r.id FROM runner_names r WHERE r.name = spans.runner_id;
        ALTER TABLE spans DROP COLUMN runner_id;
    END IF;
END $$;
