-- Tenants and their keys. Every job (and each of its tasks, for claims), deployed component
-- and runner belongs to one tenant; tenant 1, "default", holds everything stored before and
-- everything a server without keys is asked to do.
CREATE TABLE IF NOT EXISTS tenants (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    weight     BIGINT NOT NULL DEFAULT 1,
    -- Quotas set by an operator, as JSON; what is not set takes its default.
    quotas     TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tenants_name ON tenants(name);
INSERT INTO tenants (id, name, created_at) VALUES (1, 'default', 0) ON CONFLICT DO NOTHING;
SELECT setval(pg_get_serial_sequence('tenants', 'id'), GREATEST(1, (SELECT MAX(id) FROM tenants)));
-- A key is shown once; only the SHA-256 of its secret is kept. A key without a tenant is the
-- operator's (role operator, or runner for a fleet runner serving every tenant).
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  BIGINT,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant_id BIGINT NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant_id, id);
-- What a tenant uses now is summed over its jobs that are not over.
CREATE INDEX IF NOT EXISTS jobs_active ON jobs(tenant_id) WHERE completed_at IS NULL;
-- Log bytes a job keeps (its tenant's quota caps them).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS log_bytes BIGINT NOT NULL DEFAULT 0;
-- A task repeats its job's tenant so that a claim finds a tenant's queued tasks by index.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS tenant_id BIGINT NOT NULL DEFAULT 1;
DROP INDEX IF EXISTS tasks_queued;
CREATE INDEX IF NOT EXISTS tasks_queued ON tasks(tenant_id, cluster, job_id, path) WHERE state = 'queued';
-- NULL: a runner serving every tenant (the operator's, or a fleet runner).
ALTER TABLE runners ADD COLUMN IF NOT EXISTS tenant_id BIGINT;
-- A component is deployed by one tenant; the same bytes deployed by two are two rows.
ALTER TABLE components ADD COLUMN IF NOT EXISTS tenant_id BIGINT NOT NULL DEFAULT 1;
ALTER TABLE components DROP CONSTRAINT IF EXISTS components_pkey;
ALTER TABLE components ADD PRIMARY KEY (tenant_id, digest);
DROP INDEX IF EXISTS components_name;
CREATE INDEX IF NOT EXISTS components_name ON components(tenant_id, name, deployed_at);
CREATE INDEX IF NOT EXISTS components_digest ON components(digest);
