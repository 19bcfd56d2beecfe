//! One attempt as a tokio task: runs the component under the limits, stops when told, and
//! sends its report (or none, when the lease was lost) to the dispatcher.

use std::sync::Arc;
use std::time::Instant;

use tessera_api::{ClaimedTask, Report, TaskReport};
use tessera_host::{
    AttemptSpec, Failure, FailureKind, Host, Limits, LogSink, Outcome, TaskComponent,
};
use tokio::sync::mpsc;

use crate::events::Events;
use crate::leases::{InFlight, Stop};

/// What an attempt's task sends back when it ends.
pub struct Finished {
    /// The task.
    pub task_id: String,
    /// `None` when the lease was lost: the server would refuse any report.
    pub report: Option<TaskReport>,
}

/// Everything attempts share.
pub struct Shared {
    pub host: Host,
    pub components: Vec<Arc<TaskComponent>>,
    pub fleet: Option<crate::fleet::Fleet>,
    pub limits: Limits,
    /// The server attempts read dependencies' outputs and the job cache from.
    pub client: tessera_api::Client,
    pub sink: Arc<dyn LogSink>,
    pub in_flight: InFlight,
    pub done: mpsc::UnboundedSender<Finished>,
    pub events: Arc<dyn Events>,
}

impl Shared {
    /// The component that runs `task`: its pinned deployed component (a fleet runner), else
    /// this runner's component that exports its task type.
    async fn component_for(&self, task: &ClaimedTask) -> Result<Arc<TaskComponent>, Failure> {
        let failure = |kind, message| Failure {
            kind,
            message,
            display: None,
        };
        let component = match (&self.fleet, &task.component) {
            (Some(fleet), Some(digest)) => fleet
                .get(&self.host, digest, (&task.task_id, task.lease))
                .await
                .map_err(|why| failure(FailureKind::Host, why))?,
            (Some(_), None) => {
                return Err(failure(
                    FailureKind::UnknownTask,
                    format!(
                        "{} has no deployed component, and this fleet runner runs only \
                         deployed components",
                        task.identifier
                    ),
                ));
            }
            (None, _) => self
                .components
                .iter()
                .find(|c| c.resolve(&task.identifier).is_some())
                .cloned()
                .ok_or_else(|| {
                    failure(
                        FailureKind::UnknownTask,
                        format!(
                            "this runner has no component implementing {}",
                            task.identifier
                        ),
                    )
                })?,
        };
        if component.resolve(&task.identifier).is_none() {
            return Err(failure(
                FailureKind::UnknownTask,
                format!(
                    "deployed component {} does not export {} (its deployer said it did); \
                     deploy one that does",
                    component.path().display(),
                    task.identifier
                ),
            ));
        }
        Ok(component)
    }
}

/// The report of an attempt that ran to its end.
fn report_of(outcome: Outcome) -> Report {
    match outcome {
        Outcome::Computed(c) => Report::Computed {
            subtasks: c.subtasks,
            display: c.display,
            progress: c.progress,
            output: c.output.map(tessera_api::Blob),
            output_from: c.output_from,
            cache: c.cache,
        },
        Outcome::Failed(f) => Report::Failed {
            permanent: matches!(
                &f.kind,
                FailureKind::Guest { code: Some(code) }
                    if tessera_api::limits::is_permanent_code(code)
            ),
            reason: f.message,
            display: f.display,
        },
    }
}

/// The limits of one attempt: the runner's, lowered to the ceilings the task's tenant sets
/// (carried in the claim) — never raised.
pub fn limits_for(own: &Limits, task: &ClaimedTask) -> Limits {
    let mut limits = own.clone();
    if let Some(mib) = task.memory_mib {
        limits.memory_bytes = limits
            .memory_bytes
            .min(usize::try_from(u64::from(mib) << 20).unwrap_or(usize::MAX));
    }
    if let Some(ms) = task.deadline_ms {
        limits.deadline = limits.deadline.min(std::time::Duration::from_millis(ms));
    }
    limits
}

/// Runs `task` as a tokio task; its lease is held (and extended) from now until the dispatcher
/// releases it.
pub fn spawn(shared: &Arc<Shared>, task: ClaimedTask) {
    let shared = shared.clone();
    let mut stop = shared.in_flight.insert(&task.task_id, task.lease);
    tokio::spawn(async move {
        let started = Instant::now();
        let report = |report: Report| TaskReport {
            task_id: task.task_id.clone(),
            lease: task.lease,
            report,
        };
        let work = async {
            let component = match shared.component_for(&task).await {
                Ok(component) => component,
                Err(failure) => return Outcome::Failed(failure),
            };
            let spec = AttemptSpec {
                job_id: task.job_id.clone(),
                task_id: task.task_id.clone(),
                attempt: task.attempt,
                identifier: task.identifier.clone(),
                input: task.input.to_string(),
            };
            let limits = limits_for(&shared.limits, &task);
            shared
                .host
                .run_with_data(
                    &component,
                    spec,
                    &limits,
                    shared.sink.clone(),
                    Arc::new(crate::data::ServerData::new(
                        shared.client.with_lease(&task.task_id, task.lease),
                        shared.limits.value_bytes as u64,
                        task.cache_seq,
                    )),
                )
                .await
        };
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
        // Dropping `work` drops the attempt's store: real cancellation.
        let finished = tokio::select! {
            outcome = work => {
                shared.events.finished(&task, &outcome, started.elapsed());
                Some(report(report_of(outcome)))
            }
            why = stopped => {
                shared.events.stopped(&task, why);
                match why {
                    Stop::Canceled => Some(report(Report::Canceled)),
                    Stop::Abandon => Some(report(Report::Abandoned)),
                    Stop::LeaseLost => None,
                }
            }
        };
        let _ = shared.done.send(Finished {
            task_id: task.task_id,
            report: finished,
        });
    });
}
