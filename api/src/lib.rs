//! Tessera's wire types, shared by the runner host, the server and the CLI.
//!
//! Everything here is plain data with serde derives: no I/O, no async runtime.

mod identifier;
mod level;
mod subtask;

pub use identifier::{IdentifierError, TaskIdentifier, Version};
pub use level::Level;
pub use subtask::{ProgressUpdate, SubtaskSpec};
