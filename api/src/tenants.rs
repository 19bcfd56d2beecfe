//! Tenants and their API keys: who a request acts for, and what it may do.

use serde::{Deserialize, Serialize};

/// What a key may do. An operator key (no tenant) may do everything for every tenant; every
/// other role acts within its key's tenant, except a runner key without a tenant: a fleet
/// runner, serving every tenant's deployed components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, for every tenant: tenants, keys, quotas.
    Operator,
    /// Everything within its tenant: jobs, components, runners, and its tenant's keys.
    Admin,
    /// Submit jobs, read them, cancel and retry them.
    Submit,
    /// Read jobs, tasks, logs, spans, outputs, components and runners.
    Read,
    /// Claim and run tasks: the runner protocol, log lines, data reads, component bytes.
    Runner,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Admin,
        Role::Submit,
        Role::Read,
        Role::Runner,
    ];

    /// Its name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Runner => "runner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: use operator, admin, submit, read or runner")
            })
    }
}

/// A tenant: the owner of jobs, components and runners, isolated from every other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Its name (`default` holds what a server without keys is asked to do).
    pub name: String,
    /// Its weight in fair share between tenants (1 by default): on a shared fleet, running
    /// slots go to tenants in proportion to their weights.
    pub weight: u32,
    /// When it was created (ns since the Unix epoch; 0 for `default`).
    pub created_at: u64,
    /// Its quotas, as they apply (defaults filled in).
    #[serde(default)]
    pub quotas: Quotas,
    /// What it uses now (in `GET /v1/tenants`; absent elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a tenant may use. Set by an operator (`tessera tenants set-quota`); every quota has a
/// default, and `none` (for the ceilings) leaves the runner's own limit alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Tasks queued at once (waiting for a runner or for their dependencies). A submit past it
    /// is refused (429); an attempt whose subtasks would pass it fails.
    pub queued_tasks: u64,
    /// Attempts running at once across the fleet; claims past it hand out nothing of the
    /// tenant. `None`: no cap (fair share still divides a shared fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// Most linear memory one attempt may use, in MiB; the host enforces the lower of this
    /// and the runner's own `--memory-mib`. `None`: the runner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Longest one attempt may run, in seconds; the host enforces the lower of this and the
    /// runner's own `--deadline-seconds`. `None`: the runner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// Log bytes one job keeps; lines past it are dropped behind one marker line.
    pub log_bytes_per_job: u64,
    /// Bytes of deployed components, undeployed ones included (their bytes are kept).
    pub component_bytes: u64,
    /// Requests one key of the tenant may make per second (a burst of as many); past it, 429
    /// with `Retry-After`.
    pub requests_per_second: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            queued_tasks: 10_000_000,
            running: None,
            memory_mib: None,
            deadline_seconds: None,
            log_bytes_per_job: 1 << 30,
            component_bytes: 1 << 30,
            requests_per_second: 2_000,
        }
    }
}

/// `PATCH /v1/tenants/{name}`: what to change; absent fields stay as they are. For the
/// optional quotas (`running`, `memory_mib`, `deadline_seconds`), 0 removes the quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    /// Its weight in fair share (1–1000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: Option<u32>,
    /// Tasks queued at once (at least 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub queued_tasks: Option<u64>,
    /// Attempts running at once across the fleet (0: no cap).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    pub running: Option<u64>,
    /// Memory ceiling per attempt in MiB (0: the runner's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1048576))]
    pub memory_mib: Option<u32>,
    /// Deadline ceiling per attempt in seconds (0: the runner's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    pub deadline_seconds: Option<u64>,
    /// Log bytes per job (at least 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub log_bytes_per_job: Option<u64>,
    /// Bytes of deployed components (at least 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub component_bytes: Option<u64>,
    /// Requests per second per key (1–1,000,000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000000))]
    pub requests_per_second: Option<u32>,
}

/// What a tenant uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tasks queued.
    pub queued_tasks: u64,
    /// Attempts running.
    pub running: u64,
    /// Bytes of its deployed components (undeployed ones included).
    pub component_bytes: u64,
}

/// `GET /v1/tenants`: every tenant for an operator, one's own for anyone else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    /// By name.
    pub tenants: Vec<Tenant>,
}

/// `POST /v1/tenants`: a tenant to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Its name: 1–100 characters of letters, digits, `-`, `_` and `.`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_.-]{1,100}$"))]
    pub name: String,
    /// Its weight in fair share (1–1000; 1 by default).
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: Option<u32>,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Its public id (the part of the key after `tsk_` and before the next `_`).
    pub id: String,
    /// Its tenant; none for the operator's keys (operator, fleet runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What it may do.
    pub role: Role,
    /// What it is for, as its creator named it.
    pub name: String,
    /// When it was created (ns since the Unix epoch).
    pub created_at: u64,
    /// When it was revoked, if it was: it no longer opens anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// Newest first.
    pub keys: Vec<ApiKey>,
}

/// `POST /v1/keys`: a key to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What it may do.
    pub role: Role,
    /// Its tenant. An operator names one for any key of a tenant and none for operator and
    /// fleet-runner keys; a tenant admin's keys are of its own tenant whatever it names.
    #[serde(default)]
    pub tenant: Option<String>,
    /// What it is for (1–200 printable characters; default: the role).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: Option<String>,
}

/// `POST /v1/keys`: the key created, and its secret — shown this once, never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The key as listed.
    pub key: ApiKey,
    /// The whole key to send as `Authorization: Bearer …` (`TESSERA_TOKEN`).
    pub secret: String,
}

/// `GET /v1/whoami`: who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Identity {
    /// Its role.
    pub role: Role,
    /// Its tenant; none for an operator or a fleet runner (every tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Its key's id; none for the server's own token and for a server without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Whether the server asks for keys (false: anyone on loopback acts as the operator).
    pub keys_required: bool,
}
