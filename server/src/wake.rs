//! Wakes long-polling claims when claimable work may have appeared — only the claims of the
//! clusters it may have appeared in — and watchers of a job (the console) when anything may
//! have changed. The store tells it of every commit ([`CommitListener`]); requests only
//! subscribe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::scope::{CommitListener, Scope, cluster_of, fleet_key};

/// Broadcast "look again" signals: counters that waiters watch. A claim waits on its
/// cluster's counter and the everyone counter, so that work submitted to cluster A never runs
/// a claim transaction for a runner waiting on cluster B; watchers of jobs wait on a counter
/// that every change moves, claims included, so that claims never wake other claims.
#[derive(Debug, Clone)]
pub struct Wake {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    everyone: watch::Sender<u64>,
    clusters: Mutex<HashMap<String, watch::Sender<u64>>>,
    any: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Wake {
            inner: Arc::new(Inner {
                everyone: watch::channel(0).0,
                clusters: Mutex::new(HashMap::new()),
                any: watch::channel(0).0,
            }),
        }
    }
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

impl CommitListener for Wake {
    fn committed(&self, scope: &Scope) {
        self.notify_scope(scope);
    }
}

/// What a waiting claim watches: its cluster and everyone.
pub struct Woken {
    everyone: watch::Receiver<u64>,
    cluster: watch::Receiver<u64>,
}

impl Woken {
    /// Resolves at the next wake-up of its cluster or of everyone.
    pub async fn changed(&mut self) {
        tokio::select! {
            _ = self.everyone.changed() => {}
            _ = self.cluster.changed() => {}
        }
    }
}

impl Wake {
    /// Wakes every waiting claim: work may be claimable anywhere.
    pub fn notify(&self) {
        bump(&self.inner.everyone);
        self.touched();
    }

    /// Wakes the claims that `scope` names, and every watcher.
    pub fn notify_scope(&self, scope: &Scope) {
        match scope {
            Scope::Nothing => self.touched(),
            Scope::Everyone => self.notify(),
            Scope::Clusters(names) => {
                let clusters = self.inner.clusters.lock().unwrap();
                for name in names {
                    if let Some(tx) = clusters.get(name) {
                        bump(tx);
                    }
                    // Fleet runners of the cluster serve every tenant.
                    if let Some(tx) = clusters.get(&fleet_key(cluster_of(name))) {
                        bump(tx);
                    }
                }
                drop(clusters);
                self.touched();
            }
        }
    }

    /// Tells watchers that something changed that makes no work claimable.
    pub fn touched(&self) {
        bump(&self.inner.any);
    }

    /// What a claim waits on (its wake-up key: [`key`], or [`fleet_key`]); it sees wake-ups
    /// sent after this call.
    pub fn subscribe(&self, cluster: &str) -> Woken {
        let mut clusters = self.inner.clusters.lock().unwrap();
        if !clusters.contains_key(cluster) {
            // Forget clusters nobody waits on any more, so names cannot pile up.
            clusters.retain(|_, tx| tx.receiver_count() > 0);
            clusters.insert(cluster.to_string(), watch::channel(0).0);
        }
        let mut cluster = clusters[cluster].subscribe();
        drop(clusters);
        cluster.borrow_and_update();
        let mut everyone = self.inner.everyone.subscribe();
        everyone.borrow_and_update();
        Woken { everyone, cluster }
    }

    /// A receiver that sees every change signalled after this call.
    pub fn watch(&self) -> watch::Receiver<u64> {
        let mut rx = self.inner.any.subscribe();
        rx.borrow_and_update();
        rx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::scope::key;

    async fn woke(w: &mut Woken) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_cluster_wakes_only_its_own_claims() {
        let wake = Wake::default();
        let mut a = wake.subscribe("a");
        let mut b = wake.subscribe("b");
        wake.notify_scope(&Scope::Clusters(vec!["a".into()]));
        assert!(woke(&mut a).await);
        assert!(!woke(&mut b).await, "cluster b slept through a's work");
        let watcher = wake.watch();
        wake.notify_scope(&Scope::Nothing);
        assert!(
            !woke(&mut a).await,
            "a change with nothing claimable wakes no claim"
        );
        assert!(watcher.has_changed().unwrap(), "but every watcher");
        wake.notify_scope(&Scope::Everyone);
        assert!(woke(&mut a).await && woke(&mut b).await);
    }

    #[tokio::test]
    async fn a_tenants_work_wakes_its_own_runners_and_the_fleet_only() {
        let wake = Wake::default();
        let mut a = wake.subscribe(&key(2, "default"));
        let mut b = wake.subscribe(&key(3, "default"));
        let mut fleet = wake.subscribe(&fleet_key("default"));
        let mut other_fleet = wake.subscribe(&fleet_key("gpu"));
        let mut plain = wake.subscribe(&key(crate::store::DEFAULT_TENANT, "default"));
        assert_eq!(key(crate::store::DEFAULT_TENANT, "default"), "default");
        wake.notify_scope(&Scope::Clusters(vec![key(2, "default")]));
        assert!(woke(&mut a).await && woke(&mut fleet).await);
        assert!(
            !woke(&mut b).await,
            "tenant 3's runners slept through tenant 2's work"
        );
        assert!(!woke(&mut plain).await && !woke(&mut other_fleet).await);
    }

    #[tokio::test]
    async fn watchers_see_every_change_and_clusters_nobody_waits_on_are_forgotten() {
        let wake = Wake::default();
        let watcher = wake.watch();
        wake.touched();
        assert!(watcher.has_changed().unwrap());
        for i in 0..100 {
            drop(wake.subscribe(&format!("gone-{i}")));
        }
        let _kept = wake.subscribe("kept");
        assert!(wake.inner.clusters.lock().unwrap().len() <= 2);
    }
}
