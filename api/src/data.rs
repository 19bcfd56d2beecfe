//! Data between tasks: task outputs, the job cache, and the dependencies a task reads from.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TaskState;

/// Bytes that travel in JSON as standard, padded base64.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    /// Its length as base64 text, without encoding it.
    pub fn encoded_len(&self) -> usize {
        self.0.len().div_ceil(3).saturating_mul(4)
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("not standard padded base64: {e}")))
    }
}

/// One job-cache write an attempt made, kept only if the attempt succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheWrite {
    /// The key: 1 to 512 characters, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
        )
    )]
    pub key: String,
    /// The new value (base64); absent to delete the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub value: Option<Blob>,
}

/// A subtask the task depends on: its position among its parent's subtasks (the handle the
/// parent got), its id, and whether it left an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dependency {
    /// Its position among the subtasks its parent's attempt submitted.
    pub index: u32,
    /// Its id.
    pub task_id: String,
    /// Its state (a task is claimed only when all it depends on have completed).
    pub state: TaskState,
    /// The size of its output in bytes, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// `GET /v1/tasks/{id}/dependencies`: the subtasks a task depends on, in the order its parent
/// listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyList {
    /// The dependencies.
    pub dependencies: Vec<Dependency>,
}

/// One key of a job's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheEntry {
    /// The key.
    pub key: String,
    /// Its value's size in bytes.
    pub bytes: u64,
}

/// `GET /v1/jobs/{id}/cache`: a page of a job's cache keys in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CachePage {
    /// The keys of this page.
    pub entries: Vec<CacheEntry>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Query of `GET /v1/jobs/{id}/cache`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CacheQuery {
    /// Only keys that begin with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub prefix: Option<String>,
    /// Only keys after this one (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub after: Option<String>,
    /// The keys as an attempt claimed at this cache version sees them (its claim's
    /// `cache_seq`); the latest by default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 0, maximum = 9223372036854775807_i64)
    )]
    pub as_of: Option<u64>,
    /// At most this many keys (default and most: 1,000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
}

/// Query of `GET /v1/jobs/{id}/cache/value`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CacheKey {
    /// The key.
    #[cfg_attr(
        feature = "openapi",
        param(
            min_length = 1,
            max_length = 512,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
        )
    )]
    pub key: String,
    /// The value as an attempt claimed at this cache version sees it; the latest by default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 0, maximum = 9223372036854775807_i64)
    )]
    pub as_of: Option<u64>,
}

/// Query of `GET /v1/jobs/{id}/output`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// The task whose output to read; the job's root task by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(max_length = 200))]
    pub task: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_travel_as_base64_and_bad_text_is_refused() {
        let w = CacheWrite {
            key: "k".into(),
            value: Some(Blob(vec![0, 255, 1, 2])),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(json, r#"{"key":"k","value":"AP8BAg=="}"#);
        assert_eq!(serde_json::from_str::<CacheWrite>(&json).unwrap(), w);
        assert_eq!(Blob(vec![0; 4]).encoded_len(), 8);
        assert_eq!(Blob(vec![]).encoded_len(), 0);
        let delete: CacheWrite = serde_json::from_str(r#"{"key":"k"}"#).unwrap();
        assert_eq!(delete.value, None);
        let err = serde_json::from_str::<CacheWrite>(r#"{"key":"k","value":"%%"}"#).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }
}
