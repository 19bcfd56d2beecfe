//! Test support: the store as a server without tenants uses it. Every [`Store`] method takes
//! the caller's reach; tests of one tenant read better without it, so [`AsDefault`] answers
//! the tenant-taking methods for the `default` tenant (and, for the runner protocol and the
//! listings, for every tenant, as an operator's runner would), and everything else through
//! the store itself.

use std::sync::Arc;

use tessera_api::{
    ClaimRequest, ClaimedTask, Component, ComponentList, Deployed, Job, JobFilter, JobPage,
    LeaseRef, LeaseStatus, Outlook, OutlookRequest, ReportResult, RunnerList, SubmitJob,
    TaskReport,
};

use super::{DEFAULT_TENANT, Reach, Store, StoreError};

/// A store seen by the `default` tenant's operator (see the module).
#[derive(Clone, Copy)]
pub struct AsDefault<'a>(pub &'a dyn Store);

impl std::ops::Deref for AsDefault<'_> {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

const OWN: Reach = Reach::Tenant(DEFAULT_TENANT);

impl AsDefault<'_> {
    /// [`Store::submit`] for the default tenant.
    pub async fn submit(&self, job: &SubmitJob, now: u64) -> Result<Job, StoreError> {
        self.0.submit(DEFAULT_TENANT, job, now).await
    }

    /// [`Store::jobs`] of every tenant.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        self.0.jobs(Reach::All, filter).await
    }

    /// [`Store::claim`] of the default tenant's tasks, without a key.
    pub async fn claim(
        &self,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        self.0.claim(OWN, None, request, now).await
    }

    /// [`Store::report`] on any tenant's tasks.
    pub async fn report(
        &self,
        runner_id: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError> {
        self.0.report(Reach::All, runner_id, reports, now).await
    }

    /// [`Store::extend`] on any tenant's tasks.
    pub async fn extend(
        &self,
        runner_id: &str,
        leases: &[LeaseRef],
        now: u64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        self.0.extend(Reach::All, runner_id, leases, now).await
    }

    /// [`Store::outlook`] of the default tenant.
    pub async fn outlook(&self, request: &OutlookRequest) -> Result<Outlook, StoreError> {
        self.0.outlook(OWN, request).await
    }

    /// [`Store::runners`] of every tenant.
    pub async fn runners(&self, now: u64) -> Result<RunnerList, StoreError> {
        self.0.runners(Reach::All, now).await
    }

    /// [`Store::deploy`] for the default tenant.
    pub async fn deploy(
        &self,
        component: &Component,
        bytes: Arc<[u8]>,
    ) -> Result<Deployed, StoreError> {
        self.0.deploy(DEFAULT_TENANT, component, bytes).await
    }

    /// [`Store::components`] of every tenant.
    pub async fn components(&self, all: bool) -> Result<ComponentList, StoreError> {
        self.0.components(Reach::All, all).await
    }

    /// [`Store::component`] of any tenant.
    pub async fn component(&self, reference: &str) -> Result<Component, StoreError> {
        self.0.component(Reach::All, reference).await
    }

    /// [`Store::component_bytes`] of any tenant.
    pub async fn component_bytes(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        self.0.component_bytes(Reach::All, digest).await
    }

    /// [`Store::undeploy`] of any tenant.
    pub async fn undeploy(&self, reference: &str, now: u64) -> Result<ComponentList, StoreError> {
        self.0.undeploy(Reach::All, reference, now).await
    }
}

/// What a test helper takes: the store itself, or the store as the default tenant sees it.
pub trait StoreRef {
    /// The store.
    fn store(&self) -> &dyn Store;

    /// The store as the default tenant sees it.
    fn as_default(&self) -> AsDefault<'_> {
        AsDefault(self.store())
    }
}

impl StoreRef for dyn Store {
    fn store(&self) -> &dyn Store {
        self
    }
}

impl StoreRef for AsDefault<'_> {
    fn store(&self) -> &dyn Store {
        self.0
    }
}
