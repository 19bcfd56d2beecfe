//! The Tessera runner as a library: claims queued tasks from a Tessera server, runs them
//! sandboxed in wasmtime (many at once), keeps their leases, ships their logs and reports how
//! they ended. `tessera runner` is a thin command over [`run`]; an application can embed it.
//!
//! The parts: [`dispatch`] decides (a state machine with no I/O), [`run`] performs its actions
//! and feeds back their results, [`attempt`] runs one attempt, [`leases`] extends leases and
//! stops attempts, [`logs`] ships log lines, [`outbox`] batches and retries reports, and
//! [`Events`] is how the runner says what happens. Stopping is by [`Control`]'s cancellation
//! tokens: stop claiming (running attempts finish within the grace period), or abandon now.

mod attempt;
mod data;
pub mod dispatch;
mod events;
pub mod fleet;
pub mod leases;
mod logs;
pub mod outbox;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tessera_api::limits;
use tessera_api::{
    ClaimRequest, ClaimResponse, Client, ClientError, Outlook, OutlookRequest, ReportResponse,
};
use tessera_host::{Host, HostConfig, Limits};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use dispatch::Exit;
pub use events::{Events, Serving, Silent};
pub use leases::Stop;
pub use outbox::Notice;

use dispatch::{Action, Dispatcher, Input, Settings};

/// How a runner runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Task components (.wasm) whose task types it serves.
    pub components: Vec<PathBuf>,
    /// A fleet runner: serves every task whose job pinned a deployed component, fetching
    /// components from the server by digest (`components` must be empty).
    pub deployed: bool,
    /// Bytes of deployed components a fleet runner keeps loaded (least recently used out).
    pub loaded_bytes: u64,
    /// The machine's name, told to the server for `tessera runners list`.
    pub host_name: Option<String>,
    /// The cluster it serves.
    pub cluster: String,
    /// Attempts at once.
    pub concurrency: u32,
    /// Keep polling instead of exiting once nothing it could serve is left.
    pub forever: bool,
    /// Once told to stop, how long running attempts may take before they are abandoned.
    pub grace: Duration,
    /// Its id (default: a new UUID v7).
    pub runner_id: Option<String>,
    /// Sandbox limits per attempt (`report_bytes` is lowered to fit the server's body limit).
    pub limits: Limits,
    /// How long to wait for the server at start.
    pub patience: Duration,
    /// Most tasks claimed ahead of free slots while the queue is deep (0: none; see
    /// [`default_prefetch`]). Only as many as the slots finish within
    /// [`dispatch::AHEAD_WAIT`] at the attempts' average length are held, so long attempts
    /// are never claimed ahead of a runner that could start them.
    pub prefetch: usize,
}

/// `n` of `what`, for people: `1 running attempt`, `2 running attempts`.
fn attempts(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The default most tasks a runner claims ahead of its free slots: four per slot (Celery's
/// prefetch multiplier), at least 16, at most 1,000. How many it really holds adapts to how
/// long attempts take (see [`dispatch::AHEAD_WAIT`]).
pub fn default_prefetch(concurrency: u32) -> usize {
    (concurrency as usize)
        .saturating_mul(4)
        .clamp(16, limits::MAX_PREFETCH)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            components: Vec::new(),
            deployed: false,
            loaded_bytes: fleet::DEFAULT_LOADED_BYTES,
            host_name: None,
            cluster: "default".into(),
            concurrency: 1,
            forever: false,
            grace: Duration::from_secs(30),
            runner_id: None,
            limits: Limits::default(),
            patience: Duration::from_secs(30),
            prefetch: default_prefetch(1),
        }
    }
}

/// How a runner is told to stop.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Stop claiming; running attempts finish within [`Config::grace`], then are abandoned.
    pub stop: CancellationToken,
    /// Abandon every running attempt now (they requeue without spending a retry) and exit as
    /// soon as their reports are sent, or could not be.
    pub abandon: CancellationToken,
}

/// The body limit assumed of a server too old to state its own.
const DEFAULT_MAX_BODY: usize = 32 << 20;
/// How long a claim waits for work before it is answered empty.
const CLAIM_WAIT_MS: u64 = 20_000;

type Pending<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>;

/// Connects to the server, retrying for up to `patience`: runners are often started beside it.
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

/// Runs a runner until its work is done, it is stopped, or it cannot go on.
pub async fn run(
    config: Config,
    client: Client,
    events: Arc<dyn Events>,
    control: Control,
) -> anyhow::Result<Exit> {
    if config.concurrency == 0 || config.concurrency > limits::MAX_CONCURRENCY {
        anyhow::bail!(
            "concurrency must be between 1 and {}, got {}",
            limits::MAX_CONCURRENCY,
            config.concurrency
        );
    }
    tessera_host::check_map_count(config.concurrency)?;
    if config.deployed != config.components.is_empty() {
        anyhow::bail!(
            "a runner serves either component files or (--deployed) the components deployed to \
             the server: give one"
        );
    }
    let host = Host::new(HostConfig {
        max_instances: config.concurrency + 2,
        ..HostConfig::default()
    })
    .context("could not start the WebAssembly sandbox")?;
    let components = host.load_all(&config.components, &config.limits).await?;
    let identifiers: Vec<_> = components
        .iter()
        .flat_map(|c| c.identifiers().iter().cloned())
        .collect();
    // Which file serves each identifier, so that spans name the code that ran.
    let digests: Vec<String> = components
        .iter()
        .flat_map(|c| {
            let digest = format!("{}{}", tessera_api::component::DIGEST_PREFIX, c.digest());
            std::iter::repeat_n(digest, c.identifiers().len())
        })
        .collect();
    let health = wait_for_server(&client, config.patience).await?;
    let max_body = match usize::try_from(health.max_body_bytes) {
        Ok(0) | Err(_) => DEFAULT_MAX_BODY,
        Ok(n) => n,
    };
    let limits = Limits {
        // Subtasks, cache writes and the output must leave room in a report for everything
        // else it carries.
        report_bytes: config.limits.report_bytes.min(max_body / 4 * 3),
        // What the server keeps (0: a server from before outputs, which keeps none).
        value_bytes: config
            .limits
            .value_bytes
            .min(usize::try_from(health.max_value_bytes).unwrap_or(usize::MAX)),
        // What the server keeps of a subtask's input (0: a server that does not say).
        input_bytes: match usize::try_from(health.max_input_bytes) {
            Ok(0) | Err(_) => config.limits.input_bytes,
            Ok(n) => config.limits.input_bytes.min(n),
        },
        ..config.limits.clone()
    };
    let runner_id = config
        .runner_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // Whose tasks its key claims, as the server sees the key (none said without keys).
    let tenant = match client.whoami().await {
        Ok(me) if me.keys_required => Some(match me.tenant {
            Some(tenant) => format!("tenant {tenant}"),
            None if config.deployed => "every tenant".to_string(),
            None => "tenant default".to_string(),
        }),
        _ => None,
    };
    events.serving(&Serving {
        runner_id: runner_id.clone(),
        deployed: config.deployed,
        identifiers: identifiers.clone(),
        cluster: config.cluster.clone(),
        server: client.base().to_string(),
        concurrency: config.concurrency,
        tenant,
    });

    let (shipper, shipping) = logs::start(client.clone(), runner_id.clone(), max_body);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let in_flight = leases::InFlight::default();
    // Until a claim tells the server's lease, assume a short one so extensions start early.
    let lease = Arc::new(Mutex::new(Duration::from_secs(1)));
    let extender = tokio::spawn(leases::extend_forever(
        client.clone(),
        runner_id.clone(),
        in_flight.clone(),
        lease.clone(),
    ));
    let fleet = config
        .deployed
        .then(|| fleet::Fleet::new(client.clone(), limits.clone(), config.loaded_bytes));
    let shared = Arc::new(attempt::Shared {
        host,
        components,
        fleet,
        client: client.clone(),
        limits,
        sink: Arc::new(shipper),
        in_flight: in_flight.clone(),
        done: done_tx,
        events: events.clone(),
    });
    let outlook_identifiers = identifiers.clone();
    let dispatcher = Dispatcher::new(Settings {
        claim: ClaimRequest {
            runner_id,
            cluster: config.cluster.clone(),
            identifiers,
            digests,
            max: 0,
            wait_ms: CLAIM_WAIT_MS,
            return_when_idle: !config.forever,
            deployed: config.deployed,
            host: config.host_name.clone(),
            concurrency: Some(config.concurrency),
            wasmtime: Some(tessera_host::WASMTIME_VERSION.to_string()),
        },
        concurrency: config.concurrency as usize,
        forever: config.forever,
        max_body,
        prefetch: config.prefetch.min(limits::MAX_PREFETCH),
    });
    let driver = Driver {
        client: client.clone(),
        shared: shared.clone(),
        events,
        lease,
        grace: config.grace,
        outlook: OutlookRequest {
            cluster: config.cluster.clone(),
            identifiers: outlook_identifiers,
            deployed: config.deployed,
        },
    };
    let result = driver.drive(dispatcher, done_rx, control).await;
    extender.abort();
    // The shipper ends once the last log sink is gone: the driver's and ours.
    drop(driver);
    drop(shared);
    // Every sink clone is gone once the attempts are: the shipper drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), shipping)
        .await
        .is_err()
    {
        tracing::warn!("gave up waiting for the last log lines to be sent after 10 s");
    }
    result
}

/// Performs the dispatcher's actions and feeds their results back.
struct Driver {
    client: Client,
    shared: Arc<attempt::Shared>,
    events: Arc<dyn Events>,
    lease: Arc<Mutex<Duration>>,
    grace: Duration,
    /// What an outlook asks: this runner's cluster and task types.
    outlook: OutlookRequest,
}

/// Requests in flight and timers.
#[derive(Default)]
struct InFlightRequests {
    claiming: Option<Pending<ClaimResponse>>,
    reporting: Option<Pending<ReportResponse>>,
    outlook: Option<Pending<Outlook>>,
    wake_at: Option<tokio::time::Instant>,
    grace_at: Option<tokio::time::Instant>,
}

impl Driver {
    async fn drive(
        &self,
        mut dispatcher: Dispatcher,
        mut done: mpsc::UnboundedReceiver<attempt::Finished>,
        control: Control,
    ) -> anyhow::Result<Exit> {
        let mut pending = InFlightRequests::default();
        let (mut stop_seen, mut abandon_seen) = (false, false);
        let mut input = Input::Tick;
        loop {
            for action in dispatcher.step(input, Instant::now()) {
                if let Some(end) = self.perform(action, &mut pending) {
                    return end;
                }
            }
            input = tokio::select! {
                Some(f) = done.recv() => Input::Finished { task_id: f.task_id, report: f.report },
                answer = async { pending.claiming.as_mut().expect("guarded").await }, if pending.claiming.is_some() => {
                    pending.claiming = None;
                    Input::Claimed(answer)
                }
                answer = async { pending.reporting.as_mut().expect("guarded").await }, if pending.reporting.is_some() => {
                    pending.reporting = None;
                    Input::Reported(answer)
                }
                answer = async { pending.outlook.as_mut().expect("guarded").await }, if pending.outlook.is_some() => {
                    pending.outlook = None;
                    Input::Outlook(answer)
                }
                _ = sleep_until(pending.wake_at), if pending.wake_at.is_some() => {
                    pending.wake_at = None;
                    Input::Tick
                }
                _ = control.stop.cancelled(), if !stop_seen => {
                    stop_seen = true;
                    self.events.status(&format!(
                        "Stopping: no new claims; letting {} finish within {} (stop again to \
                         abandon them at once)",
                        attempts(dispatcher.running(), "running attempt"),
                        tessera_host::human_duration(self.grace)
                    ));
                    pending.grace_at = Some(tokio::time::Instant::now() + self.grace);
                    Input::Stop
                }
                _ = sleep_until(pending.grace_at), if pending.grace_at.is_some() => {
                    pending.grace_at = None;
                    if dispatcher.running() > 0 {
                        self.events.status(&format!(
                            "Grace period over: abandoning {} (they run again without \
                             spending a retry)",
                            attempts(dispatcher.running(), "attempt")
                        ));
                    }
                    self.shared.in_flight.stop_all(Stop::Abandon);
                    Input::Tick
                }
                _ = control.abandon.cancelled(), if !abandon_seen => {
                    abandon_seen = true;
                    stop_seen = true;
                    pending.grace_at = None;
                    self.events.status("Abandoning every attempt and exiting now");
                    self.shared.in_flight.stop_all(Stop::Abandon);
                    Input::Abandon
                }
            };
        }
    }

    /// Performs one action; `Some` ends the runner.
    fn perform(
        &self,
        action: Action,
        pending: &mut InFlightRequests,
    ) -> Option<anyhow::Result<Exit>> {
        match action {
            Action::Claim { request, after } => {
                let client = self.client.clone();
                pending.claiming = Some(Box::pin(async move {
                    tokio::time::sleep(after).await;
                    client.claim(&request).await
                }));
            }
            Action::CancelClaim => pending.claiming = None,
            Action::Report(request) => {
                let client = self.client.clone();
                pending.reporting = Some(Box::pin(async move { client.report(&request).await }));
            }
            Action::CheckOutlook => {
                let client = self.client.clone();
                let request = self.outlook.clone();
                pending.outlook = Some(Box::pin(async move { client.outlook(&request).await }));
            }
            Action::Start(task) => {
                *self.lease.lock().unwrap() = Duration::from_millis(task.lease_ms.max(100));
                attempt::spawn(&self.shared, task);
            }
            Action::Hold { task_id, lease } => {
                self.shared.in_flight.insert(&task_id, lease);
            }
            Action::Release(task_id) => self.shared.in_flight.remove(&task_id),
            Action::Notice(notice) => self.events.notice(&notice),
            Action::WakeAt(at) => pending.wake_at = Some(tokio::time::Instant::from_std(at)),
            Action::Exit(exit) => {
                match exit {
                    Exit::OutOfWork => self
                        .events
                        .status("No work left that this runner could serve; exiting."),
                    Exit::Stopped => self
                        .events
                        .status("Runner stopped: no attempt left running."),
                }
                return Some(Ok(exit));
            }
            Action::Fail(why) => return Some(Err(anyhow::anyhow!(why))),
        }
        None
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
