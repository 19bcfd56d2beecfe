//! The attempts a runner holds: their leases, extended in the background, and how to stop them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_api::{Client, ExtendRequest, LeaseRef};
use tokio::sync::watch;

/// Why a running attempt must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its job was canceled: report `canceled`.
    Canceled,
    /// The lease is gone (expired or taken over): report nothing, the result would be refused.
    LeaseLost,
    /// The runner is shutting down and the grace period ran out: report `abandoned`.
    Abandon,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Canceled => "its job was canceled",
            Stop::LeaseLost => "its lease was lost (it expired or another runner took the task)",
            Stop::Abandon => {
                "abandoned as the runner stops; the task runs again without spending a retry"
            }
        })
    }
}

struct Held {
    lease: u64,
    stop: watch::Sender<Option<Stop>>,
}

/// The attempts in flight, by task id.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, Held>>>);

impl InFlight {
    /// Registers an attempt; the receiver learns if it must stop.
    pub fn insert(&self, task_id: &str, lease: u64) -> watch::Receiver<Option<Stop>> {
        let (stop, rx) = watch::channel(None);
        self.0
            .lock()
            .unwrap()
            .insert(task_id.to_string(), Held { lease, stop });
        rx
    }

    /// Forgets an attempt that ended.
    pub fn remove(&self, task_id: &str) {
        self.0.lock().unwrap().remove(task_id);
    }

    /// Tells every attempt to stop.
    pub fn stop_all(&self, why: Stop) {
        for held in self.0.lock().unwrap().values() {
            let _ = held.stop.send(Some(why));
        }
    }

    /// Tells one attempt to stop; false if it had already ended (its report on the way, which
    /// is why the server no longer counts the lease as held).
    fn stop(&self, task_id: &str, why: Stop) -> bool {
        match self.0.lock().unwrap().get(task_id) {
            Some(held) => held.stop.send(Some(why)).is_ok(),
            None => false,
        }
    }

    fn leases(&self) -> Vec<LeaseRef> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(task_id, h)| LeaseRef {
                task_id: task_id.clone(),
                lease: h.lease,
            })
            .collect()
    }
}

/// Extends every held lease a few times per lease period; stops attempts whose lease is lost
/// or whose job was canceled. Runs until aborted.
pub async fn extend_forever(
    client: Client,
    runner_id: String,
    in_flight: InFlight,
    lease: Arc<Mutex<Duration>>,
) {
    loop {
        // A third of the lease, at most a second: a task claimed just after this sleep began
        // must still be extended well before its lease runs out.
        let every =
            (*lease.lock().unwrap() / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::time::sleep(every).await;
        let leases = in_flight.leases();
        if leases.is_empty() {
            continue;
        }
        match client
            .extend(&ExtendRequest {
                runner_id: runner_id.clone(),
                leases,
            })
            .await
        {
            Ok(answer) => {
                for status in answer.leases {
                    if !status.held {
                        if in_flight.stop(&status.task_id, Stop::LeaseLost) {
                            tracing::warn!(task = %status.task_id, "lost the lease; stopping the attempt");
                        }
                    } else if status.canceled {
                        let _ = in_flight.stop(&status.task_id, Stop::Canceled);
                    }
                }
            }
            Err(e) => tracing::warn!("extending leases failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_attempts_still_running_are_told_their_lease_is_lost() {
        let in_flight = InFlight::default();
        let running = in_flight.insert("a", 1);
        drop(in_flight.insert("b", 1));
        assert!(in_flight.stop("a", Stop::LeaseLost));
        assert_eq!(*running.borrow(), Some(Stop::LeaseLost));
        assert!(
            !in_flight.stop("b", Stop::LeaseLost),
            "b's attempt has ended"
        );
        assert!(!in_flight.stop("c", Stop::LeaseLost), "never held");
    }
}
