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
use crate::limits::MemoryLimiter;
use crate::log::AttemptLog;

/// The data of one attempt's `Store`: created fresh for every attempt.
pub(crate) struct TaskState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: Arc<Mutex<AttemptLog>>,
    pub(crate) context: TaskContext,
    pub(crate) subtask_limit: usize,
    pub(crate) subtasks: Vec<SubtaskSpec>,
    pub(crate) display: Option<String>,
    pub(crate) progress: BTreeMap<String, (u64, u64)>,
}

impl TaskState {
    /// Progress indicators in label order.
    pub(crate) fn progress_updates(&self) -> Vec<ProgressUpdate> {
        self.progress
            .iter()
            .map(|(label, &(done, total))| ProgressUpdate {
                label: label.clone(),
                done,
                total,
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

/// Longest display name kept; longer ones are cut.
const MAX_DISPLAY: usize = 256;
/// Longest progress label kept, and most indicators one attempt may create.
const MAX_LABEL: usize = 128;
const MAX_INDICATORS: usize = 64;

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// Checks one submission and turns it into wire subtasks, or says why it is refused.
fn check_submission(
    subtasks: Vec<Subtask>,
    already: usize,
    limit: usize,
) -> Result<Vec<SubtaskSpec>, SubmitError> {
    if already + subtasks.len() > limit {
        return Err(SubmitError::TooMany(limit.min(u32::MAX as usize) as u32));
    }
    let mut out = Vec::with_capacity(subtasks.len());
    for (i, s) in subtasks.into_iter().enumerate() {
        if let Some(&bad) = s.depends_on.iter().find(|&&d| d as usize >= i) {
            return Err(SubmitError::BadDependency(bad));
        }
        let version: Version = s.identifier.version.parse().map_err(|e| {
            SubmitError::Invalid(format!("subtask {i} ({}): {e}", s.identifier.name))
        })?;
        let identifier = TaskIdentifier::new(s.identifier.name, version)
            .map_err(|e| SubmitError::Invalid(format!("subtask {i}: {e}")))?;
        let input = serde_json::from_str(&s.input).map_err(|e| {
            SubmitError::Invalid(format!(
                "subtask {i} ({identifier}): input is not valid JSON: {e}"
            ))
        })?;
        let offset = already as u32;
        out.push(SubtaskSpec {
            identifier,
            input,
            display: s.display.map(|d| cut(d, MAX_DISPLAY)),
            depends_on: s.depends_on.iter().map(|d| d + offset).collect(),
            max_retries: s.max_retries,
            cluster: s.cluster,
        });
    }
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
        match check_submission(subtasks, start, self.subtask_limit) {
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
        self.display = Some(cut(display, MAX_DISPLAY));
        Ok(())
    }

    fn progress(&mut self, label: String, done: u64, total: u64) -> wasmtime::Result<()> {
        let label = cut(label, MAX_LABEL);
        if !self.progress.contains_key(&label) && self.progress.len() >= MAX_INDICATORS {
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

    #[test]
    fn dependencies_must_point_backwards_and_are_offset() {
        let ok =
            check_submission(vec![sub("A", "{}", vec![]), sub("B", "1", vec![0])], 3, 10).unwrap();
        assert_eq!(ok[1].depends_on, vec![3]);
        let err = check_submission(vec![sub("A", "{}", vec![0])], 0, 10).unwrap_err();
        assert!(matches!(err, SubmitError::BadDependency(0)));
    }

    #[test]
    fn limits_names_and_json_are_checked() {
        assert!(matches!(
            check_submission(vec![sub("A", "{}", vec![]); 3], 8, 10).unwrap_err(),
            SubmitError::TooMany(10)
        ));
        assert!(matches!(
            check_submission(vec![sub("bad name", "{}", vec![])], 0, 10).unwrap_err(),
            SubmitError::Invalid(_)
        ));
        let SubmitError::Invalid(why) =
            check_submission(vec![sub("A", "{nope", vec![])], 0, 10).unwrap_err()
        else {
            panic!("expected invalid")
        };
        assert!(why.contains("not valid JSON"), "{why}");
    }
}
