//! A hostile component written against the WIT directly (the SDK would not let it misbehave
//! here): its `task-types` never returns, so loading it must give up quickly.

wit_bindgen::generate!({
    world: "task-component",
    path: "../../../wit",
});

use exports::tessera::task::tasks::Guest;
use tessera::task::types::{TaskError, TaskIdentifier};

struct SlowLoad;

impl Guest for SlowLoad {
    fn task_types() -> Vec<TaskIdentifier> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    fn execute(_identifier: TaskIdentifier, _input: String) -> Result<Option<Vec<u8>>, TaskError> {
        Ok(None)
    }
}

export!(SlowLoad);
