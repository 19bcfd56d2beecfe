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
    /// `permanent:CODE` with a code (the convention `tessera:task` documents).
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

/// Why reading or writing data between tasks (outputs, the job cache) did not work; a refused
/// write leaves nothing behind. `?` turns it into a [`TaskError`] with its [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// A cache key is empty, longer than 512 characters, or holds a control character.
    InvalidKey(String),
    /// A value or output is larger than the payload, in bytes.
    TooLarge(u64),
    /// The attempt wrote as much to the cache as it may (the payload is the limit it reached).
    TooManyWrites(u64),
    /// The handle names no task this task depends on (the payload is its index).
    NotADependency(u32),
    /// The dependency returned no output (the payload is its index).
    NoOutput(u32),
    /// The data could not be fetched; the attempt may be retried.
    Unavailable(String),
    /// A value could not be turned into JSON or back; the payload says why.
    Encoding(String),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::InvalidKey(why) => write!(f, "invalid cache key: {why}"),
            DataError::TooLarge(limit) => {
                write!(
                    f,
                    "the value is larger than the limit of {limit} bytes; keep large data elsewhere and store a reference (a URL)"
                )
            }
            DataError::TooManyWrites(limit) => write!(
                f,
                "the attempt reached its limit of cache writes ({limit}); write fewer or smaller values"
            ),
            DataError::NotADependency(i) => {
                write!(f, "subtask handle {i} names no task this task depends on")
            }
            DataError::NoOutput(i) => {
                write!(f, "the dependency with handle {i} returned no output")
            }
            DataError::Unavailable(why) => write!(f, "job data is unavailable: {why}"),
            DataError::Encoding(why) => write!(f, "{why}"),
        }
    }
}

impl DataError {
    /// Its machine-readable code, e.g. `invalid-key` or `not-a-dependency`.
    pub fn code(&self) -> &'static str {
        match self {
            DataError::InvalidKey(_) => "invalid-key",
            DataError::TooLarge(_) => "too-large",
            DataError::TooManyWrites(_) => "too-many-writes",
            DataError::NotADependency(_) => "not-a-dependency",
            DataError::NoOutput(_) => "no-output",
            DataError::Unavailable(_) => "data-unavailable",
            DataError::Encoding(_) => "bad-encoding",
        }
    }
}

/// `?` on a data error fails the attempt with its message and code.
impl From<DataError> for TaskError {
    fn from(e: DataError) -> Self {
        TaskError::new(e.to_string()).with_code(e.code())
    }
}

impl From<wit::DataError> for DataError {
    fn from(e: wit::DataError) -> Self {
        match e {
            wit::DataError::InvalidKey(why) => DataError::InvalidKey(why),
            wit::DataError::TooLarge(n) => DataError::TooLarge(n),
            wit::DataError::TooManyWrites(n) => DataError::TooManyWrites(n),
            wit::DataError::NotADependency(i) => DataError::NotADependency(i),
            wit::DataError::Unavailable(why) => DataError::Unavailable(why),
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
