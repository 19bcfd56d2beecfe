-- A span names the component that ran it by a small number, not by its 71-character digest:
-- the spans of a job all ran one or a few components, so each digest is kept once, here.
CREATE TABLE digests (
    id     INTEGER PRIMARY KEY,
    digest TEXT NOT NULL
);
CREATE UNIQUE INDEX digests_digest ON digests(digest);
INSERT INTO digests (digest) SELECT DISTINCT component FROM spans WHERE component IS NOT NULL;
ALTER TABLE spans ADD COLUMN component_id INTEGER;
UPDATE spans SET component_id = (SELECT id FROM digests WHERE digest = spans.component)
    WHERE component IS NOT NULL;
ALTER TABLE spans DROP COLUMN component;
