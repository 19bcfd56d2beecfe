//! Ships attempts' log lines to the server in batches, off the guests' path.

use std::time::Duration;

use tessera_api::{Client, LogBatch, LogLine};
use tessera_host::{LogRecord, LogSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::outbox::encoded_len;

/// Most lines in one batch.
const BATCH: usize = 2000;
/// Longest a line waits for its batch to fill.
const LINGER: Duration = Duration::from_millis(100);
/// Room kept in a request for everything around its lines.
const ENVELOPE_BYTES: usize = 16 << 10;

/// The sink attempts write to: converts and queues, never blocks.
pub struct Shipper {
    runner_id: String,
    tx: mpsc::UnboundedSender<LogLine>,
}

/// Turns a field's text into JSON: numbers and booleans stay typed when they round-trip.
// `Value == &str` compares strings only; here the number's own text must equal the field's.
#[allow(clippy::cmp_owned)]
fn field_value(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))
            if v.to_string() == text =>
        {
            v
        }
        _ => serde_json::Value::String(text.to_string()),
    }
}

impl LogSink for Shipper {
    fn emit(&self, r: LogRecord) {
        let fields = r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), field_value(v)))
            .collect();
        let _ = self.tx.send(LogLine {
            time_unix_nano: r.time_unix_nano,
            level: r.level,
            message: r.message,
            task_id: r.task_id.to_string(),
            job_id: r.job_id.to_string(),
            runner_id: self.runner_id.clone(),
            attempt: r.attempt,
            fields,
        });
    }
}

/// Starts the shipping task; it ends once every [`Shipper`] is dropped and the queue is sent.
/// No batch it sends exceeds `max_body` bytes encoded.
pub fn start(client: Client, runner_id: String, max_body: usize) -> (Shipper, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
    let limit = max_body.saturating_sub(ENVELOPE_BYTES).max(ENVELOPE_BYTES);
    let task = tokio::spawn(async move {
        let mut carried: Option<(LogLine, usize)> = None;
        loop {
            let (first, size) = match carried.take() {
                Some(c) => c,
                None => match rx.recv().await {
                    Some(line) => {
                        let size = encoded_len(&line);
                        (line, size)
                    }
                    None => break,
                },
            };
            let mut bytes = size;
            let mut batch = vec![first];
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while batch.len() < BATCH {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => {
                            // Counted as the server will read it: escapes included.
                            let size = encoded_len(&line);
                            if bytes.saturating_add(size) > limit {
                                carried = Some((line, size));
                                break;
                            }
                            bytes += size;
                            batch.push(line);
                        }
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            send(&client, batch).await;
        }
    });
    (Shipper { runner_id, tx }, task)
}

/// Sends a batch; one the server refuses is split in halves until only the lines it refuses
/// are left out, so that a bad line never costs its neighbours theirs.
async fn send(client: &Client, logs: Vec<LogLine>) {
    let mut parts = vec![logs];
    while let Some(part) = parts.pop() {
        if let Some(refused) = send_part(client, part).await {
            if refused.len() > 1 {
                let mut first = refused;
                let second = first.split_off(first.len() / 2);
                parts.push(second);
                parts.push(first);
            } else {
                tracing::warn!(
                    "the server refused a log line of task {}",
                    refused[0].task_id
                );
            }
        }
    }
}

/// Sends one batch, retrying while the server is unreachable; gives back a refused batch.
async fn send_part(client: &Client, logs: Vec<LogLine>) -> Option<Vec<LogLine>> {
    let n = logs.len();
    let batch = LogBatch { logs };
    for attempt in 0..5u32 {
        match client.send_logs(&batch).await {
            Ok(_) => return None,
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::warn!("the server refused {n} log lines: {e}");
                return Some(batch.logs);
            }
            Err(e) => {
                tracing::warn!("shipping {n} log lines failed (try {}): {e}", attempt + 1);
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::error!("dropped {n} log lines: the server stayed unreachable");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_numbers_and_booleans() {
        assert_eq!(field_value("7"), serde_json::json!(7));
        assert_eq!(field_value("0.5"), serde_json::json!(0.5));
        assert_eq!(field_value("true"), serde_json::json!(true));
        assert_eq!(field_value("007"), serde_json::json!("007"));
        assert_eq!(field_value("1e3"), serde_json::json!("1e3"));
        assert_eq!(field_value("hello"), serde_json::json!("hello"));
    }
}
