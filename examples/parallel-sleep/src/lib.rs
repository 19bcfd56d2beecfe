//! The seed scenario: a root task that fans out `count` sleeps.
//!
//! Build: `cargo build --release -p parallel-sleep --target wasm32-wasip2`
//! → `target/wasm32-wasip2/release/parallel_sleep.wasm`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_guest::{Context, Subtask, Task, TaskError, export_tasks, info};

/// The root task: submits `count` × [`SleepTask`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ParallelSleepWorkflow {
    /// How many sleep tasks to submit.
    pub count: u32,
    /// How long each sleeps, in seconds.
    pub seconds: f64,
}

impl Task for ParallelSleepWorkflow {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return Err(TaskError::new(format!(
                "seconds must be a non-negative number, got {}",
                self.seconds
            ))
            .with_code("bad-input")
            .permanent());
        }
        info!(
            ctx,
            count = self.count,
            seconds = self.seconds,
            "Submitting sleep subtasks"
        );
        ctx.progress("sleeps").add_total(u64::from(self.count));
        let seconds = self.seconds;
        ctx.submit_subtasks(
            (0..self.count).map(|index| Subtask::new(&SleepTask { index, seconds })),
        )?;
        Ok(())
    }
}

/// One sleep, standing in for real work (downloading a scene, processing a tile, …).
#[derive(Debug, Serialize, Deserialize)]
pub struct SleepTask {
    /// Which of the workflow's sleeps this is.
    pub index: u32,
    /// How long to sleep, in seconds.
    pub seconds: f64,
}

impl Task for SleepTask {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set_display(format!("SleepTask({})", self.index));
        info!(ctx, index = self.index, "Starting sleep task");
        let seconds = if self.seconds.is_finite() {
            self.seconds.max(0.0)
        } else {
            0.0
        };
        ctx.sleep(Duration::from_secs_f64(seconds));
        info!(ctx, index = self.index, "Finished sleep task");
        ctx.progress("sleeps").done(1);
        Ok(())
    }
}

export_tasks!(ParallelSleepWorkflow, SleepTask);
