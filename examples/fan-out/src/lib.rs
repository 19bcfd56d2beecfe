//! Benchmark workloads: W2, a root task fanning out `count` no-op subtasks, and the million,
//! a root fanning out `groups` × [`FanOut`] of `each`.
//!
//! Build: `cargo build --release -p fan-out --target wasm32-wasip2`.

use serde::{Deserialize, Serialize};
use tessera_guest::{Context, Subtask, Task, TaskError, export_tasks};

/// Submits `count` × [`Noop`].
#[derive(Serialize, Deserialize)]
pub struct FanOut {
    /// How many no-op subtasks.
    pub count: u32,
}

impl Task for FanOut {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        ctx.submit_subtasks((0..self.count).map(|_| Subtask::new(&Noop {})))?;
        Ok(())
    }
}

/// Submits `groups` × [`FanOut`] of `each` no-ops (bench/million.sh: 100 × 10,000).
#[derive(Serialize, Deserialize)]
pub struct Groups {
    /// How many groups.
    pub groups: u32,
    /// No-op subtasks per group.
    pub each: u32,
}

impl Task for Groups {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        ctx.submit_subtasks((0..self.groups).map(|_| Subtask::new(&FanOut { count: self.each })))?;
        Ok(())
    }
}

/// Does nothing: the orchestration overhead of one task.
#[derive(Serialize, Deserialize)]
pub struct Noop {}

impl Task for Noop {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

export_tasks!(FanOut, Groups, Noop);

#[cfg(test)]
mod tests {
    use tessera_guest::SubmitError;
    use tessera_guest::testing::TestContext;

    use super::*;

    #[test]
    fn groups_fan_out_to_fan_outs_of_no_ops() {
        let run = TestContext::new().run(&Groups { groups: 3, each: 7 });
        assert!(run.result.is_ok());
        assert_eq!(run.subtasks.len(), 3);
        assert!(
            run.subtasks.iter().all(
                |s| s.identifier.name == "FanOut" && s.input == serde_json::json!({"count": 7})
            )
        );
        let run = TestContext::new().run(&FanOut { count: 7 });
        assert_eq!(run.subtasks.len(), 7);
        assert!(run.subtasks.iter().all(|s| s.identifier.name == "Noop"));
    }

    #[test]
    fn a_fan_out_past_the_subtask_limit_fails_its_attempt() {
        let run = TestContext::new().max_subtasks(5).run(&FanOut { count: 6 });
        let error = run.result.unwrap_err();
        assert_eq!(error.message(), SubmitError::TooMany(5).to_string());
        assert_eq!(
            error.code(),
            Some("too-many-subtasks"),
            "a refusal carries its code"
        );
        assert!(
            run.subtasks.is_empty(),
            "nothing of a refused submission is kept"
        );
    }
}
