//! `tessera`: run the server and runners, submit jobs, and look at what they did.

mod cmd;
mod format;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `tessera --version`: this build, and the wasmtime its sandbox embeds (SECURITY.md says
/// how to check it against the advisories).
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (wasmtime {})",
            env!("CARGO_PKG_VERSION"),
            tessera_host::WASMTIME_VERSION
        )
    })
}

/// Tessera: workflows of sandboxed WebAssembly tasks.
#[derive(Debug, Parser)]
#[command(name = "tessera", version = version_text(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: job store, runner protocol, HTTP API and console.
    Server(cmd::server::Args),
    /// Run task components: claim queued tasks and run them sandboxed.
    Runner(cmd::runner::Args),
    /// Submit a job whose root task is TASK.
    Submit(cmd::submit::Args),
    /// List, show, cancel or retry jobs.
    Jobs(cmd::jobs::Args),
    /// Show a job's log lines.
    Logs(cmd::logs::Args),
    /// Show a job's cache: its keys, or one value.
    Cache(cmd::data::CacheArgs),
    /// List the runners seen lately and what they serve.
    Runners(cmd::runners::Args),
    /// Deploy a task component to the server, for fleet runners (`runner --deployed`).
    Deploy(cmd::components::DeployArgs),
    /// List, show or undeploy deployed components.
    Components(cmd::components::Args),
    /// Create, list or show tenants (an operator's key).
    Tenants(cmd::tenants::TenantArgs),
    /// Create, list or revoke API keys.
    Keys(cmd::tenants::KeyArgs),
    /// Show who your key acts as: its role and tenant.
    Whoami(cmd::tenants::WhoamiArgs),
    /// Show a job's task spans as a waterfall.
    Spans(cmd::spans::Args),
    /// Run N copies of a command, prefixing their output.
    Parallel(cmd::parallel::Args),
    /// Run the seed scenario end to end on an embedded server.
    Demo(cmd::demo::Args),
    /// Create a task crate from a template, ready to test, build and run.
    New(cmd::new::Args),
    /// Build a task component from a Python file of task types (componentize-py).
    BuildPython(cmd::python::Args),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,tessera=info,tessera_server=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only for a person watching: never in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
}

/// `tessera logs JOB | head` ends quietly, like any Unix filter: a write to a closed stdout
/// exits 0 instead of panicking. (Restoring SIGPIPE's default disposition would do that too,
/// but would also kill the process when a server closes a socket during an upload: `writev`
/// on a socket raises SIGPIPE, and `tessera submit` with an oversized input died silently.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// An error and its causes on one line, each cause once: many errors already quote their
/// source in their own message.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    quiet_on_closed_stdout();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => cmd::server::run(args).await,
            Command::Runner(args) => cmd::runner::run(args).await,
            Command::Submit(args) => cmd::submit::run(args).await,
            Command::Jobs(args) => cmd::jobs::run(args).await,
            Command::Logs(args) => cmd::logs::run(args).await,
            Command::Cache(args) => cmd::data::run(args).await,
            Command::Runners(args) => cmd::runners::run(args).await,
            Command::Deploy(args) => cmd::components::deploy(args).await,
            Command::BuildPython(args) => cmd::python::run(args).await,
            Command::Components(args) => cmd::components::run(args).await,
            Command::Tenants(args) => cmd::tenants::tenants(args).await,
            Command::Keys(args) => cmd::tenants::keys(args).await,
            Command::Whoami(args) => cmd::tenants::whoami(args).await,
            Command::New(args) => cmd::new::run(args),
            Command::Spans(args) => cmd::spans::run(args).await,
            Command::Parallel(args) => cmd::parallel::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
        }
    });
    // Runner attempts may still hold the runtime; do not wait for them on exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            // Messages can quote what a server or a guest sent: escaped, line by line.
            let text = error_text(&e);
            let lines: Vec<String> = text.lines().map(format::safe).collect();
            eprintln!("error: {}", lines.join("\n"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("could not read x.wasm: No such file");
        assert_eq!(super::error_text(&e), "could not read x.wasm: No such file");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_text(&e), "outer: inner");
    }
}
