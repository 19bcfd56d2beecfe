//! Finished attempts' reports on their way to the server: batched by encoded size so that no
//! request exceeds what the server accepts, retried while the server is unreachable, and never
//! dropped in silence. A report the server refuses as malformed is isolated and sent again as
//! the attempt's failure with the server's reason, so that the task fails with a reason instead
//! of running again each time its lease expires.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera_api::limits::human_bytes;
use tessera_api::limits::{MAX_DISPLAY_BYTES, cut};
use tessera_api::{ClientError, Report, ReportResponse, TaskReport};

/// Room kept in a request for everything around its reports (the envelope, a claim).
const ENVELOPE_BYTES: usize = 16 << 10;

/// Most bytes of reports combined into one request. A server parses a request whole and
/// holds it, at several times its encoded size, until its transaction ends; batches of up to
/// the body limit (32 MiB) made a server hold ~250 MiB per request when many 10,000-subtask
/// reports finished together. A few MiB already amortizes a round trip over thousands of
/// ordinary reports.
pub const BATCH_BYTES: usize = 2 << 20;
/// Sends of one batch while the server is unreachable or failing, before its reports are given
/// up (their leases expire and the tasks run again).
const MAX_TRIES: u32 = 30;

use tessera_api::limits::encoded_len;

struct Entry {
    report: TaskReport,
    bytes: usize,
    /// Send in a request of its own (its batch was refused as a whole).
    alone: bool,
    /// Already the server's refusal turned into a failure: if refused again, give up.
    converted: bool,
}

/// Reports sent in one request, in order.
pub struct Batch {
    entries: Vec<Entry>,
    tries: u32,
}

impl Batch {
    /// The reports to send.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.entries.iter().map(|e| e.report.clone()).collect()
    }
}

/// Something the runner should say about a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The server refused one report (for example its lease had expired).
    Refused {
        /// The task.
        task_id: String,
        /// The server's reason.
        why: String,
    },
    /// A result larger than the server accepts was replaced by the attempt's failure.
    TooLarge {
        /// The task.
        task_id: String,
        /// Its encoded size.
        bytes: usize,
    },
    /// The server refused a report as malformed; it is sent again as the attempt's failure.
    Converted {
        /// The task.
        task_id: String,
        /// The server's reason.
        why: String,
    },
    /// Reports were given up: the tasks run again once their leases expire.
    GaveUp {
        /// The tasks.
        task_ids: Vec<String>,
        /// The last error.
        why: String,
    },
    /// A request failed for a reason that may pass (the server down, overloaded, restarting);
    /// it is tried again.
    Unreachable {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        why: String,
    },
}

/// What became of a sent batch.
#[derive(Debug, Default)]
pub struct Settled {
    /// Tasks whose report is done with (recorded, refused or given up).
    pub done: Vec<String>,
    /// What to tell the person running the runner.
    pub notices: Vec<Notice>,
}

/// Reports waiting to be sent.
pub struct Outbox {
    /// Most bytes of reports in one request.
    limit: usize,
    /// Most bytes of reports combined into one request ([`BATCH_BYTES`] or the limit).
    batch: usize,
    queue: VecDeque<Entry>,
    /// Batches that failed, waiting for their retry.
    retry: Option<(Instant, Batch)>,
    /// Give up at the first failure instead of retrying (the runner is exiting).
    hurry: bool,
}

impl Outbox {
    /// An outbox for a server that accepts bodies of up to `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        let limit = max_body.saturating_sub(ENVELOPE_BYTES).max(ENVELOPE_BYTES);
        Outbox {
            limit,
            batch: limit.min(BATCH_BYTES),
            queue: VecDeque::new(),
            retry: None,
            hurry: false,
        }
    }

    /// From now on, a batch that fails is given up instead of retried, and one waiting for its
    /// retry goes now.
    pub fn hurry(&mut self) {
        self.hurry = true;
        if let Some((at, _)) = &mut self.retry {
            *at = Instant::now().min(*at);
        }
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.retry.is_none()
    }

    /// Queues a report; one too large to send becomes the attempt's failure.
    pub fn push(&mut self, report: TaskReport) -> Option<Notice> {
        let bytes = encoded_len(&report);
        if bytes <= self.limit {
            self.queue.push_back(Entry {
                report,
                bytes,
                alone: false,
                converted: false,
            });
            return None;
        }
        let notice = Notice::TooLarge {
            task_id: report.task_id.clone(),
            bytes,
        };
        let display = match report.report {
            Report::Computed { display, .. } | Report::Failed { display, .. } => {
                display.map(|d| cut(&d, MAX_DISPLAY_BYTES))
            }
            _ => None,
        };
        let failed = TaskReport {
            report: Report::Failed {
                permanent: false,
                reason: format!(
                    "the attempt's result is {} encoded, more than the {} the server accepts \
                     in one request: submit fewer or smaller subtasks (pass large data by \
                     reference)",
                    human_bytes(bytes),
                    human_bytes(self.limit)
                ),
                display,
            },
            ..report
        };
        self.queue.push_back(Entry {
            bytes: encoded_len(&failed),
            report: failed,
            alone: false,
            converted: true,
        });
        Some(notice)
    }

    /// When a batch waits for its retry, the instant it may go.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry.as_ref().map(|(at, _)| *at)
    }

    /// The next batch to send at `now`, if any: a retry that is due, else queued reports
    /// combined up to [`BATCH_BYTES`] (a larger report goes alone, within the size limit).
    pub fn next_batch(&mut self, now: Instant) -> Option<Batch> {
        if let Some((at, _)) = &self.retry {
            if *at > now {
                return None;
            }
            return self.retry.take().map(|(_, b)| b);
        }
        let first = self.queue.pop_front()?;
        let mut bytes = first.bytes;
        let alone = first.alone;
        let mut entries = vec![first];
        while !alone
            && let Some(next) = self.queue.front()
            && !next.alone
            && bytes.saturating_add(next.bytes) <= self.batch
        {
            bytes += next.bytes;
            entries.push(self.queue.pop_front().expect("peeked"));
        }
        Some(Batch { entries, tries: 0 })
    }

    /// Takes the server's answer to `batch`.
    pub fn settle(
        &mut self,
        mut batch: Batch,
        answer: &Result<ReportResponse, ClientError>,
        now: Instant,
    ) -> Settled {
        let mut settled = Settled::default();
        let ids = |b: &Batch| -> Vec<String> {
            b.entries.iter().map(|e| e.report.task_id.clone()).collect()
        };
        match answer {
            Ok(response) => {
                settled.done = ids(&batch);
                settled.notices = response
                    .results
                    .iter()
                    .filter(|r| !r.accepted)
                    .map(|r| Notice::Refused {
                        task_id: r.task_id.clone(),
                        why: r.error.clone().unwrap_or_default(),
                    })
                    .collect();
            }
            // Every report of the batch refused by lease fencing: nothing left to do.
            Err(e) if e.status() == Some(409) => {
                settled.done = ids(&batch);
                settled.notices.push(Notice::Refused {
                    task_id: ids(&batch).join(", "),
                    why: e.to_string(),
                });
            }
            // Refused as malformed or too large: isolate, then fail the attempt with the
            // server's reason.
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                if batch.entries.len() > 1 {
                    for mut entry in batch.entries.into_iter().rev() {
                        entry.alone = true;
                        self.queue.push_front(entry);
                    }
                    return settled;
                }
                let entry = batch.entries.pop().expect("a batch is never empty");
                let task_id = entry.report.task_id.clone();
                if entry.converted {
                    settled.done.push(task_id.clone());
                    settled.notices.push(Notice::GaveUp {
                        task_ids: vec![task_id],
                        why: e.to_string(),
                    });
                    return settled;
                }
                let why = e.to_string();
                let failed = TaskReport {
                    report: Report::Failed {
                        permanent: false,
                        reason: format!("the server refused this attempt's result: {why}"),
                        display: None,
                    },
                    ..entry.report
                };
                settled.notices.push(Notice::Converted { task_id, why });
                self.queue.push_front(Entry {
                    bytes: encoded_len(&failed),
                    report: failed,
                    alone: true,
                    converted: true,
                });
            }
            // Unreachable, overloaded or broken: the same batch again, later.
            Err(e) => {
                batch.tries += 1;
                if self.hurry || batch.tries >= MAX_TRIES {
                    settled.done = ids(&batch);
                    settled.notices.push(Notice::GaveUp {
                        task_ids: ids(&batch),
                        why: e.to_string(),
                    });
                    return settled;
                }
                let pause = Duration::from_millis(250u64 << batch.tries.min(5));
                self.retry = Some((now + pause, batch));
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_api::ReportResult;

    fn computed(task: &str, filler: usize) -> TaskReport {
        TaskReport {
            task_id: task.into(),
            lease: 1,
            report: Report::Computed {
                subtasks: vec![],
                display: Some("x".repeat(filler)),
                progress: vec![],
                output: None,
                output_from: None,
                cache: vec![],
            },
        }
    }

    fn api(status: u16) -> Result<ReportResponse, ClientError> {
        Err(ClientError::Api {
            status,
            code: "bad_request".into(),
            message: "the body is too deep".into(),
        })
    }

    fn accepted(b: &Batch) -> Result<ReportResponse, ClientError> {
        Ok(ReportResponse {
            results: b
                .reports()
                .into_iter()
                .map(|r| ReportResult {
                    task_id: r.task_id,
                    accepted: true,
                    error: None,
                })
                .collect(),
            tasks: vec![],
        })
    }

    #[test]
    fn batches_never_exceed_the_limit() {
        let mut o = Outbox::new(64 << 10);
        for i in 0..10 {
            assert!(o.push(computed(&format!("t{i}"), 20 << 10)).is_none());
        }
        let now = Instant::now();
        let mut sizes = vec![];
        while let Some(b) = o.next_batch(now) {
            let bytes: usize = b.reports().iter().map(encoded_len).sum();
            assert!(bytes <= o.limit, "{bytes} > {}", o.limit);
            sizes.push(b.entries.len());
            let answer = accepted(&b);
            assert_eq!(o.settle(b, &answer, now).done.len(), *sizes.last().unwrap());
        }
        assert_eq!(sizes, vec![2, 2, 2, 2, 2]);
        assert!(o.is_empty());
    }

    #[test]
    fn big_reports_are_not_combined_past_the_batch_size() {
        let mut o = Outbox::new(32 << 20);
        // Three reports of 1.5 MiB: each fits the body limit and goes, but two together would
        // pass BATCH_BYTES; a 3 MiB one goes alone. Small ones are combined.
        for i in 0..3 {
            assert!(o.push(computed(&format!("big{i}"), 3 << 19)).is_none());
        }
        assert!(o.push(computed("bigger", 3 << 20)).is_none());
        for i in 0..3 {
            o.push(computed(&format!("small{i}"), 100));
        }
        let now = Instant::now();
        let mut sizes = vec![];
        while let Some(b) = o.next_batch(now) {
            sizes.push(b.entries.len());
            let answer = accepted(&b);
            o.settle(b, &answer, now);
        }
        assert_eq!(sizes, vec![1, 1, 1, 1, 3]);
    }

    #[test]
    fn a_result_too_large_to_send_fails_its_attempt() {
        let mut o = Outbox::new(64 << 10);
        let notice = o.push(computed("big", 100 << 10)).unwrap();
        assert!(matches!(notice, Notice::TooLarge { ref task_id, .. } if task_id == "big"));
        let b = o.next_batch(Instant::now()).unwrap();
        let Report::Failed {
            reason, display, ..
        } = &b.reports()[0].report
        else {
            panic!("a failure is sent instead")
        };
        assert!(reason.contains("more than the 48 KiB"), "{reason}");
        assert!(display.as_ref().unwrap().len() <= MAX_DISPLAY_BYTES);
        assert!(encoded_len(&b.reports()[0]) <= o.limit);
    }

    #[test]
    fn a_refused_batch_is_split_and_the_bad_report_fails_with_the_servers_reason() {
        let mut o = Outbox::new(1 << 20);
        o.push(computed("good", 10));
        o.push(computed("bad", 10));
        let now = Instant::now();
        let b = o.next_batch(now).unwrap();
        assert_eq!(b.entries.len(), 2);
        let s = o.settle(b, &api(400), now);
        assert!(s.done.is_empty() && s.notices.is_empty());
        // Each goes alone now.
        let good = o.next_batch(now).unwrap();
        assert_eq!(good.reports()[0].task_id, "good");
        let answer = accepted(&good);
        assert_eq!(o.settle(good, &answer, now).done, vec!["good".to_string()]);
        let bad = o.next_batch(now).unwrap();
        assert_eq!(bad.reports().len(), 1);
        let s = o.settle(bad, &api(413), now);
        assert!(matches!(&s.notices[0], Notice::Converted { task_id, .. } if task_id == "bad"));
        let failed = o.next_batch(now).unwrap();
        let Report::Failed { reason, .. } = &failed.reports()[0].report else {
            panic!("the attempt is reported failed")
        };
        assert!(reason.contains("refused this attempt's result: the body is too deep"));
        // Refused again: given up, not looped.
        let s = o.settle(failed, &api(400), now);
        assert_eq!(s.done, vec!["bad".to_string()]);
        assert!(matches!(s.notices[0], Notice::GaveUp { .. }));
        assert!(o.is_empty());
    }

    #[test]
    fn an_unreachable_server_is_retried_later_then_given_up() {
        let mut o = Outbox::new(1 << 20);
        o.push(computed("t", 10));
        let mut now = Instant::now();
        let mut b = o.next_batch(now).unwrap();
        for _ in 1..MAX_TRIES {
            let down = Err(ClientError::Unreachable {
                url: "http://x".into(),
                reason: "refused".into(),
            });
            let s = o.settle(b, &down, now);
            assert!(s.done.is_empty());
            assert!(o.next_batch(now).is_none(), "not before its pause");
            now = o.retry_at().unwrap();
            b = o.next_batch(now).unwrap();
        }
        let s = o.settle(b, &api(503), now);
        assert_eq!(s.done, vec!["t".to_string()]);
        assert!(matches!(s.notices[0], Notice::GaveUp { .. }));
    }

    #[test]
    fn fencing_refusals_are_final() {
        let mut o = Outbox::new(1 << 20);
        o.push(computed("t", 10));
        let now = Instant::now();
        let b = o.next_batch(now).unwrap();
        let s = o.settle(b, &api(409), now);
        assert_eq!(s.done, vec!["t".to_string()]);
        assert!(o.is_empty());
    }
}
