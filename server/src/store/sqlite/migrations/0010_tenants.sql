-- Tenants and their keys. Every job (and each of its tasks, for claims), deployed component
-- and runner belongs to one tenant; tenant 1, "default", holds everything stored before and
-- everything a server without keys is asked to do.
CREATE TABLE tenants (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    weight     INTEGER NOT NULL DEFAULT 1,
    -- Quotas set by an operator, as JSON; what is not set takes its default.
    quotas     TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX tenants_name ON tenants(name);
INSERT INTO tenants (id, name, created_at) VALUES (1, 'default', 0);
-- A key is shown once; only the SHA-256 of its secret is kept. A key without a tenant is the
-- operator's (role operator, or runner for a fleet runner serving every tenant).
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  INTEGER,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
ALTER TABLE jobs ADD COLUMN tenant_id INTEGER NOT NULL DEFAULT 1;
CREATE INDEX jobs_tenant ON jobs(tenant_id, id);
-- What a tenant uses now is summed over its jobs that are not over.
CREATE INDEX jobs_active ON jobs(tenant_id) WHERE completed_at IS NULL;
-- Log bytes a job keeps (its tenant's quota caps them).
ALTER TABLE jobs ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
-- A task repeats its job's tenant so that a claim finds a tenant's queued tasks by index (the
-- value 1 takes no bytes in a SQLite record).
ALTER TABLE tasks ADD COLUMN tenant_id INTEGER NOT NULL DEFAULT 1;
DROP INDEX tasks_queued;
CREATE INDEX tasks_queued ON tasks(tenant_id, cluster, job_id, path) WHERE state = 'queued';
-- NULL: a runner serving every tenant (the operator's, or a fleet runner).
ALTER TABLE runners ADD COLUMN tenant_id INTEGER;
-- A component is deployed by one tenant; the same bytes deployed by two are two rows.
CREATE TABLE components_by_tenant (
    tenant_id     INTEGER NOT NULL DEFAULT 1,
    digest        TEXT NOT NULL,
    name          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    task_types    TEXT NOT NULL,
    deployed_by   TEXT NOT NULL,
    deployed_at   INTEGER NOT NULL,
    undeployed_at INTEGER,
    bytes         BLOB NOT NULL,
    PRIMARY KEY (tenant_id, digest)
);
INSERT INTO components_by_tenant (tenant_id, digest, name, size, task_types, deployed_by,
                                  deployed_at, undeployed_at, bytes)
    SELECT 1, digest, name, size, task_types, deployed_by, deployed_at, undeployed_at, bytes
    FROM components;
DROP TABLE components;
ALTER TABLE components_by_tenant RENAME TO components;
CREATE INDEX components_name ON components(tenant_id, name, deployed_at);
CREATE INDEX components_digest ON components(digest);
