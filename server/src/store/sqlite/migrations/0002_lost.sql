-- Leases in a row that expired without any report: a task lost too often fails instead of
-- running forever (StoreConfig::max_lost).
ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
