//! Task identifiers (`name` + `vMAJOR.MINOR`) and the rule for which runner may run which task.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task type's version, written `v<major>.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible changes bump this.
    pub major: u32,
    /// Compatible additions bump this.
    pub minor: u32,
}

/// Why a task identifier or version could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The version is not of the form `v<major>.<minor>`.
    #[error(
        "version {} is not of the form v<major>.<minor>, e.g. v0.0 or v1.2",
        crate::limits::elide(.0, 64)
    )]
    BadVersion(String),
    /// The name is empty, too long or has characters other than letters, digits, `_`, `-`, `.`, `:`.
    #[error(
        "task name {} is not valid: use 1 to 200 letters, digits, '_', '-', '.' or ':' (e.g. SleepTask)",
        crate::limits::elide(.0, 64)
    )]
    BadName(String),
}

impl Version {
    /// Version `v0.0`, the default of a task type that names none.
    pub const ZERO: Version = Version { major: 0, minor: 0 };

    /// Whether a runner serving `self` may run a task submitted with `task`.
    ///
    /// Same major version, and the task's minor version not newer than the runner's.
    pub fn can_run(self, task: Version) -> bool {
        self.major == task.major && self.minor >= task.minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

impl FromStr for Version {
    type Err = IdentifierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentifierError::BadVersion(s.to_string());
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (major, minor) = rest.split_once('.').ok_or_else(bad)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u32>().map_err(|_| bad())
        };
        Ok(Version {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Names a task type: its name and version, e.g. `SleepTask` `v0.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "RawIdentifier")]
pub struct TaskIdentifier {
    /// The task type's name, e.g. `SleepTask`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_.:-]{1,200}$"))]
    pub name: String,
    /// The task type's version, `v<major>.<minor>` (each part at most 4294967295).
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, example = "v0.0", pattern = r"^v[0-9]{1,9}\.[0-9]{1,9}$")
    )]
    pub version: Version,
}

/// The unchecked wire form, checked on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentifier {
    name: String,
    version: Version,
}

impl TryFrom<RawIdentifier> for TaskIdentifier {
    type Error = IdentifierError;

    fn try_from(raw: RawIdentifier) -> Result<Self, Self::Error> {
        TaskIdentifier::new(raw.name, raw.version)
    }
}

impl TaskIdentifier {
    /// Builds an identifier after checking the name.
    pub fn new(name: impl Into<String>, version: Version) -> Result<Self, IdentifierError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(TaskIdentifier { name, version })
    }

    /// Parses a name and a `vMAJOR.MINOR` version.
    pub fn parse(name: &str, version: &str) -> Result<Self, IdentifierError> {
        TaskIdentifier::new(name, version.parse()?)
    }

    /// Whether a runner serving `self` may run a task submitted as `task`.
    pub fn can_run(&self, task: &TaskIdentifier) -> bool {
        self.name == task.name && self.version.can_run(task.version)
    }
}

impl fmt::Display for TaskIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

fn validate_name(name: &str) -> Result<(), IdentifierError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(IdentifierError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_or_hostile_name_makes_a_short_safe_message() {
        let huge = format!("\x1b]0;x\x07{}", "n".repeat(1 << 20));
        let e = TaskIdentifier::parse(&huge, "v0.0")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400 && e.contains("bytes]"), "{}", e.len());
        assert!(!e.contains('\x1b'));
        let e = TaskIdentifier::parse("T", &huge).unwrap_err().to_string();
        assert!(e.len() < 400, "{}", e.len());
    }

    #[test]
    fn versions_parse_and_print() {
        let v: Version = "v1.12".parse().unwrap();
        assert_eq!(
            v,
            Version {
                major: 1,
                minor: 12
            }
        );
        assert_eq!(v.to_string(), "v1.12");
        for bad in ["1.2", "v1", "v1.", "v.1", "v1.2.3", "v-1.2", "v1.x", ""] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn same_major_and_not_newer_minor_may_run() {
        let runner = TaskIdentifier::parse("SleepTask", "v1.2").unwrap();
        let run = |v: &str| runner.can_run(&TaskIdentifier::parse("SleepTask", v).unwrap());
        assert!(run("v1.0"));
        assert!(run("v1.2"));
        assert!(!run("v1.3"), "newer minor");
        assert!(!run("v0.2"), "older major");
        assert!(!run("v2.0"), "newer major");
        assert!(!runner.can_run(&TaskIdentifier::parse("Other", "v1.0").unwrap()));
    }

    #[test]
    fn names_are_checked() {
        assert!(TaskIdentifier::parse("", "v0.0").is_err());
        assert!(TaskIdentifier::parse("has space", "v0.0").is_err());
        assert!(TaskIdentifier::parse("tilebox.com/Sleep", "v0.0").is_err());
        assert!(TaskIdentifier::parse("my_pkg::Sleep-Task.2", "v0.0").is_ok());
    }

    #[test]
    fn serde_uses_the_written_form() {
        let id = TaskIdentifier::parse("SleepTask", "v0.3").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#"{"name":"SleepTask","version":"v0.3"}"#);
        assert_eq!(serde_json::from_str::<TaskIdentifier>(&json).unwrap(), id);
        let err = serde_json::from_str::<TaskIdentifier>(r#"{"name":"A","version":"1"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("v<major>.<minor>"), "{err}");
        let err = serde_json::from_str::<TaskIdentifier>(r#"{"name":"a b","version":"v0.0"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not valid"), "{err}");
    }
}
