//! Wakes long-polling claims when claimable work may have appeared.

use tokio::sync::watch;

/// A broadcast "something changed" signal: a counter that waiters watch.
#[derive(Debug, Clone)]
pub struct Wake {
    tx: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Wake {
            tx: watch::channel(0).0,
        }
    }
}

impl Wake {
    /// Tells every waiter to look again.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees notifications sent after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.tx.subscribe();
        rx.borrow_and_update();
        rx
    }
}
