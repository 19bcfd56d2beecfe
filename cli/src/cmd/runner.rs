//! `tessera runner`: a thin command over the `tessera-runner` library. It turns flags into a
//! [`tessera_runner::Config`], signals into [`tessera_runner::Control`] tokens, and the runner's
//! events into lines on the terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tessera_api::ClaimedTask;
use tessera_host::{Limits, Outcome};
use tessera_runner::{Config, Control, Events, Notice, Serving, Stop};

use crate::cmd::ServerRef;
use crate::format;

/// Options of `tessera runner`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task components (.wasm) whose task types this runner serves.
    #[arg(required_unless_present = "deployed", conflicts_with = "deployed")]
    components: Vec<PathBuf>,
    /// Serve the components deployed to the server (`tessera deploy`) instead of files: a
    /// fleet runner runs any task whose job pinned a deployed component, fetching each
    /// component by digest on first need.
    #[arg(long)]
    deployed: bool,
    /// Deployed components kept loaded, in MiB of component files (least recently used
    /// are unloaded first).
    #[arg(long, default_value_t = 512, requires = "deployed")]
    loaded_mib: u64,
    /// The cluster to serve.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// How many attempts to run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Keep polling for work instead of exiting once nothing this runner could serve is left.
    #[arg(long)]
    forever: bool,
    /// On SIGINT/SIGTERM, let running attempts finish for this long, then abandon them.
    #[arg(long, default_value = "30", value_parser = crate::cmd::seconds)]
    grace_seconds: Duration,
    /// This runner's id (default: a new UUID).
    #[arg(long)]
    runner_id: Option<String>,
    /// Linear memory per attempt, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// Wall-clock deadline per attempt, in seconds.
    #[arg(long, default_value = "1800", value_parser = crate::cmd::positive_seconds)]
    deadline_seconds: Duration,
    /// Log text per attempt before truncation, in KiB.
    #[arg(long, default_value_t = 1024)]
    log_kib: usize,
    /// Subtasks one attempt may submit.
    #[arg(long, default_value_t = 100_000)]
    max_subtasks: usize,
    /// Largest task input, in KiB.
    #[arg(long, default_value_t = 1024)]
    max_input_kib: usize,
    /// Most tasks to claim ahead of free slots while every claim comes back full (default:
    /// 4 per slot, at least 16; at most 1,000; 0 turns it off). Only as many as the slots
    /// finish within 20 ms at the attempts' average length are held, so short tasks skip a
    /// round trip each and long tasks are never claimed ahead of another runner that could
    /// start them.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Print nothing but warnings and errors: no banner, no line per attempt.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    server: ServerRef,
}

/// `value` units of `unit` bytes, or an error naming the flag.
fn bytes(flag: &str, value: usize, unit: usize) -> anyhow::Result<usize> {
    value
        .max(1)
        .checked_mul(unit)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| anyhow::anyhow!("{flag} {value} is too large for this machine"))
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config {
            components: self.components.clone(),
            deployed: self.deployed,
            loaded_bytes: self.loaded_mib.max(1).saturating_mul(1 << 20),
            host_name: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h: String| tessera_api::limits::cut(&h, 200)),
            cluster: self.cluster.clone(),
            concurrency: self.concurrency,
            forever: self.forever,
            grace: self.grace_seconds,
            runner_id: self.runner_id.clone(),
            limits: Limits {
                memory_bytes: bytes("--memory-mib", self.memory_mib, 1 << 20)?,
                deadline: self.deadline_seconds,
                log_bytes: bytes("--log-kib", self.log_kib, 1 << 10)?,
                subtasks: self.max_subtasks,
                input_bytes: bytes("--max-input-kib", self.max_input_kib, 1 << 10)?,
                ..Limits::default()
            },
            prefetch: self
                .prefetch
                .unwrap_or_else(|| tessera_runner::default_prefetch(self.concurrency)),
            patience: if self.forever {
                Duration::MAX
            } else {
                Duration::from_secs(30)
            },
        })
    }
}

/// Prints what the runner does: a line per attempt on stdout, the rest on stderr.
struct Printer {
    quiet: bool,
}

impl Events for Printer {
    fn serving(&self, s: &Serving) {
        if self.quiet {
            return;
        }
        let names: Vec<String> = s.identifiers.iter().map(|i| i.to_string()).collect();
        let serves = if s.deployed {
            "the deployed components".to_string()
        } else {
            names.join(", ")
        };
        let whose = s
            .tenant
            .as_deref()
            .map(|t| format!(" for {}", format::safe_max(t, 200)))
            .unwrap_or_default();
        eprintln!(
            "Runner {} serving {}{whose} on cluster {} at {} (concurrency {})",
            format::safe_max(&s.runner_id, 200),
            serves,
            s.cluster,
            s.server,
            s.concurrency
        );
    }

    fn finished(&self, task: &ClaimedTask, outcome: &Outcome, took: Duration) {
        if self.quiet {
            return;
        }
        let took = format::duration_ns(took.as_nanos().min(u128::from(u64::MAX)) as u64);
        // The attempt's own display name, else the one its parent gave it, else its type.
        let name = |display: &Option<String>| {
            let shown = display
                .as_deref()
                .or(task.display.as_deref())
                .unwrap_or(&task.identifier.name);
            format::safe_max(shown, 200)
        };
        match outcome {
            Outcome::Computed(c) => {
                let subs = if c.subtasks.is_empty() {
                    String::new()
                } else {
                    format!(", {} subtasks", c.subtasks.len())
                };
                println!("✓ {} computed in {took}{subs}", name(&c.display));
            }
            Outcome::Failed(f) => println!(
                "✗ {} failed after {took} (attempt {}): {}",
                name(&f.display),
                task.attempt,
                format::safe(&f.message)
            ),
        }
    }

    fn stopped(&self, task: &ClaimedTask, why: Stop) {
        if !self.quiet {
            println!(
                "■ {} {}: stopped: {why}",
                task.identifier.name,
                format::short(&task.task_id)
            );
        }
    }

    fn notice(&self, notice: &Notice) {
        match notice {
            Notice::Refused { task_id, why } => {
                tracing::warn!(task = %task_id, "report refused: {}", format::safe(why))
            }
            Notice::TooLarge { task_id, bytes } => tracing::warn!(
                task = %task_id,
                "the attempt's result ({}) is larger than the server accepts; reporting it failed",
                tessera_api::limits::human_bytes(*bytes)
            ),
            Notice::Converted { task_id, why } => tracing::warn!(
                task = %task_id,
                "the server refused the attempt's result ({}); reporting it failed",
                format::safe(why)
            ),
            Notice::GaveUp { task_ids, why } => tracing::error!(
                "gave up reporting {} attempts ({}); those tasks run again once their leases expire",
                task_ids.len(),
                format::safe(why)
            ),
            Notice::Unreachable { what, why } => {
                tracing::warn!("{what} failed: {}; trying again", format::safe(why))
            }
        }
    }

    fn status(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Runs the runner until its work is done (or forever): the first SIGINT/SIGTERM stops
/// claiming, a second abandons every attempt.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = args.config()?;
    let control = Control::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = {
        let control = control.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if control.stop.is_cancelled() {
                    control.abandon.cancel();
                } else {
                    control.stop.cancel();
                }
            }
        })
    };
    let runner = tessera_runner::run(
        config,
        args.server.client(),
        Arc::new(Printer { quiet: args.quiet }),
        control.clone(),
    );
    // After a second signal, give the abandon reports a moment, then go regardless.
    let deadline = async {
        control.abandon.cancelled().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let result = tokio::select! {
        result = runner => result.map(|_| ExitCode::SUCCESS),
        _ = deadline => {
            eprintln!("Runner stopped before every report was sent.");
            Ok(ExitCode::from(130))
        }
    };
    signals.abort();
    result
}
