//! `tessera server`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tessera_server::{Database, ServerConfig, StoreConfig, default_database};

/// Options of `tessera server`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8420")]
    listen: SocketAddr,
    /// Database: sqlite://PATH (default: tessera.db in the user's data directory) or
    /// postgres://USER@HOST:PORT/DB (several servers may share one).
    #[arg(long)]
    db: Option<String>,
    /// How long a runner's claim lasts unless extended, in seconds.
    #[arg(long, default_value = "30", value_parser = super::positive_seconds)]
    lease_seconds: Duration,
    /// Require this bearer token on every request.
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 32)]
    max_body_mib: usize,
    /// Request bodies held at once, in MiB: requests past it wait their turn before their
    /// bodies are read (a parsed body takes several times its size in memory).
    #[arg(long, default_value_t = 16)]
    max_inflight_mib: usize,
    /// Largest component `tessera deploy` may upload, in MiB (stored in the database).
    #[arg(long, default_value_t = 64)]
    max_component_mib: usize,
    /// Largest task input, in KiB of compact JSON as stored: a root task's past it is refused
    /// at submit, an attempt submitting a larger subtask input fails (runners adopt it).
    #[arg(long, default_value_t = 1024)]
    max_input_kib: usize,
    /// Largest task output or job-cache value kept, in KiB; an attempt that hands back a
    /// larger one fails, and runners refuse larger ones in the sandbox.
    #[arg(long, default_value_t = 1024)]
    max_value_kib: usize,
    /// Most tasks one job may have; an attempt whose subtasks would pass it fails.
    #[arg(long, default_value_t = StoreConfig::default().max_job_tasks)]
    max_job_tasks: u64,
    /// Most connections open at once (default: what the open-file limit allows, less 256).
    /// When full, the connection idle the longest is closed to make room.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Close a connection that has had no request in progress for this long, in seconds.
    #[arg(long, default_value = "120", value_parser = super::positive_seconds)]
    idle_seconds: Duration,
    /// First retry delay in seconds (doubles per retry, ±25 % jitter).
    #[arg(long, default_value = "0.5", value_parser = super::positive_seconds)]
    retry_base_seconds: Duration,
    /// Fail an attempt whose lease expired this many times in a row without a report
    /// ("lost by its runner N times") instead of running it again; 0 never does.
    #[arg(long, default_value_t = StoreConfig::default().max_lost)]
    max_lost: u32,
}

/// Parses `--db`.
pub fn database(db: Option<&str>) -> anyhow::Result<Database> {
    match db {
        None => Ok(default_database()),
        Some(text) => text.parse::<Database>().map_err(anyhow::Error::msg),
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let database = database(args.db.as_deref())?;
    let config = ServerConfig {
        listen: args.listen,
        database: database.clone(),
        store: StoreConfig {
            lease: args.lease_seconds,
            retry_base: args.retry_base_seconds,
            max_lost: args.max_lost,
            max_job_tasks: args.max_job_tasks.max(1),
            max_value_bytes: args.max_value_kib.clamp(1, 64 << 10) << 10,
            max_input_bytes: args.max_input_kib.clamp(1, 4 << 20) << 10,
            ..StoreConfig::default()
        },
        token: args.token.filter(|t| !t.is_empty()),
        max_body: args.max_body_mib.clamp(1, 4096) << 20,
        max_inflight_body: args.max_inflight_mib.clamp(1, 4096) << 20,
        max_component: args.max_component_mib.clamp(1, 1024) << 20,
        connections: tessera_server::ConnectionLimits {
            max_connections: args
                .max_connections
                .unwrap_or_else(tessera_server::default_max_connections)
                .max(1),
            idle: args.idle_seconds,
            ..tessera_server::ConnectionLimits::default()
        },
        wasmtime: Some(tessera_host::WASMTIME_VERSION.to_string()),
    };
    let server = tessera_server::start(config)
        .await
        .context("could not start the server")?;
    println!("Tessera server listening on {}", server.url());
    println!(
        "Version: tessera {} (wasmtime {})",
        env!("CARGO_PKG_VERSION"),
        tessera_host::WASMTIME_VERSION
    );
    match &database {
        Database::Sqlite(path) => println!("Database: sqlite://{}", path.display()),
        Database::Postgres(url) => println!("Database: {}", tessera_server::redact_url(url)),
    }
    println!("Console: {}/", server.url());
    if server.keys_required() {
        println!("Access: every request needs a key (TESSERA_TOKEN)");
    } else {
        println!(
            "Access: no keys yet — anyone on this machine acts as the operator \
             (`tessera keys create --role operator` locks it)"
        );
    }
    shutdown_signal().await;
    eprintln!("Shutting down…");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
