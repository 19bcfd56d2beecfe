//! `GET /v1/health`: whether the server is up, and the limits its clients must respect.

use serde::{Deserialize, Serialize};

/// Answer to `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// The largest request body the server accepts, in bytes: runners split their report and
    /// log batches to fit.
    #[serde(default)]
    pub max_body_bytes: u64,
    /// The largest task output or job-cache value the server keeps, in bytes (0 from servers
    /// that predate outputs): runners refuse larger ones in the sandbox.
    #[serde(default)]
    pub max_value_bytes: u64,
    /// The largest component `tessera deploy` may upload, in bytes (0 from servers that
    /// predate saying it): the CLI refuses a larger one before sending it.
    #[serde(default)]
    pub max_component_bytes: u64,
    /// The largest task input the server keeps, in bytes as stored (0 from servers that
    /// predate saying it): runners refuse larger subtask inputs in the sandbox.
    #[serde(default)]
    pub max_input_bytes: u64,
    /// The wasmtime embedded in this server's `tessera` binary (the sandbox runners started
    /// from it run on), e.g. `48.0.10`; `None` from a server built without a sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasmtime: Option<String>,
}
