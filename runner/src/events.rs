//! What a runner tells the person running it, through a trait: the CLI prints, a test
//! collects, an embedding application logs. Nothing in the runner prints by itself.

use std::time::Duration;

use tessera_api::{ClaimedTask, TaskIdentifier};
use tessera_host::Outcome;

use crate::leases::Stop;
use crate::outbox::Notice;

/// Who a runner is, once it is connected.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Its id.
    pub runner_id: String,
    /// Whether it serves the components deployed to the server (a fleet runner).
    pub deployed: bool,
    /// The task types it serves (none for a fleet runner).
    pub identifiers: Vec<TaskIdentifier>,
    /// Its cluster.
    pub cluster: String,
    /// The server it talks to.
    pub server: String,
    /// Attempts at once.
    pub concurrency: u32,
    /// Whose tasks it claims (`tenant acme`, `every tenant`), on a server with keys.
    pub tenant: Option<String>,
}

/// What a runner reports as it goes. Every method has a default that does nothing.
pub trait Events: Send + Sync + 'static {
    /// Connected and about to claim.
    fn serving(&self, _serving: &Serving) {}
    /// An attempt ended on its own: computed or failed.
    fn finished(&self, _task: &ClaimedTask, _outcome: &Outcome, _took: Duration) {}
    /// An attempt was stopped: its job was canceled, its lease was lost, or it was abandoned.
    fn stopped(&self, _task: &ClaimedTask, _why: Stop) {}
    /// Something about reports or the server worth knowing.
    fn notice(&self, _notice: &Notice) {}
    /// A line about the runner itself (stopping, grace over, out of work).
    fn status(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Events for Silent {}
