//! Wakes long-polling claims when claimable work may have appeared — only the claims of the
//! clusters it may have appeared in — and watchers of a job (the console) when anything may
//! have changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Where claimable work may have appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Nowhere: nothing became claimable.
    #[default]
    Nothing,
    /// In these clusters.
    Clusters(Vec<String>),
    /// Anywhere (the change is not known task by task).
    Everyone,
}

/// Separates a tenant from a cluster in a wake-up key: a control character, which no cluster
/// name holds.
const TENANT_SEPARATOR: char = '\u{1f}';

/// The wake-up key of a tenant's cluster: the cluster's name for the default tenant (as before
/// tenants), else the tenant's number and the name. Claims of tenant A's runners on cluster
/// `default` wait on another key than tenant B's, so B's work never wakes A's runners.
pub fn key(tenant: crate::store::TenantId, cluster: &str) -> String {
    if tenant == crate::store::DEFAULT_TENANT {
        cluster.to_string()
    } else {
        format!("{tenant}{TENANT_SEPARATOR}{cluster}")
    }
}

/// The key a claim reaching every tenant (a fleet runner) waits on for `cluster`: every
/// tenant's work there wakes it.
pub fn fleet_key(cluster: &str) -> String {
    format!("*{TENANT_SEPARATOR}{cluster}")
}

/// The cluster a wake-up key names.
fn cluster_of(key: &str) -> &str {
    key.split_once(TENANT_SEPARATOR).map_or(key, |(_, c)| c)
}

/// Most bytes of a notification payload naming clusters (PostgreSQL allows 8000).
const MAX_PAYLOAD: usize = 7000;

impl Scope {
    /// The scope as a notification payload for other servers: cluster names one per line
    /// (names hold no control characters), `*` for everyone (also when the names would not
    /// fit), `None` when there is nothing to tell.
    pub fn to_payload(&self) -> Option<String> {
        match self {
            Scope::Nothing => None,
            Scope::Everyone => Some("*".into()),
            Scope::Clusters(names) => {
                let text = names.join("\n");
                if names.is_empty() || text.len() > MAX_PAYLOAD || text == "*" {
                    Some("*".into())
                } else {
                    Some(text)
                }
            }
        }
    }

    /// The scope a payload names; anything but cluster names (an empty payload, `*`, from an
    /// older server) wakes everyone.
    pub fn from_payload(payload: &str) -> Scope {
        if payload.is_empty() || payload == "*" {
            return Scope::Everyone;
        }
        Scope::Clusters(payload.split('\n').map(str::to_string).collect())
    }
}

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

    /// Wakes the claims that `scope` names.
    pub fn notify_scope(&self, scope: &Scope) {
        match scope {
            Scope::Nothing => {}
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

    #[test]
    fn scopes_travel_as_payloads() {
        let two = Scope::Clusters(vec!["gpu".into(), "default".into()]);
        assert_eq!(Scope::from_payload(&two.to_payload().unwrap()), two);
        assert_eq!(Scope::Nothing.to_payload(), None);
        assert_eq!(
            Scope::from_payload(&Scope::Everyone.to_payload().unwrap()),
            Scope::Everyone
        );
        // An older server's empty payload, and names too many to fit, wake everyone.
        assert_eq!(Scope::from_payload(""), Scope::Everyone);
        let many = Scope::Clusters((0..2000).map(|i| format!("cluster-{i}")).collect());
        assert_eq!(many.to_payload().as_deref(), Some("*"));
    }

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
        wake.notify_scope(&Scope::Nothing);
        assert!(!woke(&mut a).await);
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
        // Keys travel between servers unchanged.
        let scope = Scope::Clusters(vec![key(2, "default"), "gpu".into()]);
        assert_eq!(Scope::from_payload(&scope.to_payload().unwrap()), scope);
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
