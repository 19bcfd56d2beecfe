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

#[cfg(test)]
mod tests {
    use tessera_guest::testing::TestContext;

    use super::*;

    #[test]
    fn the_workflow_submits_one_sleep_per_count() {
        let run = TestContext::new().run(&ParallelSleepWorkflow {
            count: 3,
            seconds: 1.5,
        });
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert_eq!(run.subtasks.len(), 3);
        assert_eq!(run.subtasks[2].identifier, SleepTask::identifier());
        assert_eq!(
            run.subtasks[2].input,
            serde_json::json!({"index": 2, "seconds": 1.5})
        );
        assert_eq!(run.progress["sleeps"], (0, 3));
        assert_eq!(run.logs[0].message, "Submitting sleep subtasks");
        assert_eq!(run.logs[0].fields["count"], "3");
    }

    #[test]
    fn bad_input_is_a_permanent_error() {
        let run = TestContext::new().run(&ParallelSleepWorkflow {
            count: 1,
            seconds: -1.0,
        });
        let error = run.result.unwrap_err();
        assert!(error.is_permanent());
        assert_eq!(error.code(), Some("bad-input"));
        assert!(run.subtasks.is_empty());
    }

    #[test]
    fn a_sleep_logs_around_its_sleep_and_names_itself() {
        let run = TestContext::new().attempt(2).run(&SleepTask {
            index: 4,
            seconds: 60.0,
        });
        assert!(run.result.is_ok());
        assert_eq!(
            run.slept,
            Duration::from_secs(60),
            "slept instantly, counted"
        );
        let messages: Vec<&str> = run.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["Starting sleep task", "Finished sleep task"]);
        assert_eq!(run.display.as_deref(), Some("SleepTask(4)"));
        assert_eq!(run.progress["sleeps"], (1, 0));
    }
}
