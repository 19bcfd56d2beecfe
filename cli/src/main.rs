//! `tessera`: run the server and runners, submit jobs, and look at what they did.

mod cmd;
mod format;
mod runner;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tessera: workflows of sandboxed WebAssembly tasks.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: job store, runner protocol, HTTP API and console.
    Server(cmd::server::Args),
    /// Run task components: claim queued tasks and run them sandboxed.
    Runner(runner::Args),
    /// Submit a job whose root task is TASK.
    Submit(cmd::submit::Args),
    /// List, show, cancel or retry jobs.
    Jobs(cmd::jobs::Args),
    /// Show a job's log lines.
    Logs(cmd::logs::Args),
    /// Show a job's task spans as a waterfall.
    Spans(cmd::spans::Args),
    /// Run N copies of a command, prefixing their output.
    Parallel(cmd::parallel::Args),
    /// Run the seed scenario end to end on an embedded server.
    Demo(cmd::demo::Args),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,tessera=info,tessera_server=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    if matches!(
        cli.command,
        Command::Jobs(_) | Command::Logs(_) | Command::Spans(_) | Command::Submit(_)
    ) {
        // `tessera logs JOB | head` should end quietly, like any Unix filter.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
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
            Command::Runner(args) => runner::run(args).await,
            Command::Submit(args) => cmd::submit::run(args).await,
            Command::Jobs(args) => cmd::jobs::run(args).await,
            Command::Logs(args) => cmd::logs::run(args).await,
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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
