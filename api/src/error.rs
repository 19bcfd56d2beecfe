//! The body of every error answer.

use serde::{Deserialize, Serialize};

/// What every 4xx and 5xx answer carries: a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `not_found`, `lease_lost`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}
