//! Where claimable work may have appeared after a commit ([`Scope`]), the wake-up keys that
//! name a tenant's cluster, and how a scope travels to other servers.

use super::{DEFAULT_TENANT, TenantId};

/// Where claimable work may have appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Nowhere: something changed, but nothing became claimable.
    #[default]
    Nothing,
    /// In these clusters (wake-up keys: [`key`]).
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
pub fn key(tenant: TenantId, cluster: &str) -> String {
    if tenant == DEFAULT_TENANT {
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
pub fn cluster_of(key: &str) -> &str {
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

/// Told of every commit that changes what waiting requests wait for: by the store after its
/// own commits, and — where the database announces them — after other servers' (the server's
/// long polls implement it: the server's `Wake`).
pub trait CommitListener: Send + Sync + 'static {
    /// A commit changed something; work may have become claimable in `scope`.
    fn committed(&self, scope: &Scope);
}

#[cfg(test)]
mod tests {
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
        // Keys travel between servers unchanged.
        let keys = Scope::Clusters(vec![key(2, "default"), "gpu".into()]);
        assert_eq!(Scope::from_payload(&keys.to_payload().unwrap()), keys);
    }

    #[test]
    fn keys_name_a_tenant_s_cluster_and_the_fleet_s() {
        assert_eq!(key(DEFAULT_TENANT, "default"), "default");
        assert_ne!(key(2, "gpu"), "gpu");
        assert_eq!(cluster_of(&key(2, "gpu")), "gpu");
        assert_eq!(cluster_of(&fleet_key("gpu")), "gpu");
        assert_eq!(cluster_of("gpu"), "gpu");
    }
}
