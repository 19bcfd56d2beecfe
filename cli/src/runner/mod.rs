//! `tessera runner`: claims queued tasks and runs them sandboxed, many at once.
//!
//! One dispatcher loop owns the protocol: it long-polls claims while slots are free, sends
//! finished attempts' reports in batches (with the next claim in the same round trip when no
//! claim is in flight), and decides when a run-all runner is done. Attempts run as tokio
//! tasks; leases are extended beside them; logs leave through a batching shipper.

mod leases;
mod logs;
mod outbox;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tessera_api::{
    ClaimRequest, ClaimedTask, Client, ClientError, OutlookRequest, Report, ReportRequest,
    ReportResponse, TaskIdentifier, TaskReport,
};
use tessera_host::{AttemptSpec, Host, HostConfig, Limits, LogSink, Outcome, TaskComponent};
use tokio::sync::mpsc;

use crate::cmd::ServerRef;
use crate::format;
use leases::{InFlight, Stop};
use outbox::{Notice, Outbox};

/// Options of `tessera runner`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task components (.wasm) whose task types this runner serves.
    #[arg(required = true)]
    components: Vec<PathBuf>,
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
    /// Print nothing per attempt.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    server: ServerRef,
}

impl Args {
    /// The sandbox limits, for a server that accepts bodies of up to `max_body` bytes.
    fn limits(&self, max_body: usize) -> anyhow::Result<Limits> {
        Ok(Limits {
            // Subtasks must leave room in a report for everything else it carries.
            report_bytes: max_body / 4 * 3,
            memory_bytes: self.memory_mib.max(1) << 20,
            deadline: self.deadline_seconds,
            log_bytes: self.log_kib.max(1) << 10,
            subtasks: self.max_subtasks,
            input_bytes: self.max_input_kib.max(1) << 10,
            ..Limits::default()
        })
    }
}

/// What an attempt's task sends back to the dispatcher when it ends.
struct Finished {
    task_id: String,
    /// None when the lease was lost: the server would refuse any report.
    report: Option<TaskReport>,
}

type Pending<T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>;

/// Everything an attempt needs, shared.
struct Shared {
    host: Host,
    components: Vec<Arc<TaskComponent>>,
    limits: Limits,
    sink: Arc<dyn LogSink>,
    in_flight: InFlight,
    done: mpsc::UnboundedSender<Finished>,
    quiet: bool,
}

impl Shared {
    fn component_for(&self, id: &TaskIdentifier) -> Option<&Arc<TaskComponent>> {
        self.components.iter().find(|c| c.resolve(id).is_some())
    }
}

fn spawn_attempt(shared: &Arc<Shared>, task: ClaimedTask) {
    let shared = shared.clone();
    let mut stop = shared.in_flight.insert(&task.task_id, task.lease);
    tokio::spawn(async move {
        let started = Instant::now();
        let report = |report: Report| TaskReport {
            task_id: task.task_id.clone(),
            lease: task.lease,
            report,
        };
        let finished = match shared.component_for(&task.identifier) {
            None => Some(report(Report::Failed {
                reason: format!(
                    "this runner has no component implementing {}",
                    task.identifier
                ),
                display: None,
            })),
            Some(component) => {
                let spec = AttemptSpec {
                    job_id: task.job_id.clone(),
                    task_id: task.task_id.clone(),
                    attempt: task.attempt,
                    identifier: task.identifier.clone(),
                    input: task.input.to_string(),
                };
                let run = shared
                    .host
                    .run(component, spec, &shared.limits, shared.sink.clone());
                let stopped = async {
                    loop {
                        if let Some(why) = *stop.borrow_and_update() {
                            return why;
                        }
                        if stop.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::select! {
                    outcome = run => {
                        if !shared.quiet {
                            print_outcome(&task, &outcome, started.elapsed());
                        }
                        Some(report(match outcome {
                            Outcome::Computed(c) => Report::Computed {
                                subtasks: c.subtasks,
                                display: c.display,
                                progress: c.progress,
                            },
                            Outcome::Failed(f) => Report::Failed { reason: f.message, display: f.display },
                        }))
                    }
                    why = stopped => {
                        if !shared.quiet {
                            println!("■ {} {}: stopped ({why:?})", task.identifier.name, format::short(&task.task_id));
                        }
                        match why {
                            Stop::Canceled => Some(report(Report::Canceled)),
                            Stop::Abandon => Some(report(Report::Abandoned)),
                            Stop::LeaseLost => None,
                        }
                    }
                }
            }
        };
        // The lease stays held (and extended) until the dispatcher has delivered the report.
        let _ = shared.done.send(Finished {
            task_id: task.task_id,
            report: finished,
        });
    });
}

fn print_outcome(task: &ClaimedTask, outcome: &Outcome, took: Duration) {
    let took = format::duration_ns(took.as_nanos() as u64);
    match outcome {
        Outcome::Computed(c) => {
            let name = c
                .display
                .clone()
                .unwrap_or_else(|| task.identifier.name.clone());
            let subs = if c.subtasks.is_empty() {
                String::new()
            } else {
                format!(", {} subtasks", c.subtasks.len())
            };
            println!(
                "✓ {} computed in {took}{subs}",
                format::safe_max(&name, 200)
            );
        }
        Outcome::Failed(f) => {
            let name = f
                .display
                .clone()
                .unwrap_or_else(|| task.identifier.name.clone());
            println!(
                "✗ {} failed after {took} (attempt {}): {}",
                format::safe_max(&name, 200),
                task.attempt,
                format::safe(&f.message)
            );
        }
    }
}

/// Refuses a concurrency whose instances would not fit under Linux's `vm.max_map_count`.
///
/// Measured (bench/README.md): the pool costs 2 mappings per slot up front and a live instance
/// about 4 more; keep a margin for everything else the process maps.
fn check_map_count(concurrency: u32) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return Ok(());
    };
    let Ok(max) = text.trim().parse::<u64>() else {
        return Ok(());
    };
    let needed = 6 * u64::from(concurrency) + 2_000;
    if needed > max {
        anyhow::bail!(
            "--concurrency {concurrency} needs about {needed} memory mappings but vm.max_map_count is {max}: \
             lower --concurrency to at most {}, or raise the limit (sysctl -w vm.max_map_count={})",
            (max.saturating_sub(2_000)) / 6,
            needed.next_power_of_two()
        );
    }
    Ok(())
}

/// Connects to the server, retrying for a while: runners are often started beside it.
async fn wait_for_server(
    client: &Client,
    patience: Duration,
) -> anyhow::Result<tessera_api::Health> {
    let started = Instant::now();
    loop {
        match client.health().await {
            Ok(health) => return Ok(health),
            Err(e @ ClientError::Api { .. }) => return Err(e.into()),
            Err(e) if started.elapsed() >= patience => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs the runner until its work is done (or forever), handling signals.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.concurrency == 0 || args.concurrency > 100_000 {
        anyhow::bail!(
            "--concurrency must be between 1 and 100000, got {}",
            args.concurrency
        );
    }
    check_map_count(args.concurrency)?;
    let host = Host::new(HostConfig {
        max_instances: args.concurrency + 2,
        ..HostConfig::default()
    })
    .context("could not start the WebAssembly sandbox")?;
    let mut components = Vec::new();
    let mut identifiers: Vec<TaskIdentifier> = Vec::new();
    for path in &args.components {
        let c = host.load(path).await?;
        for id in c.identifiers() {
            if identifiers
                .iter()
                .any(|i| i.name == id.name && i.version.major == id.version.major)
            {
                anyhow::bail!(
                    "two components implement {}: give each task type to one component",
                    id
                );
            }
            identifiers.push(id.clone());
        }
        components.push(c);
    }
    let client = args.server.client();
    let health = wait_for_server(
        &client,
        if args.forever {
            Duration::MAX
        } else {
            Duration::from_secs(30)
        },
    )
    .await?;
    // A server too old to say assumes its default.
    let max_body = match usize::try_from(health.max_body_bytes) {
        Ok(0) | Err(_) => 32 << 20,
        Ok(n) => n,
    };
    let limits = args.limits(max_body)?;
    let runner_id = args
        .runner_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let names: Vec<String> = identifiers.iter().map(|i| i.to_string()).collect();
    eprintln!(
        "Runner {runner_id} serving {} on cluster {} at {} (concurrency {})",
        names.join(", "),
        args.cluster,
        client.base(),
        args.concurrency
    );

    let (shipper, shipping) = logs::start(client.clone(), runner_id.clone(), max_body);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let in_flight = InFlight::default();
    // Until a claim tells the server's lease, assume a short one so extensions start early.
    let lease = Arc::new(Mutex::new(Duration::from_secs(1)));
    let extender = tokio::spawn(leases::extend_forever(
        client.clone(),
        runner_id.clone(),
        in_flight.clone(),
        lease.clone(),
    ));
    let shared = Arc::new(Shared {
        host,
        components,
        limits,
        sink: Arc::new(shipper),
        in_flight: in_flight.clone(),
        done: done_tx,
        quiet: args.quiet,
    });
    let dispatcher = Dispatcher {
        client: client.clone(),
        claim: ClaimRequest {
            runner_id: runner_id.clone(),
            cluster: args.cluster.clone(),
            identifiers: identifiers.clone(),
            max: 0,
            wait_ms: 20_000,
            return_when_idle: !args.forever,
        },
        concurrency: args.concurrency as usize,
        forever: args.forever,
        grace: args.grace_seconds,
        lease,
        max_body,
    };
    let result = dispatcher.run(&shared, done_rx).await;
    extender.abort();
    drop(shared);
    // Every sink clone is gone once the attempts are: the shipper drains and ends.
    let _ = tokio::time::timeout(Duration::from_secs(10), shipping).await;
    result
}

struct Dispatcher {
    client: Client,
    claim: ClaimRequest,
    concurrency: usize,
    forever: bool,
    grace: Duration,
    lease: Arc<Mutex<Duration>>,
    max_body: usize,
}

/// Says what became of reports, where the runner's user reads it.
fn tell(notice: &Notice) {
    match notice {
        Notice::Refused { task_id, why } => {
            tracing::warn!(task = %task_id, "report refused: {why}")
        }
        Notice::TooLarge { task_id, bytes } => tracing::warn!(
            task = %task_id,
            "the attempt's result ({}) is larger than the server accepts; reporting it failed",
            tessera_host::human_bytes(*bytes)
        ),
        Notice::Converted { task_id, why } => tracing::warn!(
            task = %task_id,
            "the server refused the attempt's result ({why}); reporting it failed"
        ),
        Notice::GaveUp { task_ids, why } => tracing::error!(
            "gave up reporting {} attempts ({why}); those tasks run again once their leases expire",
            task_ids.len()
        ),
    }
}

impl Dispatcher {
    fn claim_for(&self, free: usize, wait_ms: u64) -> ClaimRequest {
        ClaimRequest {
            // The server hands out at most this many per claim; more slots fill on the next.
            max: free.min(tessera_api::limits::MAX_CLAIM as usize) as u32,
            wait_ms,
            ..self.claim.clone()
        }
    }

    fn start(&self, shared: &Arc<Shared>, tasks: Vec<ClaimedTask>, running: &mut usize) {
        for task in tasks {
            *self.lease.lock().unwrap() = Duration::from_millis(task.lease_ms.max(100));
            *running += 1;
            spawn_attempt(shared, task);
        }
    }

    async fn run(
        self,
        shared: &Arc<Shared>,
        mut done: mpsc::UnboundedReceiver<Finished>,
    ) -> anyhow::Result<ExitCode> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let mut running = 0usize;
        let mut outbox = Outbox::new(self.max_body);
        let mut claiming: Option<Pending<tessera_api::ClaimResponse>> = None;
        let mut reporting: Option<(Pending<ReportResponse>, outbox::Batch)> = None;
        let mut stopping = false;
        let mut abandon_at: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        loop {
            let free = self.concurrency.saturating_sub(running);
            // Reports leave as soon as there are some and none are in flight, in batches that
            // fit the server's body limit; when no claim is in flight, the next claim rides
            // along (complete-and-claim in one round trip).
            if reporting.is_none()
                && let Some(batch) = outbox.next_batch(Instant::now())
            {
                let ride =
                    (free > 0 && claiming.is_none() && !stopping).then(|| self.claim_for(free, 0));
                let request = ReportRequest {
                    runner_id: self.claim.runner_id.clone(),
                    reports: batch.reports(),
                    claim: ride,
                };
                let client = self.client.clone();
                reporting = Some((
                    Box::pin(async move { client.report(&request).await }),
                    batch,
                ));
            }
            // Otherwise long-poll for work whenever a slot is free; finished attempts are
            // reported beside it.
            if claiming.is_none() && reporting.is_none() && free > 0 && !stopping {
                let request = self.claim_for(free, self.claim.wait_ms);
                let client = self.client.clone();
                let backoff = Duration::from_millis(if failures == 0 {
                    0
                } else {
                    250 << failures.min(5)
                });
                claiming = Some(Box::pin(async move {
                    tokio::time::sleep(backoff).await;
                    client.claim(&request).await
                }));
            }
            if stopping && running == 0 && outbox.is_empty() && reporting.is_none() {
                eprintln!("Runner stopped: no attempt left running.");
                return Ok(ExitCode::SUCCESS);
            }
            let retry_at = outbox
                .retry_at()
                .filter(|_| reporting.is_none())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(f) = done.recv() => {
                    running -= 1;
                    match f.report {
                        Some(report) => {
                            if let Some(notice) = outbox.push(report) {
                                tell(&notice);
                            }
                        }
                        None => shared.in_flight.remove(&f.task_id),
                    }
                }
                answer = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match answer {
                        Ok(c) => {
                            failures = 0;
                            let got = c.tasks.len();
                            self.start(shared, c.tasks, &mut running);
                            if got == 0 && running == 0 && outbox.is_empty() && reporting.is_none()
                                && !self.forever && self.out_of_work().await?
                            {
                                eprintln!("No work left that this runner could serve; exiting.");
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            if let ClientError::Api { status, .. } = &e && (400..500).contains(status) {
                                return Err(anyhow::Error::new(e).context("the server refused this runner's claim"));
                            }
                            if !self.forever && failures > 40 {
                                return Err(anyhow::Error::new(e).context("the server stayed unreachable"));
                            }
                            tracing::warn!("claiming failed: {e}");
                        }
                    }
                }
                answer = async { (&mut reporting.as_mut().expect("guarded").0).await }, if reporting.is_some() => {
                    let (_, batch) = reporting.take().expect("guarded");
                    if let Err(e) = &answer && e.status().is_none_or(|s| s >= 500) {
                        tracing::warn!("reporting failed: {e}; trying again");
                    }
                    let settled = outbox.settle(batch, &answer, Instant::now());
                    for notice in &settled.notices {
                        tell(notice);
                    }
                    for task in &settled.done {
                        shared.in_flight.remove(task);
                    }
                    let claimed = answer.map(|r| r.tasks).unwrap_or_default();
                    if stopping {
                        for t in claimed {
                            shared.in_flight.insert(&t.task_id, t.lease);
                            let _ = outbox.push(TaskReport {
                                task_id: t.task_id,
                                lease: t.lease,
                                report: Report::Abandoned,
                            });
                        }
                    } else {
                        self.start(shared, claimed, &mut running);
                    }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {}
                _ = term.recv() => {
                    self.on_signal(shared, running, &mut stopping, &mut abandon_at, "SIGTERM");
                    claiming = None;
                }
                _ = int.recv() => {
                    self.on_signal(shared, running, &mut stopping, &mut abandon_at, "SIGINT");
                    claiming = None;
                }
                _ = tokio::time::sleep_until(abandon_at.unwrap_or_else(tokio::time::Instant::now)), if abandon_at.is_some() => {
                    abandon_at = None;
                    if running > 0 {
                        eprintln!("Grace period over: abandoning {running} attempts (they requeue without spending a retry)");
                        shared.in_flight.stop_all(Stop::Abandon);
                    }
                }
            }
        }
    }

    fn on_signal(
        &self,
        shared: &Arc<Shared>,
        running: usize,
        stopping: &mut bool,
        abandon_at: &mut Option<tokio::time::Instant>,
        name: &str,
    ) {
        if *stopping {
            eprintln!("{name} again: abandoning every attempt and exiting now");
            shared.in_flight.stop_all(Stop::Abandon);
            // Give the abandon reports a moment on the runtime, then go.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(1500));
                std::process::exit(130);
            });
            return;
        }
        *stopping = true;
        eprintln!(
            "{name}: no new claims; letting {running} running attempts finish within {} (send it again to stop at once)",
            format::duration_ns(self.grace.as_nanos() as u64)
        );
        *abandon_at = Some(tokio::time::Instant::now() + self.grace);
    }

    async fn out_of_work(&self) -> anyhow::Result<bool> {
        let outlook = self
            .client
            .outlook(&OutlookRequest {
                cluster: self.claim.cluster.clone(),
                identifiers: self.claim.identifiers.clone(),
            })
            .await?;
        Ok(!outlook.has_work())
    }
}
