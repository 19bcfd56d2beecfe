//! What a task attempt's store holds, and the host functions the guest calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_api::{Level, ProgressUpdate, SubtaskSpec, TaskIdentifier, Version};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{
    Field, SubmitError, Subtask, SubtaskHandle, TaskContext, WitLevel, tessera::task,
};
use crate::limits::{MemoryLimiter, human_bytes};
use crate::log::AttemptLog;
use tessera_api::limits;

/// The data of one attempt's `Store`: created fresh for every attempt.
pub(crate) struct TaskState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: Arc<Mutex<AttemptLog>>,
    pub(crate) context: TaskContext,
    pub(crate) budget: SubmitBudget,
    pub(crate) subtasks: Vec<SubtaskSpec>,
    pub(crate) display: Option<String>,
    pub(crate) progress: BTreeMap<String, (u64, u64)>,
}

impl TaskState {
    /// Progress indicators in label order, each value at most what the API accepts (2^63 − 1).
    pub(crate) fn progress_updates(&self) -> Vec<ProgressUpdate> {
        let most = i64::MAX as u64;
        self.progress
            .iter()
            .map(|(label, &(done, total))| ProgressUpdate {
                label: label.clone(),
                done: done.min(most),
                total: total.min(most),
            })
            .collect()
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl From<WitLevel> for Level {
    fn from(level: WitLevel) -> Self {
        match level {
            WitLevel::Trace => Level::Trace,
            WitLevel::Debug => Level::Debug,
            WitLevel::Info => Level::Info,
            WitLevel::Warn => Level::Warn,
            WitLevel::Error => Level::Error,
        }
    }
}

/// What one attempt may still submit: subtasks, and bytes of report (so that its result always
/// fits in what the server accepts, and the host holds no more than that for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubmitBudget {
    /// Most subtasks in all.
    pub(crate) subtasks: usize,
    /// Largest input of one subtask, as JSON text.
    pub(crate) input_bytes: usize,
    /// Report bytes left for subtasks.
    pub(crate) report_bytes: usize,
}

/// Roughly what a subtask adds to a report beyond its input, its name and its display name.
const SUBTASK_OVERHEAD: usize = 160;

/// Marks a `depends-on` entry as a subtask handle from an earlier call (see the WIT).
const HANDLE_BIT: u32 = 0x8000_0000;

/// Checks one submission and turns it into wire subtasks, or says why it is refused. The
/// checks are the server's, so that a result the host accepts is never refused there.
fn check_submission(
    subtasks: Vec<Subtask>,
    already: usize,
    budget: &mut SubmitBudget,
) -> Result<Vec<SubtaskSpec>, SubmitError> {
    let too_many = || SubmitError::TooMany(budget.subtasks.min(u32::MAX as usize) as u32);
    if already
        .checked_add(subtasks.len())
        .is_none_or(|n| n > budget.subtasks)
    {
        return Err(too_many());
    }
    let mut out = Vec::with_capacity(subtasks.len());
    let mut bytes = 0usize;
    for (i, s) in subtasks.into_iter().enumerate() {
        // Positions among all the attempt's subtasks: an index within this call, or a handle
        // from an earlier call (top bit set); either must name an earlier subtask.
        let mut deps = Vec::with_capacity(s.depends_on.len());
        for &d in &s.depends_on {
            let position = if d & HANDLE_BIT != 0 {
                Some((d & !HANDLE_BIT) as usize).filter(|&p| p < already)
            } else {
                Some(d as usize).filter(|&p| p < i).map(|p| p + already)
            };
            match position {
                Some(p) => deps.push(p as u32),
                None => return Err(SubmitError::BadDependency(d)),
            }
        }
        let depends_on = deps.clone();
        deps.sort_unstable();
        if let Some(w) = deps.windows(2).find(|w| w[0] == w[1]) {
            return Err(SubmitError::Invalid(format!(
                "subtask {i} lists dependency {} twice",
                w[0]
            )));
        }
        let version: Version = s.identifier.version.parse().map_err(|e| {
            SubmitError::Invalid(format!(
                "subtask {i} ({}): {e}",
                limits::elide(&s.identifier.name, 64)
            ))
        })?;
        let identifier = TaskIdentifier::new(s.identifier.name, version)
            .map_err(|e| SubmitError::Invalid(format!("subtask {i}: {e}")))?;
        if let Some(c) = &s.cluster {
            limits::check_name("cluster", c)
                .map_err(|e| SubmitError::Invalid(format!("subtask {i} ({identifier}): {e}")))?;
        }
        if s.input.len() > budget.input_bytes {
            return Err(SubmitError::Invalid(format!(
                "subtask {i} ({identifier}): its input of {} exceeds the limit of {} per task; \
                 pass large data by reference (a URL or object key) instead",
                human_bytes(s.input.len()),
                human_bytes(budget.input_bytes)
            )));
        }
        let input: serde_json::Value = serde_json::from_str(&s.input).map_err(|e| {
            SubmitError::Invalid(format!(
                "subtask {i} ({identifier}): input is not valid JSON: {e}"
            ))
        })?;
        limits::check_input_depth(&input)
            .map_err(|e| SubmitError::Invalid(format!("subtask {i} ({identifier}): {e}")))?;
        let display = s
            .display
            .map(|d| limits::cut(&d, limits::MAX_DISPLAY_BYTES));
        bytes = bytes
            .saturating_add(s.input.len())
            .saturating_add(identifier.name.len())
            .saturating_add(display.as_ref().map_or(0, String::len))
            .saturating_add(depends_on.len().saturating_mul(11))
            .saturating_add(SUBTASK_OVERHEAD);
        out.push(SubtaskSpec {
            identifier,
            input,
            display,
            depends_on,
            max_retries: s.max_retries,
            cluster: s.cluster,
        });
    }
    if bytes > budget.report_bytes {
        return Err(SubmitError::Invalid(format!(
            "these subtasks need about {} of report but only {} are left of what one attempt may \
             submit; submit fewer or smaller subtasks (pass large data by reference)",
            human_bytes(bytes),
            human_bytes(budget.report_bytes)
        )));
    }
    budget.report_bytes -= bytes;
    Ok(out)
}

impl task::types::Host for TaskState {}

impl task::host::Host for TaskState {
    fn log(
        &mut self,
        level: WitLevel,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        let fields = fields.into_iter().map(|f| (f.key, f.value)).collect();
        self.log
            .lock()
            .unwrap()
            .write(level.into(), message, fields);
        Ok(())
    }

    async fn sleep(&mut self, nanoseconds: u64) -> wasmtime::Result<()> {
        tokio::time::sleep(Duration::from_nanos(nanoseconds)).await;
        Ok(())
    }

    fn submit_subtasks(
        &mut self,
        subtasks: Vec<Subtask>,
    ) -> wasmtime::Result<Result<Vec<SubtaskHandle>, SubmitError>> {
        let start = self.subtasks.len();
        match check_submission(subtasks, start, &mut self.budget) {
            Ok(specs) => {
                self.subtasks.extend(specs);
                let handles = (start..self.subtasks.len())
                    .map(|index| SubtaskHandle {
                        index: index as u32,
                    })
                    .collect();
                Ok(Ok(handles))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn set_display(&mut self, display: String) -> wasmtime::Result<()> {
        self.display = Some(limits::cut(&display, limits::MAX_DISPLAY_BYTES));
        Ok(())
    }

    fn progress(&mut self, label: String, done: u64, total: u64) -> wasmtime::Result<()> {
        let label = limits::cut(&label, limits::MAX_LABEL_BYTES);
        if !self.progress.contains_key(&label) && self.progress.len() >= limits::MAX_PROGRESS_LABELS
        {
            return Ok(());
        }
        let entry = self.progress.entry(label).or_default();
        entry.0 = entry.0.saturating_add(done);
        entry.1 = entry.1.saturating_add(total);
        Ok(())
    }

    fn current(&mut self) -> wasmtime::Result<TaskContext> {
        Ok(self.context.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(name: &str, input: &str, deps: Vec<u32>) -> Subtask {
        Subtask {
            identifier: task::types::TaskIdentifier {
                name: name.into(),
                version: "v0.0".into(),
            },
            input: input.into(),
            display: None,
            depends_on: deps,
            max_retries: 0,
            cluster: None,
        }
    }

    fn budget(subtasks: usize) -> SubmitBudget {
        SubmitBudget {
            subtasks,
            input_bytes: 1 << 20,
            report_bytes: 16 << 20,
        }
    }

    fn invalid(subs: Vec<Subtask>, budget: &mut SubmitBudget) -> String {
        match check_submission(subs, 0, budget) {
            Err(SubmitError::Invalid(why)) => why,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn dependencies_must_point_backwards_and_are_offset() {
        let ok = check_submission(
            vec![sub("A", "{}", vec![]), sub("B", "1", vec![0])],
            3,
            &mut budget(10),
        )
        .unwrap();
        assert_eq!(ok[1].depends_on, vec![3]);
        let err = check_submission(vec![sub("A", "{}", vec![0])], 0, &mut budget(10)).unwrap_err();
        assert!(matches!(err, SubmitError::BadDependency(0)));
        let why = invalid(
            vec![sub("A", "{}", vec![]), sub("B", "1", vec![0, 0])],
            &mut budget(10),
        );
        assert!(why.contains("dependency 0 twice"), "{why}");
    }

    #[test]
    fn limits_names_and_json_are_checked() {
        assert!(matches!(
            check_submission(vec![sub("A", "{}", vec![]); 3], 8, &mut budget(10)).unwrap_err(),
            SubmitError::TooMany(10)
        ));
        assert!(matches!(
            check_submission(vec![sub("A", "{}", vec![])], usize::MAX, &mut budget(10))
                .unwrap_err(),
            SubmitError::TooMany(10)
        ));
        invalid(vec![sub("bad name", "{}", vec![])], &mut budget(10));
        let why = invalid(vec![sub("A", "{nope", vec![])], &mut budget(10));
        assert!(why.contains("not valid JSON"), "{why}");
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        let why = invalid(vec![sub("A", &deep, vec![])], &mut budget(10));
        assert!(why.contains("65 levels deep"), "{why}");
        let mut clustered = sub("A", "{}", vec![]);
        clustered.cluster = Some("\u{1b}]0;pwned\u{7}".into());
        let why = invalid(vec![clustered], &mut budget(10));
        assert!(why.contains("cluster") && !why.contains('\u{1b}'), "{why}");
    }

    #[test]
    fn inputs_and_the_whole_report_are_bounded() {
        let big = format!("\"{}\"", "x".repeat(2 << 20));
        let why = invalid(vec![sub("A", &big, vec![])], &mut budget(10));
        assert!(why.contains("exceeds the limit of 1 MiB per task"), "{why}");
        // Each subtask fits, together they do not: the second submission is refused and the
        // first one's budget stays spent.
        let half = format!("\"{}\"", "x".repeat(600 << 10));
        let mut b = SubmitBudget {
            report_bytes: 1 << 20,
            ..budget(10)
        };
        check_submission(vec![sub("A", &half, vec![])], 0, &mut b).unwrap();
        let why = invalid(vec![sub("A", &half, vec![])], &mut b);
        assert!(why.contains("of report"), "{why}");
        assert!(b.report_bytes < 500 << 10);
    }
}
