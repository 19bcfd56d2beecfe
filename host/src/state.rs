//! What a task attempt's store holds, and the host functions the guest calls. Each interface
//! the guest imports sees the attempt through a view of its own, as wasmtime's WASI does
//! (`WasiCtxView`): `tessera:task/host` through [`HostView`], `tessera:task/cache` through
//! [`CacheView`], WASI through its own `WasiCtxView`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_api::{Blob, CacheWrite, Level, ProgressUpdate, SubtaskSpec, TaskIdentifier, Version};
use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::v1;
use crate::bindings::v2::{
    DataError, Field, SubmitError, Subtask, SubtaskHandle, TaskContext, WitLevel, tessera::task,
};
use crate::data::{DependencyRef, JobData};
use crate::limits::{MemoryLimiter, human_bytes};
use crate::log::{AttemptLog, FieldValue};
use tessera_api::limits;

/// The data of one attempt's `Store`: created fresh for every attempt.
pub(crate) struct AttemptState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// What `tessera:task/host` keeps: the attempt's ids, log, and what it hands back.
    pub(crate) host: HostState,
    /// Job data: reads of committed data, the attempt's cache writes.
    pub(crate) data: DataState,
    /// Bytes of report left, shared by subtasks, cache writes and the output.
    pub(crate) budget: SubmitBudget,
}

/// What `tessera:task/host` keeps of an attempt.
pub(crate) struct HostState {
    pub(crate) log: Arc<Mutex<AttemptLog>>,
    pub(crate) context: TaskContext,
    pub(crate) subtasks: Vec<SubtaskSpec>,
    pub(crate) display: Option<String>,
    pub(crate) progress: BTreeMap<String, (u64, u64)>,
    /// The submitted subtask whose output becomes this task's, if the guest said so.
    pub(crate) output_from: Option<u32>,
}

/// An attempt's job data: where committed data is read from, and what it writes.
pub(crate) struct DataState {
    /// Where committed job data is read from.
    pub(crate) source: Arc<dyn JobData>,
    /// The task's dependencies, once read.
    pub(crate) dependencies: Option<Vec<DependencyRef>>,
    /// The attempt's cache writes (`None`: deleted), the last per key.
    pub(crate) writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Cache writes and deletes made so far.
    pub(crate) write_count: usize,
    /// Largest output or cache value.
    pub(crate) value_bytes: usize,
}

/// `tessera:task/host`'s view of an attempt (both contracts): its own state, the job data its
/// dependencies are read through, and the report budget its subtasks spend.
pub(crate) struct HostView<'a> {
    host: &'a mut HostState,
    data: &'a mut DataState,
    budget: &'a mut SubmitBudget,
}

/// `tessera:task/cache`'s view of an attempt: its job data, its job's id, and the report budget
/// its writes spend.
pub(crate) struct CacheView<'a> {
    data: &'a mut DataState,
    job_id: &'a str,
    budget: &'a mut SubmitBudget,
}

/// Links `tessera:task/host` (and `types`) to [`HostView`].
pub(crate) struct HostInterface;

impl HasData for HostInterface {
    type Data<'a> = HostView<'a>;
}

/// Links `tessera:task/cache` to [`CacheView`].
pub(crate) struct CacheInterface;

impl HasData for CacheInterface {
    type Data<'a> = CacheView<'a>;
}

impl AttemptState {
    /// The attempt as `tessera:task/host` sees it.
    pub(crate) fn host_view(&mut self) -> HostView<'_> {
        HostView {
            host: &mut self.host,
            data: &mut self.data,
            budget: &mut self.budget,
        }
    }

    /// The attempt as `tessera:task/cache` sees it.
    pub(crate) fn cache_view(&mut self) -> CacheView<'_> {
        CacheView {
            data: &mut self.data,
            job_id: &self.host.context.job_id,
            budget: &mut self.budget,
        }
    }
}

impl HostState {
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

impl DataState {
    /// The attempt's cache writes, as the report carries them.
    pub(crate) fn cache_writes(&mut self) -> Vec<CacheWrite> {
        std::mem::take(&mut self.writes)
            .into_iter()
            .map(|(key, value)| CacheWrite {
                key,
                value: value.map(Blob),
            })
            .collect()
    }

    /// The task's dependencies, read once.
    async fn dependencies(&mut self, context: &TaskContext) -> Result<&[DependencyRef], DataError> {
        if self.dependencies.is_none() {
            let source = self.source.clone();
            let deps = source
                .dependencies(&context.job_id, &context.task_id)
                .await
                .map_err(DataError::Unavailable)?;
            self.dependencies = Some(deps);
        }
        Ok(self.dependencies.as_deref().unwrap_or_default())
    }

    /// A cache key as the guest gave it, checked.
    fn key(key: &str) -> Result<(), DataError> {
        limits::check_cache_key(key).map_err(DataError::InvalidKey)
    }

    /// Records one cache write or delete, within the attempt's limits and report budget.
    fn write(
        &mut self,
        budget: &mut SubmitBudget,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<(), DataError> {
        Self::key(&key)?;
        if let Some(v) = &value
            && v.len() > self.value_bytes
        {
            return Err(DataError::TooLarge(self.value_bytes as u64));
        }
        if self.write_count >= limits::MAX_CACHE_WRITES {
            return Err(DataError::TooManyWrites(limits::MAX_CACHE_WRITES as u64));
        }
        // As the report carries it: the key, the value in base64, the envelope.
        let bytes = key
            .len()
            .saturating_add(value.as_ref().map_or(0, |v| v.len().div_ceil(3) * 4))
            .saturating_add(32);
        if !budget.spend(bytes) {
            return Err(DataError::TooManyWrites(budget.report_bytes as u64));
        }
        self.write_count += 1;
        self.writes.insert(key, value);
        Ok(())
    }
}

impl WasiView for AttemptState {
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
    /// Largest input of one subtask, in bytes as stored (`limits::stored_len`).
    pub(crate) input_bytes: usize,
    /// Report bytes left for subtasks.
    pub(crate) report_bytes: usize,
}

impl SubmitBudget {
    /// Spends report bytes on data the attempt hands back, or says it cannot.
    pub(crate) fn spend(&mut self, bytes: usize) -> bool {
        match self.report_bytes.checked_sub(bytes) {
            Some(left) => {
                self.report_bytes = left;
                true
            }
            None => false,
        }
    }
}

/// Roughly what a subtask adds to a report beyond its input, its name and its display name.
const SUBTASK_OVERHEAD: usize = 160;

/// Marks a `depends-on` entry as a subtask handle from an earlier call (see the WIT).
const HANDLE_BIT: u32 = 0x8000_0000;

/// Checks one submission and turns it into wire subtasks, or says why it is refused. Each
/// subtask is checked by the server's own rule (`limits::check_subtask`), its input measured
/// as the server will store it, so that a result the host accepts is never refused there.
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
        let earlier = already + i;
        let mut deps = if s.depends_on_all {
            (0..earlier as u32).collect()
        } else {
            Vec::with_capacity(s.depends_on.len())
        };
        for &d in &s.depends_on {
            let position = if d & HANDLE_BIT != 0 {
                Some((d & !HANDLE_BIT) as usize).filter(|&p| p < already)
            } else {
                Some(d as usize).filter(|&p| p < i).map(|p| p + already)
            };
            match position {
                Some(_) if s.depends_on_all => {}
                Some(p) => deps.push(p as u32),
                None => return Err(SubmitError::BadDependency(d)),
            }
        }
        let version: Version = s.identifier.version.parse().map_err(|e| {
            SubmitError::Invalid(format!(
                "subtask {i} ({}): {e}",
                limits::elide(&s.identifier.name, 64)
            ))
        })?;
        let identifier = TaskIdentifier::new(s.identifier.name, version)
            .map_err(|e| SubmitError::Invalid(format!("subtask {i}: {e}")))?;
        let input: serde_json::Value = serde_json::from_str(&s.input).map_err(|e| {
            SubmitError::Invalid(format!(
                "subtask {i} ({identifier}): input is not valid JSON: {e}"
            ))
        })?;
        let spec = SubtaskSpec {
            identifier,
            input,
            display: s
                .display
                .map(|d| limits::cut(&d, limits::MAX_DISPLAY_BYTES)),
            depends_on: deps,
            max_retries: s.max_retries,
            cluster: s.cluster,
        };
        let stored = limits::check_subtask(earlier, &spec, budget.input_bytes)
            .map_err(SubmitError::Invalid)?;
        bytes = bytes
            .saturating_add(stored)
            .saturating_add(spec.identifier.name.len())
            .saturating_add(spec.display.as_ref().map_or(0, String::len))
            .saturating_add(spec.depends_on.len().saturating_mul(11))
            .saturating_add(SUBTASK_OVERHEAD);
        out.push(spec);
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

impl task::types::Host for HostView<'_> {}

impl task::host::Host for HostView<'_> {
    fn log(
        &mut self,
        level: WitLevel,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        use task::types::FieldValue as V;
        let fields = fields
            .into_iter()
            .map(|f| {
                let value = match f.value {
                    V::Text(t) => FieldValue::Text(t),
                    V::Signed(n) => FieldValue::Signed(n),
                    V::Unsigned(n) => FieldValue::Unsigned(n),
                    V::Float(x) => FieldValue::Float(x),
                    V::Boolean(b) => FieldValue::Bool(b),
                };
                (f.key, value)
            })
            .collect();
        self.host
            .log
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
        let start = self.host.subtasks.len();
        match check_submission(subtasks, start, self.budget) {
            Ok(specs) => {
                self.host.subtasks.extend(specs);
                let handles = (start..self.host.subtasks.len())
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
        self.host.display = Some(limits::cut(&display, limits::MAX_DISPLAY_BYTES));
        Ok(())
    }

    fn progress(&mut self, label: String, done: u64, total: u64) -> wasmtime::Result<()> {
        let label = limits::cut(&label, limits::MAX_LABEL_BYTES);
        let progress = &mut self.host.progress;
        if !progress.contains_key(&label) && progress.len() >= limits::MAX_PROGRESS_LABELS {
            return Ok(());
        }
        let entry = progress.entry(label).or_default();
        entry.0 = entry.0.saturating_add(done);
        entry.1 = entry.1.saturating_add(total);
        Ok(())
    }

    fn current(&mut self) -> wasmtime::Result<TaskContext> {
        Ok(self.host.context.clone())
    }

    async fn dependencies(&mut self) -> wasmtime::Result<Result<Vec<SubtaskHandle>, DataError>> {
        Ok(self
            .data
            .dependencies(&self.host.context)
            .await
            .map(|deps| {
                deps.iter()
                    .map(|d| SubtaskHandle { index: d.index })
                    .collect()
            }))
    }

    async fn output_of(
        &mut self,
        dependency: SubtaskHandle,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, DataError>> {
        let task = match self.data.dependencies(&self.host.context).await {
            Ok(deps) => deps.iter().find(|d| d.index == dependency.index).cloned(),
            Err(e) => return Ok(Err(e)),
        };
        let Some(task) = task else {
            return Ok(Err(DataError::NotADependency(dependency.index)));
        };
        let source = self.data.source.clone();
        Ok(source
            .output(&self.host.context.job_id, &task.task_id)
            .await
            .map_err(DataError::Unavailable))
    }

    fn output_from(&mut self, subtask: SubtaskHandle) -> wasmtime::Result<Result<(), SubmitError>> {
        if (subtask.index as usize) >= self.host.subtasks.len() {
            return Ok(Err(SubmitError::BadDependency(subtask.index)));
        }
        self.host.output_from = Some(subtask.index);
        Ok(Ok(()))
    }
}

impl task::cache::Host for CacheView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, DataError>> {
        if let Err(e) = DataState::key(&key) {
            return Ok(Err(e));
        }
        if let Some(own) = self.data.writes.get(&key) {
            return Ok(Ok(own.clone()));
        }
        let source = self.data.source.clone();
        Ok(source
            .cache_get(self.job_id, &key)
            .await
            .map_err(DataError::Unavailable))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), DataError>> {
        Ok(self.data.write(self.budget, key, Some(value)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), DataError>> {
        Ok(self.data.write(self.budget, key, None))
    }

    async fn list(
        &mut self,
        prefix: String,
        start_after: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, DataError>> {
        // The server's rule, so that what it would refuse the guest hears as `invalid-key`,
        // not as a retryable `unavailable`.
        if let Err(why) = limits::check_cache_listing(&prefix, start_after.as_deref()) {
            return Ok(Err(DataError::InvalidKey(why)));
        }
        let page = limits::MAX_CACHE_LIST;
        let source = self.data.source.clone();
        let committed = match source
            .cache_list(self.job_id, &prefix, start_after.as_deref(), page)
            .await
        {
            Ok(keys) => keys,
            Err(e) => return Ok(Err(DataError::Unavailable(e))),
        };
        Ok(Ok(merge_listing(
            committed,
            &self.data.writes,
            &prefix,
            start_after.as_deref(),
            page as usize,
        )))
    }
}

/// One page of keys: the committed page with the attempt's own writes laid over it. When the
/// committed page is full, own keys past its last key wait for the next page, so that no key
/// is skipped or listed twice across pages.
fn merge_listing(
    committed: Vec<String>,
    own: &BTreeMap<String, Option<Vec<u8>>>,
    prefix: &str,
    after: Option<&str>,
    page: usize,
) -> Vec<String> {
    let full = committed.len() >= page;
    let last = committed.last().cloned();
    let mut keys: std::collections::BTreeSet<String> = committed
        .into_iter()
        .filter(|k| !matches!(own.get(k), Some(None)))
        .collect();
    for (key, value) in own {
        let in_range = key.starts_with(prefix)
            && after.is_none_or(|a| key.as_str() > a)
            && (!full || last.as_deref().is_none_or(|l| key.as_str() <= l));
        if in_range && value.is_some() {
            keys.insert(key.clone());
        }
    }
    keys.into_iter().take(page).collect()
}

impl From<v1::tessera::task::types::Level> for Level {
    fn from(level: v1::tessera::task::types::Level) -> Self {
        use v1::tessera::task::types::Level as L;
        match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        }
    }
}

impl v1::tessera::task::types::Host for HostView<'_> {}

/// `tessera:task@0.1.0`'s host functions: the 0.2.0 ones, with the old shapes.
impl v1::tessera::task::host::Host for HostView<'_> {
    fn log(
        &mut self,
        level: v1::tessera::task::types::Level,
        message: String,
        fields: Vec<v1::tessera::task::types::Field>,
    ) -> wasmtime::Result<()> {
        // 0.1.0 fields are text, and stay text: no guessing numbers from it.
        let fields = fields
            .into_iter()
            .map(|f| (f.key, FieldValue::Text(f.value)))
            .collect();
        self.host
            .log
            .lock()
            .unwrap()
            .write(level.into(), message, fields);
        Ok(())
    }

    async fn sleep(&mut self, nanoseconds: u64) -> wasmtime::Result<()> {
        task::host::Host::sleep(self, nanoseconds).await
    }

    fn submit_subtasks(
        &mut self,
        subtasks: Vec<v1::tessera::task::types::Subtask>,
    ) -> wasmtime::Result<
        Result<Vec<v1::tessera::task::types::SubtaskHandle>, v1::tessera::task::types::SubmitError>,
    > {
        use v1::tessera::task::types as old;
        let subtasks = subtasks
            .into_iter()
            .map(|s| Subtask {
                identifier: task::types::TaskIdentifier {
                    name: s.identifier.name,
                    version: s.identifier.version,
                },
                input: s.input,
                display: s.display,
                depends_on: s.depends_on,
                depends_on_all: false,
                max_retries: s.max_retries,
                cluster: s.cluster,
            })
            .collect();
        let result = task::host::Host::submit_subtasks(self, subtasks)?;
        Ok(match result {
            Ok(handles) => Ok(handles
                .into_iter()
                .map(|h| old::SubtaskHandle { index: h.index })
                .collect()),
            Err(SubmitError::TooMany(n)) => Err(old::SubmitError::TooMany(n)),
            Err(SubmitError::BadDependency(d)) => Err(old::SubmitError::BadDependency(d)),
            Err(SubmitError::Invalid(why)) => Err(old::SubmitError::Invalid(why)),
        })
    }

    fn set_display(&mut self, display: String) -> wasmtime::Result<()> {
        task::host::Host::set_display(self, display)
    }

    fn progress(&mut self, label: String, done: u64, total: u64) -> wasmtime::Result<()> {
        task::host::Host::progress(self, label, done, total)
    }

    fn current(&mut self) -> wasmtime::Result<v1::tessera::task::types::TaskContext> {
        let context = &self.host.context;
        Ok(v1::tessera::task::types::TaskContext {
            job_id: context.job_id.clone(),
            task_id: context.task_id.clone(),
            attempt: context.attempt,
        })
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
            depends_on_all: false,
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
    fn depends_on_all_names_every_earlier_subtask_once() {
        let mut reduce = sub("Merge", "{}", vec![1]);
        reduce.depends_on_all = true;
        let ok = check_submission(
            vec![sub("A", "{}", vec![]), sub("A", "{}", vec![]), reduce],
            2,
            &mut budget(10),
        )
        .unwrap();
        assert_eq!(ok[2].depends_on, vec![0, 1, 2, 3]);
        let mut first = sub("Merge", "{}", vec![]);
        first.depends_on_all = true;
        let ok = check_submission(vec![first], 0, &mut budget(10)).unwrap();
        assert!(ok[0].depends_on.is_empty());
    }

    #[test]
    fn own_writes_are_laid_over_a_listing_page() {
        let own: BTreeMap<String, Option<Vec<u8>>> = [
            ("a/2".to_string(), Some(vec![1])),
            ("a/3".to_string(), None),
            ("a/9".to_string(), Some(vec![1])),
            ("b/1".to_string(), Some(vec![1])),
        ]
        .into();
        let committed = vec!["a/1".to_string(), "a/3".to_string(), "a/5".to_string()];
        assert_eq!(
            merge_listing(committed.clone(), &own, "a/", None, 10),
            ["a/1", "a/2", "a/5", "a/9"]
        );
        // A full committed page ends at its last key: a/9 comes with the next page.
        assert_eq!(
            merge_listing(committed, &own, "a/", None, 3),
            ["a/1", "a/2", "a/5"]
        );
        assert_eq!(merge_listing(vec![], &own, "a/", Some("a/5"), 3), ["a/9"]);
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
