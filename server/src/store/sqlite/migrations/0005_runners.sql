-- The runners the servers heard from: what each asked for when it last claimed (recorded at
-- most every 10 s per runner), so that a task no runner could serve can say why it waits.
CREATE TABLE IF NOT EXISTS runners (
    id          TEXT PRIMARY KEY,
    cluster     TEXT NOT NULL,
    identifiers TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS runners_last_seen ON runners(last_seen);
