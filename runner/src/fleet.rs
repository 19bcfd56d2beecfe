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
    /// Bytes of its file, once loaded.
    size: u64,
    /// When it was last asked for (a counter).
    used: u64,
}

#[derive(Default)]
struct Loaded {
    entries: HashMap<String, Entry>,
    clock: u64,
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

    /// The component with this digest, fetched and loaded if it is not loaded yet.
    pub async fn get(&self, host: &Host, digest: &str) -> Result<Arc<TaskComponent>, String> {
        let cell = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            loaded.clock += 1;
            let clock = loaded.clock;
            let entry = loaded
                .entries
                .entry(digest.to_string())
                .or_insert_with(|| Entry {
                    cell: Cell::default(),
                    size: 0,
                    used: 0,
                });
            entry.used = clock;
            entry.cell.clone()
        };
        match cell.get_or_try_init(|| self.fetch(host, digest)).await {
            Ok(component) => {
                self.keep(digest, &cell);
                Ok(component.clone())
            }
            Err(why) => {
                // The next attempt tries again.
                let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
                if loaded
                    .entries
                    .get(digest)
                    .is_some_and(|e| Arc::ptr_eq(&e.cell, &cell))
                {
                    loaded.entries.remove(digest);
                }
                Err(why)
            }
        }
    }

    /// How many components are loaded, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let sizes = loaded.entries.values().filter(|e| e.cell.initialized());
        (loaded.entries.len(), sizes.map(|e| e.size).sum())
    }

    /// Records a loaded component's size and unloads the least recently used others while
    /// over budget (attempts running them keep them alive until they end).
    fn keep(&self, digest: &str, cell: &Cell) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(entry), Some(component)) = (loaded.entries.get_mut(digest), cell.get()) {
            entry.size = component.size();
        }
        loop {
            let total: u64 = loaded.entries.values().map(|e| e.size).sum();
            if total <= self.budget {
                break;
            }
            let oldest = loaded
                .entries
                .iter()
                .filter(|(d, e)| d.as_str() != digest && e.cell.initialized())
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => {
                    loaded.entries.remove(&d);
                }
                None => break,
            }
        }
    }

    async fn fetch(&self, host: &Host, digest: &str) -> Result<Arc<TaskComponent>, String> {
        let short = short_digest(digest);
        let bytes = self
            .client
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
