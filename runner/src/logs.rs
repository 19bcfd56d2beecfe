//! Ships attempts' log lines to the server in batches, off the guests' path.

use std::time::Duration;

use tessera_api::{Client, LogBatch, LogLine};
use tessera_host::{LogRecord, LogSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tessera_api::limits::encoded_len;

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

/// A task's log line as the server takes it: its fields as JSON, typed as the guest typed them.
fn line_of(runner_id: &str, r: LogRecord) -> LogLine {
    let fields = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    LogLine {
        time_unix_nano: r.time_unix_nano,
        level: r.level,
        message: r.message,
        task_id: r.task_id.to_string(),
        job_id: r.job_id.to_string(),
        runner_id: runner_id.to_string(),
        attempt: r.attempt,
        fields,
    }
}

impl LogSink for Shipper {
    fn emit(&self, r: LogRecord) {
        let _ = self.tx.send(line_of(&self.runner_id, r));
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
    fn fields_keep_the_types_the_guest_gave_them() {
        use tessera_host::FieldValue as V;
        let record = LogRecord {
            time_unix_nano: 5,
            level: tessera_api::Level::Info,
            message: "m".into(),
            fields: vec![
                ("n".into(), V::Unsigned(7)),
                ("x".into(), V::Float(0.5)),
                ("ok".into(), V::Bool(true)),
                ("text".into(), V::Text("7".into())),
                ("nan".into(), V::Float(f64::NAN)),
            ],
            job_id: "j".into(),
            task_id: "t".into(),
            attempt: 2,
        };
        let line = line_of("r", record);
        assert_eq!(
            serde_json::Value::Object(line.fields),
            serde_json::json!({"n": 7, "x": 0.5, "ok": true, "text": "7", "nan": "NaN"}),
            "text that looks like a number stays text"
        );
        assert_eq!((line.runner_id.as_str(), line.attempt), ("r", 2));
    }
}
