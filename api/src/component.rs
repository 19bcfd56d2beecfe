//! Deployed components: task components uploaded to the server, addressed by the SHA-256 of
//! their bytes, that fleet runners (`tessera runner --deployed`) fetch by that digest.

use serde::{Deserialize, Serialize};

use crate::TaskIdentifier;

/// The prefix of a component digest: `sha256:` and 64 lowercase hex digits.
pub const DIGEST_PREFIX: &str = "sha256:";

/// Whether `s` is a well-formed component digest (`sha256:` + 64 lowercase hex digits).
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The short form people read: `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..DIGEST_PREFIX.len() + 12).unwrap_or(digest)
}

/// A deployed component, without its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Component {
    /// `sha256:` and the hex SHA-256 of its bytes.
    pub digest: String,
    /// The name it was deployed under (default: the file's stem).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The task types it exports, as the deploying client read them from the component.
    pub task_types: Vec<TaskIdentifier>,
    /// Who deployed it, as the deploying client named itself.
    pub deployed_by: String,
    /// When it was (last) deployed (ns since the Unix epoch).
    pub deployed_at: u64,
    /// When it was undeployed, if it was: it serves no new job, but jobs that pinned it
    /// still run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undeployed_at: Option<u64>,
}

/// `POST /v1/components`: what deploying did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployed {
    /// The component as it is now deployed.
    pub component: Component,
    /// False when these bytes were deployed already (nothing changed).
    pub created: bool,
}

/// Query of `POST /v1/components` (the body is the component's bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    /// The name to deploy it under.
    #[cfg_attr(
        feature = "openapi",
        param(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// The digest the client computed; the server refuses bytes that do not match it.
    #[cfg_attr(feature = "openapi", param(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// The task types it exports, comma-separated (`SleepTask@v1.0,Workflow@v1.0`).
    #[cfg_attr(
        feature = "openapi",
        param(
            pattern = r"^[A-Za-z0-9_.:-]{1,200}@v[0-9]{1,9}\.[0-9]{1,9}(,[A-Za-z0-9_.:-]{1,200}@v[0-9]{1,9}\.[0-9]{1,9})*$"
        )
    )]
    pub task_types: String,
    /// Who deploys it (informational until keys name their holders).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(max_length = 200))]
    pub by: Option<String>,
}

/// `GET /v1/components`: deployed components, most recently deployed first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentList {
    /// The components.
    pub components: Vec<Component>,
}

/// Query of `GET /v1/components`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ComponentQuery {
    /// Include undeployed components (jobs that pinned them still run them).
    #[serde(default)]
    pub all: bool,
}
