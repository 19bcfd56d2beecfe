//! Subtasks: what a task submits, with dependencies, retries, cluster and display name.

use serde::Serialize;

use crate::Task;
use crate::bindings::tessera::task::types as wit;

/// Marks a `depends-on` entry as a handle from an earlier call (the WIT's convention).
pub(crate) const HANDLE_BIT: u32 = 0x8000_0000;

/// A subtask to submit with [`Context::submit_subtasks`](crate::Context::submit_subtasks).
#[derive(Debug, Clone)]
pub struct Subtask {
    pub(crate) inner: Result<wit::Subtask, String>,
}

impl Subtask {
    /// A subtask running `task` (its identifier and its serialized fields as input).
    pub fn new<T: Task + Serialize>(task: &T) -> Self {
        let id = T::identifier();
        let inner = serde_json::to_string(task)
            .map(|input| wit::Subtask {
                identifier: wit::TaskIdentifier {
                    name: id.name.clone(),
                    version: id.version.clone(),
                },
                input,
                display: None,
                depends_on: Vec::new(),
                depends_on_all: false,
                max_retries: 0,
                cluster: None,
            })
            .map_err(|e| format!("input of {} could not be serialized: {e}", id.name));
        Subtask { inner }
    }

    fn map(mut self, f: impl FnOnce(&mut wit::Subtask)) -> Self {
        if let Ok(s) = &mut self.inner {
            f(s);
        }
        self
    }

    /// Runs only after these earlier subtasks of the same submission (their indexes) complete.
    pub fn depends_on(self, indexes: impl IntoIterator<Item = u32>) -> Self {
        self.map(|s| s.depends_on.extend(indexes))
    }

    /// Runs only after these subtasks, submitted earlier in this attempt, complete: the
    /// natural way to add a final step after leaves submitted one by one.
    pub fn after(self, handles: impl IntoIterator<Item = SubtaskHandle>) -> Self {
        let mut out = self;
        for h in handles {
            out = if h.index & HANDLE_BIT != 0 {
                Subtask {
                    inner: Err(format!("subtask handle {} is out of range", h.index)),
                }
            } else {
                out.map(|s| s.depends_on.push(h.index | HANDLE_BIT))
            };
        }
        out
    }

    /// Runs only after every subtask this attempt submitted before it completes: the reduce
    /// step of a fan-out, without listing thousands of handles. It reads their outputs with
    /// [`Context::dependencies`](crate::Context::dependencies) and
    /// [`Context::output_of`](crate::Context::output_of).
    pub fn after_all(self) -> Self {
        self.map(|s| s.depends_on_all = true)
    }

    /// Allows this many retries after a failure (default 0).
    pub fn max_retries(self, retries: u32) -> Self {
        self.map(|s| s.max_retries = retries)
    }

    /// Runs on runners of this cluster instead of the parent's.
    pub fn cluster(self, cluster: impl Into<String>) -> Self {
        let cluster = cluster.into();
        self.map(|s| s.cluster = Some(cluster))
    }

    /// A display name for people (default: the task name).
    pub fn display(self, display: impl Into<String>) -> Self {
        let display = display.into();
        self.map(|s| s.display = Some(display))
    }
}

/// Refers to a submitted subtask: its position among all subtasks this attempt submitted.
///
/// It serializes (as its index), so a parent can pass handles in a dependent subtask's input,
/// and the dependent reads their outputs with [`Context::output_of`](crate::Context::output_of).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SubtaskHandle {
    /// Position among the attempt's subtasks, from 0.
    pub index: u32,
}
