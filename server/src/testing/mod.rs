//! Test support for the server's and the CLI's tests and benchmarks (feature `testing`): rows
//! in any state (`factory`), the runner protocol by hand (`protocol`), a fresh PostgreSQL
//! database per test (`postgres`), and the store as one tenant sees it (`AsDefault`). Guest
//! components are built by `tessera-testkit`, which knows nothing of the server.

pub mod factory;
pub mod postgres;
pub mod protocol;

pub use crate::store::testing::{AsDefault, StoreRef};
