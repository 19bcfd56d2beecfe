//! The [`Context`] a task's `execute` receives: its window on the host.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::tessera::task::types as wit;
use crate::bindings::tessera::task::{cache as wit_cache, host};
use crate::{DataError, FieldValue, Level, SubmitError, Subtask, SubtaskHandle, Task, TaskError};

/// The running task's handle on the host: logging, sleeping, subtasks, display, progress,
/// its output, its dependencies' outputs and the job cache.
pub struct Context {
    backend: Backend,
    output: Option<Vec<u8>>,
}

/// Where a context's calls go: the host, or (natively, in tests) a recorder.
#[derive(Clone)]
enum Backend {
    Host,
    #[cfg(not(target_family = "wasm"))]
    Test(std::rc::Rc<std::cell::RefCell<crate::testing::Recorder>>),
}

impl Context {
    pub(crate) fn new() -> Self {
        Context {
            backend: Backend::Host,
            output: None,
        }
    }

    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn recording(
        recorder: std::rc::Rc<std::cell::RefCell<crate::testing::Recorder>>,
    ) -> Self {
        Context {
            backend: Backend::Test(recorder),
            output: None,
        }
    }

    /// The output set with [`Context::set_output`], taken when `execute` returns.
    pub(crate) fn take_output(&mut self) -> Option<Vec<u8>> {
        self.output.take()
    }

    fn current(&self) -> wit::TaskContext {
        match &self.backend {
            Backend::Host => host::current(),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow().context(),
        }
    }

    /// The id of the job this task belongs to.
    pub fn job_id(&self) -> String {
        self.current().job_id
    }

    /// The id of this task.
    pub fn task_id(&self) -> String {
        self.current().task_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.current().attempt
    }

    /// Writes a log line with structured fields; the [`info!`](crate::info) family is shorter
    /// (and types numbers and booleans for you).
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, FieldValue)]) {
        let fields: Vec<wit::Field> = fields
            .iter()
            .map(|(k, v)| wit::Field {
                key: (*k).to_string(),
                value: v.clone(),
            })
            .collect();
        match &self.backend {
            Backend::Host => host::log(level, message, &fields),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().log(level, message, fields),
        }
    }

    /// Sleeps without holding a host thread (in a test: at once, adding up the time).
    pub fn sleep(&self, duration: Duration) {
        match &self.backend {
            Backend::Host => host::sleep(duration.as_nanos().min(u64::MAX as u128) as u64),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().sleep(duration),
        }
    }

    /// Submits one subtask running `task`; it is recorded when this attempt succeeds.
    pub fn submit_subtask<T: Task + Serialize>(
        &mut self,
        task: &T,
    ) -> Result<SubtaskHandle, SubmitError> {
        let mut handles = self.submit_subtasks([Subtask::new(task)])?;
        Ok(handles.remove(0))
    }

    /// Submits several subtasks at once (one host call); `depends_on` indexes refer to this
    /// submission. Either all are accepted or none.
    pub fn submit_subtasks(
        &mut self,
        subtasks: impl IntoIterator<Item = Subtask>,
    ) -> Result<Vec<SubtaskHandle>, SubmitError> {
        let subtasks: Vec<wit::Subtask> = subtasks
            .into_iter()
            .map(|s| s.inner)
            .collect::<Result<_, _>>()
            .map_err(SubmitError::Invalid)?;
        let handles = match &self.backend {
            Backend::Host => host::submit_subtasks(&subtasks)?,
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().submit(subtasks)?,
        };
        Ok(handles
            .into_iter()
            .map(|h| SubtaskHandle { index: h.index })
            .collect())
    }

    /// Sets this task's display name (shown in the console and by `tessera spans`).
    pub fn set_display(&mut self, display: impl Into<String>) {
        let display = display.into();
        match &self.backend {
            Backend::Host => host::set_display(&display),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().display = Some(display),
        }
    }

    /// Sets this task's output to `value` as JSON (replacing any set before). It is kept only
    /// if the attempt succeeds; the tasks that depend on this one read it with
    /// [`Context::output_of`], and `tessera jobs output` prints it. At most 1 MiB (or the
    /// server's `--max-value-kib`): return a reference (a URL) to larger results.
    pub fn set_output<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TaskError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| DataError::Encoding(format!("the output could not be serialized: {e}")))?;
        self.set_output_bytes(bytes);
        Ok(())
    }

    /// Sets this task's output to raw bytes (not necessarily JSON).
    pub fn set_output_bytes(&mut self, bytes: impl Into<Vec<u8>>) {
        self.output = Some(bytes.into());
    }

    /// Makes this task's output the output of `subtask` (submitted by this attempt) once it
    /// computes: how a fan-out hands its reduce step's result up, so that the job's result
    /// (its root task's output) is the reduce step's. Once set, it wins over any output set
    /// with [`Context::set_output`].
    pub fn set_output_from(&mut self, subtask: SubtaskHandle) -> Result<(), SubmitError> {
        let handle = wit::SubtaskHandle {
            index: subtask.index,
        };
        match &self.backend {
            Backend::Host => host::output_from(handle)?,
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().output_from(handle)?,
        }
        self.output = None;
        Ok(())
    }

    /// The subtasks this task depends on, as handles of its parent's attempt, in the order the
    /// parent listed them.
    pub fn dependencies(&self) -> Result<Vec<SubtaskHandle>, DataError> {
        let handles = match &self.backend {
            Backend::Host => host::dependencies()?,
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow().dependencies(),
        };
        Ok(handles
            .into_iter()
            .map(|h| SubtaskHandle { index: h.index })
            .collect())
    }

    /// The output of a subtask this task depends on, as raw bytes; `None` if it returned none.
    pub fn output_bytes_of(&self, dependency: SubtaskHandle) -> Result<Option<Vec<u8>>, DataError> {
        let handle = wit::SubtaskHandle {
            index: dependency.index,
        };
        match &self.backend {
            Backend::Host => Ok(host::output_of(handle)?),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow().output_of(handle),
        }
    }

    /// The output of a subtask this task depends on, decoded from JSON as `T`. A dependency
    /// that returned no output is a [`DataError::NoOutput`].
    pub fn output_of<T: DeserializeOwned>(
        &self,
        dependency: SubtaskHandle,
    ) -> Result<T, DataError> {
        let bytes = self
            .output_bytes_of(dependency)?
            .ok_or(DataError::NoOutput(dependency.index))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            DataError::Encoding(format!(
                "the output of dependency {} does not decode as {}: {e}",
                dependency.index,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The job cache: a key-value store every task of the job shares.
    pub fn cache(&self) -> Cache {
        Cache {
            backend: self.backend.clone(),
        }
    }

    /// A named progress indicator of the job, e.g. `ctx.progress("tiles").add_total(100)`.
    pub fn progress(&self, label: impl Into<String>) -> Progress {
        Progress {
            label: label.into(),
            backend: self.backend.clone(),
        }
    }
}

/// A named progress indicator; increments add up across all tasks of the job.
pub struct Progress {
    label: String,
    backend: Backend,
}

impl Progress {
    fn add(&self, done: u64, total: u64) {
        match &self.backend {
            Backend::Host => host::progress(&self.label, done, total),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().progress(&self.label, done, total),
        }
    }

    /// Adds `n` units to the total.
    pub fn add_total(&self, n: u64) -> &Self {
        self.add(0, n);
        self
    }

    /// Marks `n` units done.
    pub fn done(&self, n: u64) -> &Self {
        self.add(n, 0);
        self
    }
}

/// The job cache: keys (1 to 512 characters of text) to values (at most 1 MiB), shared by every
/// task of the job. Writes are kept only if the attempt succeeds; reads see what committed
/// before the attempt started, plus its own writes.
pub struct Cache {
    backend: Backend,
}

impl Cache {
    /// Stores `value` as JSON under `key`.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), DataError> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            DataError::Encoding(format!(
                "the value for {key:?} could not be serialized: {e}"
            ))
        })?;
        self.put_bytes(key, &bytes)
    }

    /// Stores raw bytes under `key`.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<(), DataError> {
        match &self.backend {
            Backend::Host => Ok(wit_cache::put(key, value)?),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().cache_write(key, Some(value.to_vec())),
        }
    }

    /// The JSON value under `key`, decoded as `T`; `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DataError> {
        match self.get_bytes(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                DataError::Encoding(format!(
                    "the cached value for {key:?} does not decode as {}: {e}",
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    /// The raw bytes under `key`; `None` if there are none.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, DataError> {
        match &self.backend {
            Backend::Host => Ok(wit_cache::get(key)?),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow().cache_get(key),
        }
    }

    /// Removes `key` (nothing if there is none).
    pub fn delete(&self, key: &str) -> Result<(), DataError> {
        match &self.backend {
            Backend::Host => Ok(wit_cache::delete(key)?),
            #[cfg(not(target_family = "wasm"))]
            Backend::Test(r) => r.borrow_mut().cache_write(key, None),
        }
    }

    /// Every key that begins with `prefix`, in byte order (read a page of 1,000 at a time).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, DataError> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let after = keys.last().cloned();
            let page = match &self.backend {
                Backend::Host => wit_cache::list(prefix, after.as_deref())?,
                #[cfg(not(target_family = "wasm"))]
                Backend::Test(r) => r.borrow().cache_list(prefix, after.as_deref()),
            };
            if page.is_empty() {
                return Ok(keys);
            }
            keys.extend(page);
        }
    }
}
