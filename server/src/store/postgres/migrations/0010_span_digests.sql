-- A span names the component that ran it by a small number, not by its 71-character digest:
-- the spans of a job all ran one or a few components, so each digest is kept once, here.
CREATE TABLE IF NOT EXISTS digests (
    id     BIGSERIAL PRIMARY KEY,
    digest TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS digests_digest ON digests(digest);
ALTER TABLE spans ADD COLUMN IF NOT EXISTS component_id BIGINT;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'spans'
                 AND column_name = 'component') THEN
        INSERT INTO digests (digest)
            SELECT DISTINCT component FROM spans WHERE component IS NOT NULL
            ON CONFLICT (digest) DO NOTHING;
        UPDATE spans SET component_id = d.id FROM digests d WHERE d.digest = spans.component;
        ALTER TABLE spans DROP COLUMN component;
    END IF;
END $$;
