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
    /// Bytes of output each no-op returns (0: none), for the cost of outputs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_bytes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Task for FanOut {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let noop = Noop {
            output_bytes: self.output_bytes,
        };
        ctx.submit_subtasks((0..self.count).map(|_| Subtask::new(&noop)))?;
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
        ctx.submit_subtasks((0..self.groups).map(|_| {
            Subtask::new(&FanOut {
                count: self.each,
                output_bytes: 0,
            })
        }))?;
        Ok(())
    }
}

/// Does nothing (but return `output_bytes` of output): the orchestration overhead of one task.
#[derive(Serialize, Deserialize)]
pub struct Noop {
    /// Bytes of output to return: a JSON string of that length (0: no output).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_bytes: u32,
}

impl Task for Noop {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        if self.output_bytes > 0 {
            let body = "x".repeat((self.output_bytes as usize).saturating_sub(2));
            ctx.set_output(&body)?;
        }
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
        let run = TestContext::new().run(&FanOut {
            count: 7,
            output_bytes: 0,
        });
        assert_eq!(run.subtasks.len(), 7);
        assert!(run.subtasks.iter().all(|s| s.identifier.name == "Noop"));
        assert!(
            run.subtasks
                .iter()
                .all(|s| s.input == serde_json::json!({}))
        );
    }

    #[test]
    fn no_ops_return_outputs_of_the_size_asked_for() {
        let run = TestContext::new().run(&FanOut {
            count: 2,
            output_bytes: 1024,
        });
        assert_eq!(
            run.subtasks[1].input,
            serde_json::json!({"output_bytes": 1024})
        );
        let noop = TestContext::new().run(&Noop { output_bytes: 1024 });
        assert_eq!(noop.output.unwrap().len(), 1024);
        assert!(
            TestContext::new()
                .run(&Noop { output_bytes: 0 })
                .output
                .is_none()
        );
    }

    #[test]
    fn a_fan_out_past_the_subtask_limit_fails_its_attempt() {
        let run = TestContext::new().max_subtasks(5).run(&FanOut {
            count: 6,
            output_bytes: 0,
        });
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
