//! Run a task's `execute` natively, in a plain `cargo test`, with a context that records what
//! the task does: log lines, subtasks, its display name, progress, sleeps (which return at
//! once), its output and its cache writes. A test can give it dependencies with outputs and a
//! cache to read. Available on every target but `wasm` (the real host is there).
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use tessera_guest::{Context, Task, TaskError};
//! # #[derive(Serialize, Deserialize)] struct Greet { name: String }
//! # impl Task for Greet {
//! #     fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> { Ok(()) }
//! # }
//! use tessera_guest::testing::TestContext;
//!
//! let run = TestContext::new().attempt(2).run(&Greet { name: "Ada".into() });
//! assert!(run.result.is_ok());
//! assert!(run.logs.iter().any(|l| l.message == "Hello"));
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::tessera::task::types as wit;
use crate::{
    Context, DataError, Level, SubmitError, SubtaskHandle, Task, TaskError, TaskIdentifier,
};

/// The host's limits on the job cache, which a test context enforces too.
const MAX_KEY_CHARS: usize = 512;
const MAX_VALUE_BYTES: usize = 1 << 20;
const MAX_WRITES: usize = 1000;
const PAGE: usize = 1000;

/// How a test runs a task: the ids and attempt number its context reports, the subtask limit
/// the host would enforce, the dependencies it reads and the cache it sees.
#[derive(Debug, Clone)]
pub struct TestContext {
    job_id: String,
    task_id: String,
    attempt: u32,
    max_subtasks: u32,
    dependencies: Vec<(u32, Option<Vec<u8>>)>,
    cache: BTreeMap<String, Vec<u8>>,
}

impl Default for TestContext {
    fn default() -> Self {
        TestContext {
            job_id: "test-job".into(),
            task_id: "test-task".into(),
            attempt: 1,
            max_subtasks: 100_000,
            dependencies: Vec::new(),
            cache: BTreeMap::new(),
        }
    }
}

/// A log line the task wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedLine {
    pub level: Level,
    pub message: String,
    /// Its fields, as text.
    pub fields: BTreeMap<String, String>,
    /// Its fields, typed as they travel to the host.
    pub values: BTreeMap<String, crate::FieldValue>,
}

/// A subtask the task submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedSubtask {
    pub identifier: TaskIdentifier,
    /// Its input, as the host would receive it.
    pub input: serde_json::Value,
    pub display: Option<String>,
    /// The subtasks it waits for: positions in [`TestRun::subtasks`] (an index within its own
    /// call and a handle from an earlier one both end up as one).
    pub depends_on: Vec<u32>,
    pub max_retries: u32,
    pub cluster: Option<String>,
}

/// What one run of a task did.
#[derive(Debug)]
pub struct TestRun {
    /// What `execute` returned.
    pub result: Result<(), TaskError>,
    pub logs: Vec<LoggedLine>,
    /// Every subtask of every accepted submission, in order (a handle's index is a position
    /// here).
    pub subtasks: Vec<SubmittedSubtask>,
    /// The display name it set last, if any.
    pub display: Option<String>,
    /// Progress by label: (done, total).
    pub progress: BTreeMap<String, (u64, u64)>,
    /// The time it asked to sleep, in all.
    pub slept: Duration,
    /// The output it set, if it set one (kept by the host only if `result` is `Ok`).
    pub output: Option<Vec<u8>>,
    /// Its cache writes by key (`None`: deleted), the last per key.
    pub cache_writes: BTreeMap<String, Option<Vec<u8>>>,
    /// The subtask (a position in [`TestRun::subtasks`]) whose output it took as its own.
    pub output_from: Option<u32>,
}

impl TestRun {
    /// The output decoded from JSON as `T`, or why not.
    pub fn output_json<T: DeserializeOwned>(&self) -> Result<T, String> {
        let bytes = self.output.as_ref().ok_or("the task set no output")?;
        serde_json::from_slice(bytes).map_err(|e| format!("the output does not decode: {e}"))
    }
}

impl TestContext {
    /// Attempt 1 of task `test-task` in job `test-job`.
    pub fn new() -> Self {
        TestContext::default()
    }

    /// Runs as this attempt (from 1).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Reports these job and task ids.
    pub fn ids(mut self, job_id: impl Into<String>, task_id: impl Into<String>) -> Self {
        self.job_id = job_id.into();
        self.task_id = task_id.into();
        self
    }

    /// Refuses submissions past this many subtasks, as a runner's `--max-subtasks` does.
    pub fn max_subtasks(mut self, max: u32) -> Self {
        self.max_subtasks = max;
        self
    }

    /// Gives the task a dependency with this handle whose output is `value` as JSON (a
    /// dependency's outputs are what [`Context::output_of`] reads).
    pub fn dependency<T: Serialize>(mut self, handle: SubtaskHandle, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("a test's dependency output serializes");
        self.dependencies.push((handle.index, Some(bytes)));
        self
    }

    /// Gives the task a dependency with this handle and raw output (`None`: it returned none).
    pub fn dependency_bytes(mut self, handle: SubtaskHandle, output: Option<Vec<u8>>) -> Self {
        self.dependencies.push((handle.index, output));
        self
    }

    /// Puts `value` as JSON in the cache the task sees, as if an earlier task had.
    pub fn cache<T: Serialize>(mut self, key: impl Into<String>, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("a test's cache value serializes");
        self.cache.insert(key.into(), bytes);
        self
    }

    /// Runs `task`'s `execute` once and returns what it did.
    pub fn run<T: Task>(&self, task: &T) -> TestRun {
        let recorder = std::rc::Rc::new(std::cell::RefCell::new(Recorder {
            setup: self.clone(),
            ..Recorder::default()
        }));
        let mut ctx = Context::recording(recorder.clone());
        let result = task.execute(&mut ctx);
        let output = ctx.take_output();
        drop(ctx);
        let r = std::rc::Rc::try_unwrap(recorder)
            .map(std::cell::RefCell::into_inner)
            .unwrap_or_else(|shared| shared.borrow().clone());
        TestRun {
            result,
            logs: r.logs,
            subtasks: r.subtasks,
            display: r.display,
            progress: r.progress,
            slept: r.slept,
            output,
            cache_writes: r.writes,
            output_from: r.output_from,
        }
    }
}

/// What a test context records as the task calls it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    setup: TestContext,
    logs: Vec<LoggedLine>,
    subtasks: Vec<SubmittedSubtask>,
    pub(crate) display: Option<String>,
    progress: BTreeMap<String, (u64, u64)>,
    slept: Duration,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    write_count: usize,
    pub(crate) output_from: Option<u32>,
}

fn check_key(key: &str) -> Result<(), DataError> {
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.chars().any(char::is_control) {
        return Err(DataError::InvalidKey(format!(
            "{key:?}: keys are 1 to {MAX_KEY_CHARS} characters of text without control characters"
        )));
    }
    Ok(())
}

impl Recorder {
    pub(crate) fn dependencies(&self) -> Vec<wit::SubtaskHandle> {
        self.setup
            .dependencies
            .iter()
            .map(|(index, _)| wit::SubtaskHandle { index: *index })
            .collect()
    }

    pub(crate) fn output_of(&self, h: wit::SubtaskHandle) -> Result<Option<Vec<u8>>, DataError> {
        self.setup
            .dependencies
            .iter()
            .find(|(index, _)| *index == h.index)
            .map(|(_, output)| output.clone())
            .ok_or(DataError::NotADependency(h.index))
    }

    pub(crate) fn output_from(&mut self, h: wit::SubtaskHandle) -> Result<(), SubmitError> {
        if h.index as usize >= self.subtasks.len() {
            return Err(SubmitError::BadDependency(h.index));
        }
        self.output_from = Some(h.index);
        Ok(())
    }

    pub(crate) fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, DataError> {
        check_key(key)?;
        Ok(match self.writes.get(key) {
            Some(own) => own.clone(),
            None => self.setup.cache.get(key).cloned(),
        })
    }

    pub(crate) fn cache_write(
        &mut self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), DataError> {
        check_key(key)?;
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(DataError::TooLarge(MAX_VALUE_BYTES as u64));
        }
        if self.write_count >= MAX_WRITES {
            return Err(DataError::TooManyWrites(MAX_WRITES as u64));
        }
        self.write_count += 1;
        self.writes.insert(key.to_string(), value);
        Ok(())
    }

    pub(crate) fn cache_list(&self, prefix: &str, after: Option<&str>) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<&String> = self.setup.cache.keys().collect();
        for (key, value) in &self.writes {
            if value.is_some() {
                keys.insert(key);
            } else {
                keys.remove(key);
            }
        }
        keys.into_iter()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .take(PAGE)
            .cloned()
            .collect()
    }

    pub(crate) fn context(&self) -> wit::TaskContext {
        wit::TaskContext {
            job_id: self.setup.job_id.clone(),
            task_id: self.setup.task_id.clone(),
            attempt: self.setup.attempt,
        }
    }

    pub(crate) fn log(&mut self, level: Level, message: &str, fields: Vec<wit::Field>) {
        self.logs.push(LoggedLine {
            level,
            message: message.to_string(),
            fields: fields
                .iter()
                .map(|f| (f.key.clone(), f.value.to_string()))
                .collect(),
            values: fields.into_iter().map(|f| (f.key, f.value)).collect(),
        });
    }

    pub(crate) fn sleep(&mut self, duration: Duration) {
        self.slept = self.slept.saturating_add(duration);
    }

    pub(crate) fn progress(&mut self, label: &str, done: u64, total: u64) {
        let entry = self.progress.entry(label.to_string()).or_default();
        entry.0 = entry.0.saturating_add(done);
        entry.1 = entry.1.saturating_add(total);
    }

    /// Checks a submission as the host does, then keeps it.
    pub(crate) fn submit(
        &mut self,
        subtasks: Vec<wit::Subtask>,
    ) -> Result<Vec<wit::SubtaskHandle>, SubmitError> {
        let after = self.subtasks.len().saturating_add(subtasks.len());
        if after > self.setup.max_subtasks as usize {
            return Err(SubmitError::TooMany(self.setup.max_subtasks));
        }
        let already = self.subtasks.len();
        let mut positions = Vec::with_capacity(subtasks.len());
        for (i, s) in subtasks.iter().enumerate() {
            let mut deps: Vec<u32> = if s.depends_on_all {
                (0..(already + i) as u32).collect()
            } else {
                Vec::with_capacity(s.depends_on.len())
            };
            for &d in &s.depends_on {
                let position = if d & crate::subtask::HANDLE_BIT != 0 {
                    Some((d & !crate::subtask::HANDLE_BIT) as usize).filter(|&p| p < already)
                } else {
                    Some(d as usize).filter(|&p| p < i).map(|p| p + already)
                };
                let position = position.ok_or(SubmitError::BadDependency(d))? as u32;
                if !s.depends_on_all {
                    deps.push(position);
                }
            }
            positions.push(deps);
        }
        let mut kept = Vec::with_capacity(subtasks.len());
        for (s, depends_on) in subtasks.into_iter().zip(positions) {
            let input = serde_json::from_str(&s.input)
                .map_err(|e| SubmitError::Invalid(format!("input is not JSON: {e}")))?;
            kept.push(SubmittedSubtask {
                identifier: TaskIdentifier::new(s.identifier.name, s.identifier.version),
                input,
                display: s.display,
                depends_on,
                max_retries: s.max_retries,
                cluster: s.cluster,
            });
        }
        let first = self.subtasks.len() as u32;
        let handles = (first..first + kept.len() as u32)
            .map(|index| wit::SubtaskHandle { index })
            .collect();
        self.subtasks.extend(kept);
        Ok(handles)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Subtask;

    #[derive(Serialize, Deserialize)]
    struct Leaf {
        n: u32,
    }

    impl Task for Leaf {
        fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
            Ok(())
        }
    }

    /// Submits two leaves, then a third that waits on the first of its own call, then one with
    /// a forward dependency (refused), and reports what it saw.
    #[derive(Serialize, Deserialize)]
    struct Root {}

    impl Task for Root {
        fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
            let first = ctx.submit_subtasks([
                Subtask::new(&Leaf { n: 0 }),
                Subtask::new(&Leaf { n: 1 }).depends_on([0]).max_retries(2),
            ])?;
            let third = ctx.submit_subtask(&Leaf { n: 2 })?;
            let refused = ctx.submit_subtasks([Subtask::new(&Leaf { n: 3 }).depends_on([0])]);
            crate::info!(
                ctx,
                handles = format!("{:?}", [first[0].index, first[1].index, third.index]),
                refused = format!("{refused:?}"),
                job = ctx.job_id(),
                attempt = ctx.attempt(),
                "submitted"
            );
            ctx.set_display("root");
            Ok(())
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Fan {}

    impl Task for Fan {
        fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
            let leaves: Vec<_> = (0..3)
                .map(|n| ctx.submit_subtask(&Leaf { n }))
                .collect::<Result<_, _>>()?;
            ctx.submit_subtasks([Subtask::new(&Leaf { n: 9 }).after(leaves)])?;
            let future = crate::SubtaskHandle { index: 7 };
            ctx.submit_subtasks([Subtask::new(&Leaf { n: 10 }).after([future])])?;
            Ok(())
        }
    }

    /// Reads its dependencies' outputs and the cache, and writes both back.
    #[derive(Serialize, Deserialize)]
    struct Reduce {}

    impl Task for Reduce {
        fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
            let mut sum: u64 = ctx.cache().get("base")?.unwrap_or(0);
            for dep in ctx.dependencies()? {
                sum += ctx.output_of::<u64>(dep)?;
            }
            ctx.cache().put("sum", &sum)?;
            ctx.cache().delete("base")?;
            assert_eq!(ctx.cache().list("")?, ["sum"]);
            assert_eq!(
                ctx.cache().get::<u64>("sum")?,
                Some(sum),
                "reads its own writes"
            );
            let missing = ctx
                .output_of::<u64>(SubtaskHandle { index: 99 })
                .unwrap_err();
            assert_eq!(missing, DataError::NotADependency(99));
            ctx.set_output(&sum)?;
            Ok(())
        }
    }

    #[test]
    fn outputs_and_the_cache_are_read_and_written_like_the_host_does() {
        let run = TestContext::new()
            .cache("base", &100u64)
            .dependency(SubtaskHandle { index: 0 }, &1u64)
            .dependency(SubtaskHandle { index: 1 }, &2u64)
            .run(&Reduce {});
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert_eq!(run.output_json::<u64>(), Ok(103));
        assert_eq!(run.cache_writes["sum"].as_deref(), Some(&b"103"[..]));
        assert_eq!(run.cache_writes["base"], None, "deleted");
        let none = TestContext::new()
            .dependency_bytes(SubtaskHandle { index: 0 }, None)
            .run(&Reduce {});
        assert_eq!(none.result.unwrap_err().code(), Some("no-output"));
        assert!(none.output.is_none());
        let leaves = TestContext::new().run(&Gather {});
        assert!(leaves.result.is_ok(), "{:?}", leaves.result);
        assert_eq!(leaves.subtasks[2].depends_on, [0, 1]);
        assert_eq!(leaves.output_from, Some(2));
        assert_eq!(
            leaves.output, None,
            "the forwarded output replaces the returned one"
        );
    }

    #[derive(Serialize, Deserialize)]
    struct Gather {}

    impl Task for Gather {
        fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
            ctx.set_output(&"replaced")?;
            ctx.submit_subtask(&Leaf { n: 0 })?;
            let handles = ctx.submit_subtasks([
                Subtask::new(&Leaf { n: 1 }),
                Subtask::new(&Reduce {}).after_all(),
            ])?;
            let refused = ctx.set_output_from(SubtaskHandle { index: 3 }).unwrap_err();
            assert_eq!(refused, SubmitError::BadDependency(3));
            ctx.set_output_from(handles[1])?;
            Ok(())
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Typed {}

    impl Task for Typed {
        fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
            let index = 7u32;
            let by_ref = &index;
            let path = std::path::Path::new("/tmp/x");
            crate::info!(
                ctx,
                n = index,
                r = by_ref,
                neg = -2i64,
                size = 3usize,
                x = 1.5,
                ok = true,
                name = "a",
                owned = String::from("b"),
                shown = path.display(),
                "typed"
            );
            Ok(())
        }
    }

    #[test]
    fn log_fields_keep_their_types() {
        use crate::FieldValue as V;
        let run = TestContext::new().run(&Typed {});
        let v = &run.logs[0].values;
        assert_eq!(v["n"], V::Unsigned(7));
        assert_eq!(
            v["r"],
            V::Unsigned(7),
            "a reference to a number is a number"
        );
        assert_eq!(v["neg"], V::Signed(-2));
        assert_eq!(v["size"], V::Unsigned(3));
        assert_eq!(v["x"], V::Float(1.5));
        assert_eq!(v["ok"], V::Boolean(true));
        assert_eq!(v["name"], V::Text("a".into()));
        assert_eq!(v["owned"], V::Text("b".into()));
        assert_eq!(
            v["shown"],
            V::Text("/tmp/x".into()),
            "other types by Display"
        );
        assert_eq!(run.logs[0].fields["x"], "1.5");
    }

    #[test]
    fn handles_from_earlier_calls_name_dependencies() {
        let run = TestContext::new().run(&Fan {});
        assert_eq!(run.subtasks.len(), 4);
        assert_eq!(run.subtasks[3].depends_on, [0, 1, 2]);
        let error = run.result.unwrap_err();
        assert_eq!(
            error.code(),
            Some("bad-dependency"),
            "a handle not issued yet"
        );
    }

    #[test]
    fn a_test_context_records_and_checks_like_the_host() {
        let run = TestContext::new().ids("j1", "t1").attempt(3).run(&Root {});
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert_eq!(run.subtasks.len(), 3, "the refused submission kept nothing");
        assert_eq!(run.subtasks[1].depends_on, [0]);
        assert_eq!(run.subtasks[1].max_retries, 2);
        assert_eq!(run.subtasks[2].input, serde_json::json!({"n": 2}));
        let fields = &run.logs[0].fields;
        assert_eq!(fields["handles"], "[0, 1, 2]", "handles count across calls");
        assert_eq!(fields["refused"], "Err(BadDependency(0))");
        assert_eq!(
            (fields["job"].as_str(), fields["attempt"].as_str()),
            ("j1", "3")
        );
        assert_eq!(run.display.as_deref(), Some("root"));
    }
}
