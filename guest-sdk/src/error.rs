//! Errors a task returns and errors of subtask submission.

use std::fmt;

use crate::bindings::exports::tessera::task::tasks as wit_exports;
use crate::bindings::tessera::task::types as wit;

/// Why a task attempt failed: a message for people and an optional machine-readable code.
///
/// Any `std::error::Error` converts into it, so `?` works on most results. A failed attempt is
/// retried while the task's `max_retries` allow, unless the error is [`TaskError::permanent`].
pub struct TaskError {
    message: String,
    code: Option<String>,
    permanent: bool,
}

impl TaskError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            code: None,
            permanent: false,
        }
    }

    /// Marks the error as one no retry can fix (bad input, a missing object): the task fails
    /// at once, whatever its `max_retries`. On the wire its code becomes `permanent`, or
    /// `permanent:CODE` with a code (the convention `tessera:task@0.1.0` documents).
    pub fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// Whether the error is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Adds a machine-readable code, e.g. `not-found`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} [{code}]", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        TaskError::new(message)
    }
}

impl From<TaskError> for wit_exports::TaskError {
    fn from(e: TaskError) -> Self {
        let code = match (e.permanent, e.code) {
            (false, code) => code,
            (true, None) => Some("permanent".to_string()),
            (true, Some(code)) => Some(format!("permanent:{code}")),
        };
        wit_exports::TaskError {
            message: e.message,
            code,
        }
    }
}

/// Why the host refused a subtask submission; nothing of it was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The attempt would exceed its subtask limit (the payload).
    TooMany(u32),
    /// A `depends_on` index (the payload) names no earlier subtask of the same submission.
    BadDependency(u32),
    /// The submission is malformed; the payload says how.
    Invalid(String),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::TooMany(limit) => write!(
                f,
                "too many subtasks: one attempt may submit at most {limit}"
            ),
            SubmitError::BadDependency(i) => write!(
                f,
                "depends_on index {i} does not name an earlier subtask of the same submission"
            ),
            SubmitError::Invalid(why) => write!(f, "invalid subtask submission: {why}"),
        }
    }
}

impl SubmitError {
    /// Its machine-readable code: `too-many-subtasks`, `bad-dependency` or `invalid-subtasks`.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::TooMany(_) => "too-many-subtasks",
            SubmitError::BadDependency(_) => "bad-dependency",
            SubmitError::Invalid(_) => "invalid-subtasks",
        }
    }
}

/// `?` on a refused submission fails the attempt with the refusal's message and code. (A
/// `SubmitError` is not a `std::error::Error`, so that this conversion, and not the generic
/// one, applies.)
impl From<SubmitError> for TaskError {
    fn from(e: SubmitError) -> Self {
        TaskError::new(e.to_string()).with_code(e.code())
    }
}

impl From<wit::SubmitError> for SubmitError {
    fn from(e: wit::SubmitError) -> Self {
        match e {
            wit::SubmitError::TooMany(n) => SubmitError::TooMany(n),
            wit::SubmitError::BadDependency(i) => SubmitError::BadDependency(i),
            wit::SubmitError::Invalid(why) => SubmitError::Invalid(why),
        }
    }
}
