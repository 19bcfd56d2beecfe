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
