//! A fleet runner's components: fetched from the server by digest on first need, checked
//! against that digest, compiled through the disk cache, and kept loaded up to a budget of
//! bytes (least recently used first out). Attempts that need the same component while it
//! loads wait for that one load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_api::Client;
use tessera_api::component::{DIGEST_PREFIX, short_digest};
use tessera_host::{Host, Limits, TaskComponent, sha256_hex};
use tokio::sync::OnceCell;

/// The default budget of loaded components, in bytes of component files.
pub const DEFAULT_LOADED_BYTES: u64 = 512 << 20;
/// The largest component a fleet runner fetches.
pub const MAX_COMPONENT_BYTES: u64 = 1 << 30;

type Cell = Arc<OnceCell<Arc<TaskComponent>>>;

struct Entry {
    cell: Cell,
    /// Bytes of its file once loaded; 0 while it loads.
    size: u64,
    /// When it was last asked for (a counter).
    used: u64,
}

/// The bookkeeping: which components are loaded or loading, how big, how recently used.
#[derive(Default)]
struct Loaded {
    entries: HashMap<String, Entry>,
    clock: u64,
}

impl Loaded {
    /// The cell of `digest` (a new, empty one if it is not loaded or loading), marked used now.
    fn touch(&mut self, digest: &str) -> Cell {
        self.clock += 1;
        let clock = self.clock;
        let entry = self
            .entries
            .entry(digest.to_string())
            .or_insert_with(|| Entry {
                cell: Cell::default(),
                size: 0,
                used: 0,
            });
        entry.used = clock;
        entry.cell.clone()
    }

    /// Records that `digest` loaded at `size` bytes and unloads the least recently used other
    /// loaded components while the total passes `budget`; returns the digests unloaded.
    fn loaded(&mut self, digest: &str, size: u64, budget: u64) -> Vec<String> {
        if let Some(entry) = self.entries.get_mut(digest) {
            entry.size = size;
        }
        let mut unloaded = Vec::new();
        loop {
            let total: u64 = self.entries.values().map(|e| e.size).sum();
            if total <= budget {
                break;
            }
            let oldest = self
                .entries
                .iter()
                .filter(|(d, e)| d.as_str() != digest && e.size > 0)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => {
                    self.entries.remove(&d);
                    unloaded.push(d);
                }
                None => break,
            }
        }
        unloaded
    }

    /// Forgets `digest` if its cell is still `cell` (its load failed: the next asks again).
    fn failed(&mut self, digest: &str, cell: &Cell) {
        if self
            .entries
            .get(digest)
            .is_some_and(|e| Arc::ptr_eq(&e.cell, cell))
        {
            self.entries.remove(digest);
        }
    }
}

/// The components a fleet runner has loaded.
pub struct Fleet {
    client: Client,
    limits: Limits,
    budget: u64,
    loaded: Mutex<Loaded>,
}

impl Fleet {
    /// Components fetched through `client`, loaded under `limits`, at most `budget` bytes of
    /// them kept (always the one in use).
    pub fn new(client: Client, limits: Limits, budget: u64) -> Self {
        Fleet {
            client,
            limits,
            budget,
            loaded: Mutex::default(),
        }
    }

    /// The component with this digest, fetched (under `lease`, the lease of a task it runs:
    /// task id and token) and loaded if it is not loaded yet.
    pub async fn get(
        &self,
        host: &Host,
        digest: &str,
        lease: (&str, u64),
    ) -> Result<Arc<TaskComponent>, String> {
        let cell = self.lock().touch(digest);
        match cell
            .get_or_try_init(|| self.fetch(host, digest, lease))
            .await
        {
            Ok(component) => {
                let unloaded = self.lock().loaded(digest, component.size(), self.budget);
                for d in unloaded {
                    tracing::debug!(
                        "unloaded component {} (over --loaded-mib)",
                        short_digest(&d)
                    );
                }
                Ok(component.clone())
            }
            Err(why) => {
                self.lock().failed(digest, &cell);
                Err(why)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch(
        &self,
        host: &Host,
        digest: &str,
        (task, lease): (&str, u64),
    ) -> Result<Arc<TaskComponent>, String> {
        let short = short_digest(digest);
        let bytes = self
            .client
            .with_lease(task, lease)
            .component_bytes(digest, MAX_COMPONENT_BYTES)
            .await
            .map_err(|e| format!("could not fetch component {short}: {e}"))?;
        let actual = format!("{DIGEST_PREFIX}{}", sha256_hex(&bytes));
        if actual != digest {
            return Err(format!(
                "component {short} as the server sent it has digest {}: its stored bytes are \
                 damaged; deploy the component again (tessera deploy)",
                short_digest(&actual)
            ));
        }
        host.load_bytes(short, bytes, &self.limits)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_component_is_unloaded_first() {
        let mut l = Loaded::default();
        l.touch("a");
        assert!(l.loaded("a", 40, 100).is_empty());
        l.touch("b");
        assert!(l.loaded("b", 30, 100).is_empty());
        l.touch("a");
        // c loads while another is still loading (size 0): only loaded ones are unloaded.
        l.touch("d");
        l.touch("c");
        assert_eq!(l.loaded("c", 50, 100), ["b"], "b was used least recently");
        assert!(l.entries.contains_key("a") && l.entries.contains_key("d"));
        // One component larger than the budget stays: it is the one in use.
        l.touch("huge");
        let mut gone = l.loaded("huge", 500, 100);
        gone.sort();
        assert_eq!(gone, ["a", "c"]);
        assert!(l.entries.contains_key("huge"));
    }

    #[test]
    fn a_failed_load_is_forgotten_so_the_next_attempt_fetches_again() {
        let mut l = Loaded::default();
        let first = l.touch("a");
        // Same cell while it loads: attempts wait for one fetch.
        assert!(Arc::ptr_eq(&first, &l.touch("a")));
        l.failed("a", &first);
        let second = l.touch("a");
        assert!(!Arc::ptr_eq(&first, &second));
        // A late failure of the old cell does not forget the new one.
        l.failed("a", &first);
        assert!(Arc::ptr_eq(&second, &l.touch("a")));
    }
}
