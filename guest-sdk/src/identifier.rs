//! Task identifiers as the guest declares them.

/// A task type's name and version (`vMAJOR.MINOR`), e.g. `SleepTask` `v1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskIdentifier {
    /// The name, e.g. `SleepTask`.
    pub name: String,
    /// The version, e.g. `v1.0`.
    pub version: String,
}

impl TaskIdentifier {
    /// An identifier from a name and a version such as `v1.0`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        TaskIdentifier {
            name: name.into(),
            version: version.into(),
        }
    }
}

/// `my_crate::tasks::SleepTask<u8>` → `SleepTask`.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SleepTask;
    struct Generic<T>(T);

    #[test]
    fn short_names_drop_paths_and_generics() {
        assert_eq!(short_type_name::<SleepTask>(), "SleepTask");
        assert_eq!(short_type_name::<Generic<SleepTask>>(), "Generic");
    }
}
