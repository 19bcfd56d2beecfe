//! What the store does, decided once in plain Rust over the rows involved: no SQL here, and no
//! database in its tests. [`super::core`] reads the rows through a driver, asks here, and hands
//! the answer back to the driver to apply.
//!
//! One module per entity, each with its decisions and their tests.

mod components;
mod jobs;
mod leases;
mod logs;
mod reports;
mod runners;
mod tenants;
#[cfg(test)]
mod testing;

pub(crate) use components::*;
pub(crate) use jobs::*;
pub use leases::*;
pub use logs::*;
pub(crate) use reports::*;
pub(crate) use runners::*;
pub use tenants::*;
