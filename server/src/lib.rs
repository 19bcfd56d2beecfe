//! The Tessera server: holds every job and hands work to runners.
//!
//! [`start`] opens the store (SQLite by default), starts the lease reaper and serves the
//! HTTP API under `/v1` (see [`http::openapi`]). The server never compiles wasmtime: it only
//! knows task identifiers and JSON inputs.

pub mod component;
mod console;
pub mod http;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wake;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use http::serve::{Limits as ConnectionLimits, default_max_connections};
pub use store::{
    PostgresStore, SqliteStore, Store, StoreConfig, StoreError, TaskOutput, redact_url,
};
pub use wake::Wake;

pub use tessera_api::now_unix_nano;

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several servers may share.
    Postgres(String),
}

impl std::str::FromStr for Database {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/tessera/tessera.db".into(),
                );
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Database::Postgres(s.to_string()));
        }
        if s.contains("://") {
            return Err(format!(
                "unknown database {s:?}: use sqlite://PATH, postgres://USER@HOST:PORT/DB or a plain file path"
            ));
        }
        Ok(Database::Sqlite(PathBuf::from(s)))
    }
}

/// The default database: `tessera.db` in the user's data directory.
pub fn default_database() -> Database {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    Database::Sqlite(base.join("tessera").join("tessera.db"))
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the state lives.
    pub database: Database,
    /// Leases, retries.
    pub store: StoreConfig,
    /// Bearer token required on every request, if set.
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Largest deployed component, in bytes.
    pub max_component: usize,
    /// Request-body bytes held at once; requests past it wait (see `http::budget`).
    pub max_inflight_body: usize,
    /// Connection limit and timeouts.
    pub connections: http::serve::Limits,
    /// The wasmtime version of the binary the server runs in, for `/v1/health` (the server
    /// itself never compiles wasmtime; the `tessera` binary does).
    pub wasmtime: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8420".parse().expect("a valid address"),
            database: default_database(),
            store: StoreConfig::default(),
            token: None,
            max_body: 32 << 20,
            max_component: 64 << 20,
            max_inflight_body: 16 << 20,
            connections: http::serve::Limits::default(),
            wasmtime: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server would listen beyond loopback with no key to ask for.
    #[error(
        "refusing to listen on {addr} without keys: anyone who can reach it could run code and \
         read every job. Create an operator key first (`tessera keys create --role operator` \
         against this server on 127.0.0.1), or start it with --token, or listen on 127.0.0.1"
    )]
    Open {
        /// The address.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error(
        "could not listen on {addr}: {source} (is another server running there? pick another with --listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A server running in this process.
pub struct RunningServer {
    addr: SocketAddr,
    keys_required: bool,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<()>,
    reaper: JoinHandle<()>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it asked for keys when it started (it has a token, or the store holds keys).
    pub fn keys_required(&self) -> bool {
        self.keys_required
    }

    /// Its base URL, e.g. `http://127.0.0.1:8420`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends long polls, and waits for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.serve.await;
        self.reaper.abort();
    }

    /// Waits until the server stops (it stops on its own only if serving fails).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.serve).await.map_err(std::io::Error::other)
    }
}

/// Opens the store, binds the address and serves the API until shut down.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let store: Arc<dyn Store> = match &config.database {
        Database::Sqlite(path) => {
            let path = path.clone();
            let store_config = config.store.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || SqliteStore::open(&path, store_config))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))??,
            )
        }
        Database::Postgres(url) => {
            Arc::new(PostgresStore::connect(url, config.store.clone()).await?)
        }
    };
    let keys_required = config.token.is_some() || store.keys_created().await? > 0;
    if !config.listen.ip().is_loopback() && !keys_required {
        return Err(ServerError::Open {
            addr: config.listen,
        });
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let wake = Wake::default();
    store.on_commit(Arc::new(wake.clone()));
    let state = http::AppState {
        store: store.clone(),
        wake: wake.clone(),
        shutdown: shutdown_rx.clone(),
        keys: Arc::new(http::auth::Keys::new(
            config.token.as_deref().map(Arc::from),
        )),
        port: addr.port(),
        max_body: config.max_body,
        max_input: config.store.max_input_bytes,
        max_component: config.max_component,
        max_value: config.store.max_value_bytes,
        body_budget: http::budget::BodyBudget::new(config.max_inflight_body),
        wasmtime: config.wasmtime.clone(),
    };
    let app = http::router(state);
    let serve = tokio::spawn(http::serve::serve(
        listener,
        app,
        config.connections.clone(),
        shutdown_rx.clone(),
    ));
    let reaper = tokio::spawn(reap_forever(store, config.store.lease));
    tracing::info!(%addr, "tessera server listening");
    Ok(RunningServer {
        addr,
        keys_required,
        shutdown,
        serve,
        reaper,
    })
}

/// Requeues expired leases every quarter lease (at most every second); the store wakes the
/// claims of their clusters.
async fn reap_forever(store: Arc<dyn Store>, lease: Duration) {
    let every = (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.reap(now_unix_nano()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "requeued tasks whose lease expired"),
            Err(e) => tracing::warn!("lease reaper failed: {e}"),
        }
    }
}
