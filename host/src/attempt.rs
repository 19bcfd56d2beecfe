//! Running one task attempt: a fresh store and instance, limits, and an outcome a person can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tessera_api::{CacheWrite, ProgressUpdate, SubtaskSpec, TaskIdentifier};
use wasmtime::{Store, Trap, WasmBacktrace};
use wasmtime_wasi::WasiCtx;

use crate::bindings::v2::TaskContext;
use crate::bindings::{WorldPre, v1, v2};
use crate::component::TaskComponent;
use crate::data::{JobData, NoJobData};
use crate::limits::{Limits, MemoryLimiter, human_bytes, human_duration};
use crate::log::{AttemptLog, LogSink};
use crate::output::{GuestStream, StreamKind};
use crate::sandbox::Host;
use crate::state::{AttemptState, DataState, HostState};

/// One attempt to run: which task, with which input.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    /// The task's job.
    pub job_id: String,
    /// The task.
    pub task_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The task type asked for.
    pub identifier: TaskIdentifier,
    /// The input, JSON text.
    pub input: String,
}

/// What a successful attempt hands back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Computed {
    /// Subtasks to record with the task's success.
    pub subtasks: Vec<SubtaskSpec>,
    /// The display name the task set, if any.
    pub display: Option<String>,
    /// Progress indicators the task advanced.
    pub progress: Vec<ProgressUpdate>,
    /// The output `execute` returned, if any (none when `output_from` is set).
    pub output: Option<Vec<u8>>,
    /// The submitted subtask (its position) whose output becomes this task's, if any.
    pub output_from: Option<u32>,
    /// The job-cache writes (and deletes) to keep with the task's success, the last per key.
    pub cache: Vec<CacheWrite>,
    /// Whether log lines were dropped past the log limit.
    pub logs_truncated: bool,
}

/// Why an attempt failed, in categories a runner can count and a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest returned an error.
    Guest {
        /// The guest's error code, if it gave one.
        code: Option<String>,
    },
    /// The guest panicked.
    Panic,
    /// The guest trapped (unreachable, out-of-bounds access, …).
    Trap,
    /// The guest called `exit` (WASI) instead of returning from `execute`.
    Exit {
        /// The exit status it gave.
        status: i32,
    },
    /// The guest overflowed its call stack.
    StackOverflow,
    /// The guest tried to grow memory past the limit.
    MemoryLimit,
    /// The attempt ran past its wall-clock deadline.
    Deadline,
    /// The input is larger than allowed.
    InputTooLarge,
    /// The output is larger than allowed.
    OutputTooLarge,
    /// No loaded component implements the task type.
    UnknownTask,
    /// The host could not start the attempt (for example the instance pool is full).
    Host,
}

/// A failed attempt: what kind of failure, and a message that says what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The category.
    pub kind: FailureKind,
    /// A message for people.
    pub message: String,
    /// The display name the task set before failing, if any.
    pub display: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The end of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `execute` returned Ok.
    Computed(Computed),
    /// It did not; the reason says why.
    Failed(Failure),
}

impl Outcome {
    /// The failure, if the attempt failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(f) => Some(f),
            Outcome::Computed(_) => None,
        }
    }

    /// What was computed, if the attempt succeeded.
    pub fn computed(&self) -> Option<&Computed> {
        match self {
            Outcome::Computed(c) => Some(c),
            Outcome::Failed(_) => None,
        }
    }
}

fn failed(kind: FailureKind, message: String) -> Outcome {
    Outcome::Failed(Failure {
        kind,
        message,
        display: None,
    })
}

/// A guest's own error, from either world.
struct GuestError {
    message: String,
    code: Option<String>,
}

impl From<v2::exports::tessera::task::tasks::TaskError> for GuestError {
    fn from(e: v2::exports::tessera::task::tasks::TaskError) -> Self {
        GuestError {
            message: e.message,
            code: e.code,
        }
    }
}

impl From<v1::exports::tessera::task::tasks::TaskError> for GuestError {
    fn from(e: v1::exports::tessera::task::tasks::TaskError) -> Self {
        GuestError {
            message: e.message,
            code: e.code,
        }
    }
}

pub(crate) struct Streams {
    stdout: GuestStream,
    stderr: GuestStream,
}

impl Host {
    /// A fresh store state: WASI with no files, no environment, no network; output to the log.
    pub(crate) fn new_state(
        &self,
        limits: &Limits,
        sink: Arc<dyn LogSink>,
        job_id: Arc<str>,
        task_id: Arc<str>,
        attempt: u32,
        data: Arc<dyn JobData>,
    ) -> (AttemptState, Streams) {
        let log = Arc::new(Mutex::new(AttemptLog::new(
            sink,
            job_id.clone(),
            task_id.clone(),
            attempt,
            limits.log_bytes,
        )));
        let stdout = GuestStream::new(StreamKind::Stdout, log.clone());
        let stderr = GuestStream::new(StreamKind::Stderr, log.clone());
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let state = AttemptState {
            wasi: wasi.build(),
            table: Default::default(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            host: HostState {
                log,
                context: TaskContext {
                    job_id: job_id.to_string(),
                    task_id: task_id.to_string(),
                    attempt,
                },
                subtasks: Vec::new(),
                display: None,
                progress: BTreeMap::new(),
                output_from: None,
            },
            data: DataState {
                source: data,
                dependencies: None,
                writes: BTreeMap::new(),
                write_count: 0,
                value_bytes: limits.value_bytes,
            },
            budget: crate::state::SubmitBudget {
                // Subtask handles are u32 indexes.
                subtasks: limits.subtasks.min(u32::MAX as usize),
                input_bytes: limits.input_bytes,
                report_bytes: limits.report_bytes,
            },
        };
        (state, Streams { stdout, stderr })
    }

    /// Applies the memory limiter and CPU-fairness yielding to a store.
    pub(crate) fn configure_store(&self, store: &mut Store<AttemptState>, limits: &Limits) {
        store.limiter(|s| &mut s.limiter);
        let slice = limits.cpu_slice_ticks.max(1);
        store.set_epoch_deadline(slice);
        store.epoch_deadline_async_yield_and_update(slice);
    }

    /// Runs one attempt of a task in a fresh instance of `component`, under `limits`.
    ///
    /// Log lines leave through `sink` as they are written. Dropping the returned future
    /// cancels the attempt at once. The attempt has no job data to read (see
    /// [`Host::run_with_data`]).
    pub async fn run(
        &self,
        component: &TaskComponent,
        spec: AttemptSpec,
        limits: &Limits,
        sink: Arc<dyn LogSink>,
    ) -> Outcome {
        self.run_with_data(component, spec, limits, sink, Arc::new(NoJobData))
            .await
    }

    /// Runs one attempt as [`Host::run`] does, reading dependencies' outputs and the job cache
    /// from `data`.
    pub async fn run_with_data(
        &self,
        component: &TaskComponent,
        spec: AttemptSpec,
        limits: &Limits,
        sink: Arc<dyn LogSink>,
        data: Arc<dyn JobData>,
    ) -> Outcome {
        if spec.input.len() > limits.input_bytes {
            return failed(
                FailureKind::InputTooLarge,
                format!(
                    "input of {} exceeds the limit of {} per task; pass large data by \
                     reference (a URL or object key) instead",
                    human_bytes(spec.input.len()),
                    human_bytes(limits.input_bytes)
                ),
            );
        }
        let Some(own) = component.resolve(&spec.identifier) else {
            let have: Vec<String> = component
                .identifiers()
                .iter()
                .map(|i| i.to_string())
                .collect();
            return failed(
                FailureKind::UnknownTask,
                format!(
                    "{} does not implement {} (it implements {})",
                    component.path().display(),
                    spec.identifier,
                    have.join(", ")
                ),
            );
        };
        let (name, version) = (own.name.clone(), own.version.to_string());
        let (state, streams) = self.new_state(
            limits,
            sink,
            spec.job_id.into(),
            spec.task_id.into(),
            spec.attempt,
            data,
        );
        let mut store = Store::new(&self.engine, state);
        self.configure_store(&mut store, limits);

        let result = tokio::time::timeout(limits.deadline, async {
            match &component.pre {
                WorldPre::V2(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let id = v2::WitIdentifier { name, version };
                    let r = instance
                        .tessera_task_tasks()
                        .call_execute(&mut store, &id, &spec.input)
                        .await?;
                    Ok(r.map_err(GuestError::from))
                }
                WorldPre::V1(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let id = v1::WitIdentifier { name, version };
                    let r = instance
                        .tessera_task_tasks()
                        .call_execute(&mut store, &id, &spec.input)
                        .await?;
                    Ok(r.map(|()| None).map_err(GuestError::from))
                }
            }
        })
        .await;
        streams.stdout.finish();
        streams.stderr.finish();
        let mut state = store.into_data();
        let display = state.host.display.clone();
        let result = match result {
            // A forwarded output replaces the returned one.
            Ok(Ok(Ok(Some(_)))) if state.host.output_from.is_some() => Ok(Ok(Ok(None))),
            Ok(Ok(Ok(Some(output)))) => match check_output(&mut state, output.len()) {
                Ok(()) => Ok(Ok(Ok(Some(output)))),
                Err(failure) => {
                    return Outcome::Failed(Failure { display, ..failure });
                }
            },
            other => other,
        };
        let outcome = match result {
            Err(_elapsed) => failed(
                FailureKind::Deadline,
                format!(
                    "deadline of {} exceeded; the attempt was stopped \
                     (raise the runner's deadline, or the tenant's deadline_seconds quota when \
                     that is lower, if the task needs longer)",
                    human_duration(limits.deadline)
                ),
            ),
            Ok(Ok(Ok(output))) => Outcome::Computed(Computed {
                cache: state.data.cache_writes(),
                progress: state.host.progress_updates(),
                logs_truncated: state.host.log.lock().unwrap().truncated(),
                subtasks: state.host.subtasks,
                display: state.host.display,
                output,
                output_from: state.host.output_from,
            }),
            Ok(Ok(Err(guest))) => failed(
                FailureKind::Guest {
                    code: guest.code.clone(),
                },
                match guest.code {
                    Some(code) => format!("{} [{code}]", guest.message),
                    None => guest.message,
                },
            ),
            Ok(Err(error)) => classify(error, &state, &streams.stderr.tail(), limits),
        };
        match outcome {
            Outcome::Failed(mut f) => {
                f.display = display;
                // A guest's error text is its own; the server keeps this much of it.
                f.message =
                    tessera_api::limits::cut(&f.message, tessera_api::limits::MAX_REASON_BYTES);
                Outcome::Failed(f)
            }
            computed => computed,
        }
    }
}

/// Whether an output of `len` bytes may be handed back: within the value limit and what is
/// left of the attempt's report.
fn check_output(state: &mut AttemptState, len: usize) -> Result<(), Failure> {
    let failure = |message: String| Failure {
        kind: FailureKind::OutputTooLarge,
        message,
        display: None,
    };
    if len > state.data.value_bytes {
        return Err(failure(format!(
            "the output of {} exceeds the limit of {}; keep large results elsewhere (an \
             object store) and return a reference to them (a URL or object key)",
            human_bytes(len),
            human_bytes(state.data.value_bytes)
        )));
    }
    let left = state.budget.report_bytes;
    if !state.budget.spend(len.div_ceil(3).saturating_mul(4)) {
        return Err(failure(format!(
            "the output of {} does not fit in the {} left of what one attempt may hand back \
             after its subtasks and cache writes; write less, or return a reference to the data",
            human_bytes(len),
            human_bytes(left / 4 * 3)
        )));
    }
    Ok(())
}

/// Turns a wasmtime error into a failure a person can act on. Wasmtime's causes are found by
/// type (downcasting wasmtime's and WASI's errors), never by searching wasmtime's error text,
/// so that an upgrade of wasmtime cannot silently change a reason. The one text searched is
/// the guest's own stderr, for the message a Rust panic writes there (`panic_message`).
fn classify(
    error: wasmtime::Error,
    state: &AttemptState,
    stderr_tail: &str,
    limits: &Limits,
) -> Outcome {
    let trap = error.downcast_ref::<Trap>().copied();
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(short_backtrace)
        .unwrap_or_default();
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return failed(
            FailureKind::Exit { status: exit.0 },
            format!(
                "the guest called exit({}) instead of returning from execute; \
                 return an error from execute to fail a task",
                exit.0
            ),
        );
    }
    if let Some(pool) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return failed(
            FailureKind::Host,
            format!(
                "the attempt could not start: {pool}; the host's instance pool is full: lower \
                 the runner's concurrency or raise its pool size"
            ),
        );
    }
    // A panic says why in its own words: report it even when the guest had earlier handled a
    // refused allocation.
    if let Some(panic) = panic_message(stderr_tail) {
        return failed(FailureKind::Panic, format!("guest panicked: {panic}"));
    }
    if let Some(asked) = state.limiter.refused {
        return failed(
            FailureKind::MemoryLimit,
            format!(
                "memory limit of {} exceeded (the guest asked for {} in all); \
                 use less memory or raise the runner's memory limit (or the tenant's \
                 memory_mib quota, when that is lower)",
                human_bytes(limits.memory_bytes),
                human_bytes(asked)
            ),
        );
    }
    match trap {
        Some(Trap::StackOverflow) => failed(
            FailureKind::StackOverflow,
            format!("guest overflowed its call stack (too deep recursion?){backtrace}"),
        ),
        Some(trap) => {
            let text = trap.to_string();
            let text = text.strip_prefix("wasm trap: ").unwrap_or(&text);
            failed(
                FailureKind::Trap,
                format!("guest trapped: {text}{backtrace}"),
            )
        }
        None => failed(
            FailureKind::Host,
            format!("the attempt could not run: {error:#}"),
        ),
    }
}

/// The innermost named frames of a guest backtrace, one per line.
fn short_backtrace(bt: &WasmBacktrace) -> String {
    let frames: Vec<String> = bt
        .frames()
        .iter()
        .take(5)
        .map(|f| match f.func_name() {
            Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
            None => format!("<wasm function {}>", f.func_index()),
        })
        .collect();
    if frames.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nguest backtrace:");
    for f in frames {
        out.push_str("\n  at ");
        out.push_str(&f);
    }
    out
}

/// Finds a Rust panic message (`panicked at FILE:LINE:COL:\nMESSAGE`) in stderr output.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let rest = &stderr[start + "panicked at ".len()..];
    let (location, after) = rest.split_once('\n').unwrap_or((rest, ""));
    let location = location.trim_end_matches(':');
    let message: Vec<&str> = after
        .lines()
        .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace"))
        .collect();
    let message = message.join("\n");
    if message.trim().is_empty() {
        Some(format!("at {location}"))
    } else {
        Some(format!("{} (at {location})", message.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_found_in_stderr() {
        let stderr = "some output\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom: 42\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom: 42 (at src/lib.rs:10:5)")
        );
        assert_eq!(panic_message("nothing to see\n"), None);
    }
}
