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

    fn stop(&self, task_id: &str, why: Stop) {
        if let Some(held) = self.0.lock().unwrap().get(task_id) {
            let _ = held.stop.send(Some(why));
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
                        tracing::warn!(task = %status.task_id, "lost the lease; stopping the attempt");
                        in_flight.stop(&status.task_id, Stop::LeaseLost);
                    } else if status.canceled {
                        in_flight.stop(&status.task_id, Stop::Canceled);
                    }
                }
            }
            Err(e) => tracing::warn!("extending leases failed: {e}"),
        }
    }
}
