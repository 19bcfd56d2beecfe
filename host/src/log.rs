//! Log lines of task attempts: the record, the sink they leave through, and the per-attempt
//! budget that truncates a flood.

use std::sync::Arc;

use tessera_api::Level;

use crate::limits::human_bytes;

/// One log line written by a task attempt (through `log`, stdout or stderr).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When the line was written, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured key/value fields, in the order written.
    pub fields: Vec<(String, FieldValue)>,
    /// The job of the task.
    pub job_id: Arc<str>,
    /// The task that wrote the line.
    pub task_id: Arc<str>,
    /// The attempt number, from 1.
    pub attempt: u32,
}

impl LogRecord {
    /// The value of field `key`, if the line has it.
    pub fn value(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of field `key` as text, if the line has it.
    pub fn field(&self, key: &str) -> Option<String> {
        self.value(key).map(ToString::to_string)
    }
}

/// A log field's value as the guest typed it (`tessera:task@0.1.0` guests send text).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Text.
    Text(String),
    /// A signed integer.
    Signed(i64),
    /// An unsigned integer.
    Unsigned(u64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl FieldValue {
    /// As JSON: numbers and booleans typed, text a string (and so a float that JSON cannot
    /// hold, NaN or an infinity).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Text(t) => serde_json::Value::String(t.clone()),
            FieldValue::Signed(n) => (*n).into(),
            FieldValue::Unsigned(n) => (*n).into(),
            FieldValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(f.to_string())),
            FieldValue::Bool(b) => (*b).into(),
        }
    }

    /// Bytes it counts against the attempt's log budget.
    fn size(&self) -> usize {
        match self {
            FieldValue::Text(t) => t.len(),
            _ => 8,
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Text(t) => f.write_str(t),
            FieldValue::Signed(n) => write!(f, "{n}"),
            FieldValue::Unsigned(n) => write!(f, "{n}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(text: &str) -> Self {
        FieldValue::Text(text.to_string())
    }
}

/// Receives log lines as attempts write them. Must not block: queue and ship elsewhere.
pub trait LogSink: Send + Sync {
    /// Takes one log line.
    fn emit(&self, record: LogRecord);
}

/// A sink that drops every line.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn emit(&self, _record: LogRecord) {}
}

impl<F: Fn(LogRecord) + Send + Sync> LogSink for F {
    fn emit(&self, record: LogRecord) {
        self(record)
    }
}

pub use tessera_api::now_unix_nano;

/// Longest message kept from one log line; the rest is cut with a marker.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Stamps an attempt's log lines and enforces its log budget.
pub(crate) struct AttemptLog {
    sink: Arc<dyn LogSink>,
    job_id: Arc<str>,
    task_id: Arc<str>,
    attempt: u32,
    budget: usize,
    used: usize,
    truncated: bool,
}

impl AttemptLog {
    pub(crate) fn new(
        sink: Arc<dyn LogSink>,
        job_id: Arc<str>,
        task_id: Arc<str>,
        attempt: u32,
        budget: usize,
    ) -> Self {
        AttemptLog {
            sink,
            job_id,
            task_id,
            attempt,
            budget,
            used: 0,
            truncated: false,
        }
    }

    /// Writes a line unless the budget is spent; the first line over budget becomes a marker.
    pub(crate) fn write(
        &mut self,
        level: Level,
        mut message: String,
        fields: Vec<(String, FieldValue)>,
    ) {
        if self.truncated {
            return;
        }
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = message.len() - cut;
            message.truncate(cut);
            message.push_str(&format!(" … [{dropped} more bytes cut]"));
        }
        let size = message.len()
            + fields
                .iter()
                .map(|(k, v)| k.len() + v.size())
                .sum::<usize>();
        if self.used + size > self.budget {
            self.truncated = true;
            let marker = format!(
                "log output truncated: this attempt reached its limit of {} of log text; \
                 further lines are dropped (raise the runner's log limit if they matter)",
                human_bytes(self.budget)
            );
            self.send(
                Level::Warn,
                marker,
                vec![("truncated".into(), FieldValue::Bool(true))],
            );
            return;
        }
        self.used += size;
        self.send(level, message, fields);
    }

    fn send(&self, level: Level, message: String, fields: Vec<(String, FieldValue)>) {
        self.sink.emit(LogRecord {
            time_unix_nano: now_unix_nano(),
            level,
            message,
            fields,
            job_id: self.job_id.clone(),
            task_id: self.task_id.clone(),
            attempt: self.attempt,
        });
    }

    /// Whether lines were dropped because the budget ran out.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn budget_truncates_with_one_marker() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            move |r: LogRecord| lines.lock().unwrap().push(r)
        };
        let mut log = AttemptLog::new(Arc::new(sink), "j".into(), "t".into(), 1, 100);
        for i in 0..50 {
            log.write(Level::Info, format!("line {i:04}"), vec![]);
        }
        let lines = lines.lock().unwrap();
        // 9 bytes a line: 11 lines fit in 100 bytes, then one marker.
        assert_eq!(lines.len(), 12);
        assert!(lines[11].message.contains("log output truncated"));
        assert_eq!(lines[11].level, Level::Warn);
        assert!(log.truncated());
    }

    #[test]
    fn typed_values_render_as_text_and_json() {
        assert_eq!(FieldValue::Signed(-3).to_json(), serde_json::json!(-3));
        assert_eq!(
            FieldValue::Unsigned(u64::MAX).to_json(),
            serde_json::json!(u64::MAX)
        );
        assert_eq!(FieldValue::Float(1.5).to_json(), serde_json::json!(1.5));
        assert_eq!(
            FieldValue::Float(f64::NAN).to_json(),
            serde_json::json!("NaN")
        );
        assert_eq!(FieldValue::Bool(true).to_json(), serde_json::json!(true));
        assert_eq!(
            FieldValue::from("7").to_json(),
            serde_json::json!("7"),
            "text stays text"
        );
        assert_eq!(FieldValue::Float(2.0).to_string(), "2");
    }

    #[test]
    fn long_messages_are_cut() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            move |r: LogRecord| lines.lock().unwrap().push(r)
        };
        let mut log = AttemptLog::new(Arc::new(sink), "j".into(), "t".into(), 1, 1 << 20);
        log.write(Level::Info, "é".repeat(20_000), vec![]);
        let lines = lines.lock().unwrap();
        assert!(lines[0].message.len() < MAX_MESSAGE_BYTES + 64);
        assert!(lines[0].message.ends_with("more bytes cut]"));
    }
}
