//! The [`Context`] a task's `execute` receives: its window on the host.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::tessera::task::host;
use crate::bindings::tessera::task::types as wit;
use crate::{Level, SubmitError, Subtask, SubtaskHandle, Task};

/// The running task's handle on the host: logging, sleeping, subtasks, display, progress.
pub struct Context {
    backend: Backend,
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
        }
    }

    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn recording(
        recorder: std::rc::Rc<std::cell::RefCell<crate::testing::Recorder>>,
    ) -> Self {
        Context {
            backend: Backend::Test(recorder),
        }
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

    /// Writes a log line with structured fields; the [`info!`](crate::info) family is shorter.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, String)]) {
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
