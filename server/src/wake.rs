//! Wakes long-polling claims when claimable work may have appeared, and watchers of a job
//! (the console) when anything may have changed.

use tokio::sync::watch;

/// Two broadcast "something changed" signals: counters that waiters watch. Claimable work
/// wakes both; a change that makes nothing claimable (a task claimed) wakes watchers only, so
/// that claims never wake other claims.
#[derive(Debug, Clone)]
pub struct Wake {
    work: watch::Sender<u64>,
    any: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Wake {
            work: watch::channel(0).0,
            any: watch::channel(0).0,
        }
    }
}

impl Wake {
    /// Tells every waiter to look again: work may be claimable.
    pub fn notify(&self) {
        self.work.send_modify(|n| *n = n.wrapping_add(1));
        self.touched();
    }

    /// Tells watchers that something changed that makes no work claimable.
    pub fn touched(&self) {
        self.any.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees [`Wake::notify`] calls made after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.work.subscribe();
        rx.borrow_and_update();
        rx
    }

    /// A receiver that sees every change signalled after this call.
    pub fn watch(&self) -> watch::Receiver<u64> {
        let mut rx = self.any.subscribe();
        rx.borrow_and_update();
        rx
    }
}
