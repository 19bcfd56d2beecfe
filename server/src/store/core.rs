//! The store over any driver: opens a transaction, reads the rows a decision needs, asks
//! [`super::decide`], applies the answer through the driver's set-based primitives, commits,
//! and retries the whole transaction when the database reports contention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tessera_api::{
    CacheEntry, CachePage, CacheQuery, ClaimRequest, ClaimedTask, Component, ComponentList,
    Dependency, DependencyList, Deployed, Job, JobFilter, JobPage, LeaseRef, LeaseStatus, LogLine,
    LogPage, LogQuery, Outlook, OutlookRequest, ReportResult, RunnerInfo, RunnerList, Span,
    SpanPage, SpanQuery, SubmitJob, Task, TaskPage, TaskQuery, TaskReport, TaskState, UnservedList,
};

use super::decide::{self, Tallies};
use super::driver::{ClaimParams, ClaimedRow, Driver, Mode, NewJob, NewTask, Tx, Which};
use super::encode::{id_bytes, lease_ms, nanos, new_id, path_index, stored_input};
use super::pins::{MAX_PINNED_TYPES, Pins};
use super::{CommitListener, Scope};
use super::{
    KeyRecord, Owned, Reach, Store, StoreConfig, StoreError, TaskOutput, TenantId, check_name,
    page_size,
};

/// A claim's digests if they name one well-formed digest per identifier, else none: they only
/// label spans, so a runner that garbles them loses the labels, not its claim.
fn paired_digests(request: &ClaimRequest) -> &[String] {
    let paired = request.digests.len() == request.identifiers.len()
        && request
            .digests
            .iter()
            .all(|d| tessera_api::component::is_digest(d));
    if paired { &request.digests } else { &[] }
}

/// Which components a reference names: a digest, else a name.
fn component_ref(reference: &str) -> Which<'_> {
    if tessera_api::component::is_digest(reference) {
        Which::Digest(reference)
    } else {
        Which::Name(reference)
    }
}

/// Why a task in `state` (not computed) has no output, and whether it may still get one.
fn not_computed(state: TaskState) -> String {
    match state {
        TaskState::Queued | TaskState::Running => {
            format!("{state}: it has not computed yet (a task's output is kept when it computes)")
        }
        _ => format!(
            "{state}: it will not compute unless its job is retried (tessera jobs retry JOB)"
        ),
    }
}

/// How often a transaction that met contention is tried in all.
const TRIES: u32 = 5;

/// How often a runner's claims are recorded in the runners table, at most.
const RECORD_RUNNER_EVERY: u64 = 10_000_000_000;
/// Runners not seen for this long are forgotten.
const FORGET_RUNNER_AFTER: u64 = 24 * 3600 * 1_000_000_000;

/// The job store over driver `D`.
pub struct Core<D: Driver> {
    driver: Arc<D>,
    config: StoreConfig,
    /// When this server last recorded each runner, and a fingerprint of what it asked for.
    recorded: Arc<std::sync::Mutex<HashMap<String, (u64, u64)>>>,
    /// Whose turn it is to be claimed from first when a claim reaches every tenant.
    turn: Arc<std::sync::atomic::AtomicUsize>,
    /// The tenants (weights, quotas) as last read, and when.
    tenant_table: Arc<std::sync::Mutex<Option<(Instant, TenantTable)>>>,
    /// Each tenant's queued tasks as this server last counted them, and when.
    queued_seen: Arc<std::sync::Mutex<HashMap<TenantId, (Instant, u64)>>>,
    /// Told of each commit that announced something ([`Store::on_commit`]).
    listener: Arc<std::sync::OnceLock<Arc<dyn CommitListener>>>,
}

/// Every tenant by number.
type TenantTable = Arc<HashMap<TenantId, tessera_api::Tenant>>;

/// How long the tenants read from the database are trusted: a quota or weight an operator
/// changes through another server takes effect within this long.
const TENANT_TTL: Duration = Duration::from_secs(2);

impl<D: Driver> Clone for Core<D> {
    fn clone(&self) -> Self {
        Core {
            driver: self.driver.clone(),
            config: self.config.clone(),
            recorded: self.recorded.clone(),
            turn: self.turn.clone(),
            tenant_table: self.tenant_table.clone(),
            queued_seen: self.queued_seen.clone(),
            listener: self.listener.clone(),
        }
    }
}

/// Runs `$body` (an expression using the open transaction `$tx`, ending in a `Result`) in one
/// transaction, committing on success and rolling back on error; tries again on contention.
/// Once it has committed, the listener hears what it announced ([`Tx::notify`]): the one place
/// this server's long polls learn of a change.
macro_rules! transact {
    ($core:expr, $mode:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut $tx = $core.driver.begin($mode).await?;
            let result: Result<_, StoreError> = async { $body }.await;
            let result = match result {
                Ok(value) => {
                    let announced = $tx.notified();
                    let committed = $tx.commit().await.map(|()| value);
                    if committed.is_ok() {
                        $core.committed(&announced);
                    }
                    committed
                }
                Err(e) => {
                    $tx.rollback().await;
                    Err(e)
                }
            };
            match result {
                Err(e) if e.is_transient() && tries < TRIES => {
                    tracing::debug!("retrying a store transaction after: {e}");
                    tokio::time::sleep(backoff(tries)).await;
                }
                other => break other,
            }
        }
    }};
}

/// The pause before try `tries + 1`: a few milliseconds, doubling, with jitter.
fn backoff(tries: u32) -> Duration {
    let ms = 5u64 << tries.min(6);
    Duration::from_millis(ms / 2 + rand::random::<u64>() % ms.max(1))
}

/// Two lists of keyed spans, each in (start, key) order, as one in that order.
fn merge_spans(a: Vec<(i64, Span)>, b: Vec<(i64, Span)>) -> Vec<(i64, Span)> {
    let order = |(key, s): &(i64, Span)| (s.start_time_unix_nano, *key);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if order(y) < order(x) => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(row) => out.push(row),
            None => return out,
        }
    }
}

impl<D: Driver> Core<D> {
    /// A store over `driver`.
    pub(crate) fn new(driver: D, config: StoreConfig) -> Self {
        Core {
            driver: Arc::new(driver),
            config,
            recorded: Default::default(),
            turn: Default::default(),
            tenant_table: Default::default(),
            queued_seen: Default::default(),
            listener: Default::default(),
        }
    }

    /// Tells the listener what a committed transaction announced, once each.
    fn committed(&self, scopes: &[Scope]) {
        if let Some(listener) = self.listener.get() {
            for scope in scopes {
                listener.committed(scope);
            }
        }
    }

    /// Runs `op` where the driver wants its calls to run.
    async fn run<R, F>(&self, op: impl FnOnce(Self) -> F) -> R
    where
        R: Send + 'static,
        F: std::future::Future<Output = R> + Send + 'static,
    {
        self.driver.run(Box::pin(op(self.clone()))).await
    }

    async fn load_job(tx: &mut D::Tx, id: &str) -> Result<Job, StoreError> {
        tx.load_job(id).await?.ok_or_else(|| StoreError::NotFound {
            what: "job",
            id: id.to_string(),
        })
    }

    /// Every tenant with its weight and quotas, read at most every [`TENANT_TTL`].
    async fn tenants_in(&self, tx: &mut D::Tx) -> Result<TenantTable, StoreError> {
        if let Some((at, table)) = &*self.tenant_table.lock().unwrap()
            && at.elapsed() < TENANT_TTL
        {
            return Ok(table.clone());
        }
        let table: TenantTable = Arc::new(tx.tenants(Reach::All).await?.into_iter().collect());
        *self.tenant_table.lock().unwrap() = Some((Instant::now(), table.clone()));
        Ok(table)
    }

    /// How many more tasks `tenant` may queue under `quota`, read exactly when queuing
    /// `adding` more could come near it; `None` when it is far below: the count this server
    /// read less than a second ago, with `adding` and a margin of a tenth of the quota (at
    /// least 1,000 tasks), stays under it. So a submit or a fan-out does not sum a tenant's
    /// active jobs every time; near the quota the check is exact.
    async fn queued_room(
        &self,
        tx: &mut D::Tx,
        tenant: TenantId,
        quota: u64,
        adding: u64,
    ) -> Result<Option<u64>, StoreError> {
        let margin = (quota / 10).max(1_000);
        let seen = self.queued_seen.lock().unwrap().get(&tenant).copied();
        if let Some((at, queued)) = seen
            && at.elapsed() < TENANT_TTL / 2
            && queued.saturating_add(adding).saturating_add(margin) < quota
        {
            return Ok(None);
        }
        let queued = tx
            .tenant_usage(Reach::Tenant(tenant))
            .await?
            .first()
            .map_or(0, |l| l.queued);
        self.queued_seen
            .lock()
            .unwrap()
            .insert(tenant, (Instant::now(), queued));
        Ok(Some(quota.saturating_sub(queued)))
    }

    /// A tenant's quotas (the defaults for one not (yet) read).
    fn quotas_of(table: &TenantTable, tenant: TenantId) -> tessera_api::Quotas {
        table.get(&tenant).map(|t| t.quotas).unwrap_or_default()
    }

    /// A tenant's name for messages.
    fn name_of(table: &TenantTable, tenant: TenantId) -> String {
        table
            .get(&tenant)
            .map_or_else(|| tenant.to_string(), |t| t.name.clone())
    }

    /// Fails the plan's failing jobs and cancels their queued tasks with the reason, so that a
    /// failed job is visibly over (its tasks would never be handed out).
    async fn fail_jobs(
        tx: &mut D::Tx,
        plan: &mut decide::ReportPlan,
        now: u64,
    ) -> Result<(), StoreError> {
        tx.fail_jobs(&plan.failed_jobs).await?;
        for (job, why) in &plan.not_run {
            let n = tx.cancel_queued(job, now, why).await?;
            plan.tallies
                .shift(job, TaskState::Queued, TaskState::Canceled, n);
        }
        Ok(())
    }

    async fn do_submit(
        &self,
        tenant: TenantId,
        job: &SubmitJob,
        now: u64,
    ) -> Result<Job, StoreError> {
        let cluster = job.cluster.clone().unwrap_or_else(|| "default".into());
        transact!(self, Mode::Write, |tx| {
            let table = self.tenants_in(&mut tx).await?;
            let quota = Self::quotas_of(&table, tenant).queued_tasks;
            if let Some(0) = self.queued_room(&mut tx, tenant, quota, 1).await? {
                let name = Self::name_of(&table, tenant);
                return Err(StoreError::Quota(format!(
                    "tenant {name} has as many tasks queued as its quota (queued_tasks: {quota}) \
                     allows; \
                     submit again when some have run, or ask the operator to raise it \
                     (tessera tenants set-quota {name} --queued-tasks N)"
                )));
            }
            let id = new_id();
            let pins = Pins::of(
                &tx.components(Reach::Tenant(tenant), &Which::Deployed)
                    .await?,
            );
            let root = NewTask {
                id: new_id(),
                job_id: id.clone(),
                tenant,
                parent_id: None,
                depth: 0,
                path: String::new(),
                identifier: job.root.identifier.clone(),
                input: serde_json::to_string(&job.root.input).expect("JSON values serialize"),
                display: job.root.display.clone(),
                cluster: cluster.clone(),
                state: TaskState::Queued,
                depends_on: vec![],
                max_retries: job.root.max_retries,
                created_at: now,
                finished_at: None,
                component: pins.resolve(&job.root.identifier).map(str::to_string),
            };
            tx.insert_tasks(std::slice::from_ref(&root)).await?;
            let new_job = NewJob {
                id: id.clone(),
                tenant,
                pins: pins.encode(),
                name: job.name.clone(),
                cluster: cluster.clone(),
                root_id: root.id,
                submitted_at: now,
            };
            tx.insert_job(&new_job).await?;
            let mut tallies = Tallies::default();
            tallies.add(&id, TaskState::Queued, 1);
            tx.add_job_tallies(&tallies.rows()).await?;
            tx.notify(&Scope::Clusters(vec![super::scope::key(tenant, &cluster)]))
                .await?;
            Self::load_job(&mut tx, &id).await
        })
    }

    async fn do_report(
        &self,
        reach: Reach,
        runner: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError> {
        let mut ids: Vec<&str> = reports.iter().map(|r| r.task_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        transact!(self, Mode::Write, |tx| {
            let mut rows = tx.lock_tasks(&ids).await?;
            // A fleet runner (a key reaching every tenant) reaches only the tasks its key holds:
            // a report on any other reads like one on a task that does not exist, so that it
            // learns nothing of other tenants' work.
            rows.retain(|r| {
                reach.allows(r.tenant)
                    && (reach != Reach::All
                        || decide::runner_key(runner).is_none()
                        || r.runner.as_deref().and_then(decide::runner_key)
                            == decide::runner_key(runner))
            });
            let growing = decide::jobs_growing(reports, &rows);
            let growth = if growing.is_empty() {
                Default::default()
            } else {
                tx.lock_job_totals(&growing).await?
            };
            let totals = growth.iter().map(|(j, g)| (j.clone(), g.total)).collect();
            // How many more tasks each growing job's tenant may queue.
            let mut room = HashMap::new();
            if !growing.is_empty() {
                let table = self.tenants_in(&mut tx).await?;
                let mut tenants: Vec<TenantId> = rows
                    .iter()
                    .filter(|r| growing.contains(&r.job_id.as_str()))
                    .map(|r| r.tenant)
                    .collect();
                tenants.sort_unstable();
                tenants.dedup();
                for tenant in tenants {
                    let quota = Self::quotas_of(&table, tenant).queued_tasks;
                    let adding = decide::subtasks_of(reports, &rows, tenant);
                    if let Some(left) = self.queued_room(&mut tx, tenant, quota, adding).await? {
                        room.insert(tenant, (left, quota));
                    }
                }
            }
            let mut plan = decide::reports(
                reports,
                runner,
                &rows,
                &totals,
                &room,
                &self.config,
                now,
                new_id,
            );
            if !plan.changed() {
                return Ok(plan.results);
            }
            decide::pin_components(&mut plan.tasks, &growth)?;
            tx.insert_tasks(&plan.tasks).await?;
            tx.set_states(&plan.states).await?;
            Self::fail_jobs(&mut tx, &mut plan, now).await?;
            tx.add_job_tallies(&plan.tallies.rows()).await?;
            tx.insert_logs(&plan.logs).await?;
            tx.add_progress(&plan.progress).await?;
            tx.put_outputs(&plan.outputs).await?;
            if !plan.cache.is_empty() {
                // One new cache version per job this batch writes to.
                let mut jobs: Vec<&str> = plan.cache.iter().map(|w| w.job_id.as_str()).collect();
                jobs.sort_unstable();
                jobs.dedup();
                let seqs = tx.next_cache_seqs(&jobs).await?;
                let mut writes = std::mem::take(&mut plan.cache);
                for w in &mut writes {
                    w.seq = seqs.get(&w.job_id).copied().unwrap_or(1);
                }
                tx.write_cache(&writes).await?;
            }
            let scope = plan.scope();
            // The leaves computed without subtasks completed with their transition; their
            // parents, once their last child has, complete here, level by level.
            let mut completed = std::mem::take(&mut plan.completed);
            while !completed.is_empty() {
                let ids: Vec<String> = completed.iter().map(|c| c.id.clone()).collect();
                tx.release_dependents(&ids).await?;
                let (jobs, parents) = decide::upwards(&completed);
                tx.complete_jobs(&jobs, now).await?;
                // No attempt of a completed job reads old cache versions any more.
                tx.compact_cache(&jobs).await?;
                let parents = if parents.is_empty() {
                    Vec::new()
                } else {
                    tx.close_children(&parents).await?
                };
                let frontier = decide::ready_parents(&parents);
                completed = if frontier.is_empty() {
                    Vec::new()
                } else {
                    tx.set_completed(&frontier).await?
                };
            }
            tx.notify(&scope).await?;
            Ok(plan.results)
        })
    }

    /// The runner to record with this claim, if it is due: not recorded by this server for
    /// [`RECORD_RUNNER_EVERY`], or asking for something else than last time.
    fn runner_due(&self, request: &ClaimRequest, now: u64) -> Option<RunnerInfo> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &request.cluster,
            &request.identifiers,
            request.deployed,
            &request.host,
            request.concurrency,
            &request.wasmtime,
        )
            .hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(at, seen)) = recorded.get(&request.runner_id)
            && seen == fingerprint
            && now.saturating_sub(at) < RECORD_RUNNER_EVERY
        {
            return None;
        }
        if recorded.len() >= 100_000 {
            recorded.retain(|_, (at, _)| now.saturating_sub(*at) < RECORD_RUNNER_EVERY);
        }
        recorded.insert(request.runner_id.clone(), (now, fingerprint));
        Some(RunnerInfo {
            id: request.runner_id.clone(),
            cluster: request.cluster.clone(),
            identifiers: request.identifiers.clone(),
            first_seen: now,
            last_seen: now,
            deployed: request.deployed,
            host: request
                .host
                .as_deref()
                .map(|h| tessera_api::limits::cut(h, 200)),
            concurrency: request.concurrency,
            wasmtime: request.wasmtime.clone(),
            running: 0,
        })
    }

    async fn do_claim(
        &self,
        reach: Reach,
        key: Option<&str>,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let record = self.runner_due(request, now);
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut params = ClaimParams {
            tenant: reach.tenant().unwrap_or(super::DEFAULT_TENANT),
            runner_id: &request.runner_id,
            cluster: &request.cluster,
            identifiers: &request.identifiers,
            digests: paired_digests(request),
            deployed: request.deployed,
            max: request.max,
            now,
            expires: now.saturating_add(nanos(self.config.lease)),
        };
        let (rows, table) = transact!(self, Mode::Write, |tx| {
            // Held until the transaction ends: a revocation waits for this claim, or this
            // claim sees it.
            if let Some(key) = key
                && !tx.lock_key(key).await?
            {
                return Err(StoreError::Revoked);
            }
            if let Some(runner) = &record {
                let forget = now.saturating_sub(FORGET_RUNNER_AFTER);
                tx.record_runner(runner, reach.tenant(), forget).await?;
            }
            let table = self.tenants_in(&mut tx).await?;
            let mut claimants = Vec::new();
            match reach {
                Reach::Tenant(t) => {
                    let cap = Self::quotas_of(&table, t).running;
                    // The running count is read only when a quota caps it.
                    let running = match cap {
                        Some(_) => tx
                            .tenant_usage(Reach::Tenant(t))
                            .await?
                            .first()
                            .map_or(0, |l| l.running),
                        None => 0,
                    };
                    claimants.push(decide::Claimant {
                        tenant: t,
                        weight: 1,
                        running,
                        room: cap.map(|c| c.saturating_sub(running)),
                    });
                }
                // A shared fleet: every tenant with queued tasks, by weighted fair share of
                // the slots running now; ties take turns.
                Reach::All => {
                    for load in tx.tenant_usage(Reach::All).await? {
                        if load.queued == 0 {
                            continue;
                        }
                        let quotas = Self::quotas_of(&table, load.tenant);
                        claimants.push(decide::Claimant {
                            tenant: load.tenant,
                            weight: table.get(&load.tenant).map_or(1, |t| t.weight),
                            running: load.running,
                            room: quotas.running.map(|c| c.saturating_sub(load.running)),
                        });
                    }
                    let len = claimants.len().max(1);
                    claimants.rotate_left(turn % len);
                }
            }
            let mut rows: Vec<(TenantId, ClaimedRow)> = Vec::new();
            // Each round shares what is left among the tenants that may still have work; a
            // tenant that yields less than its share has no more, and leaves the round.
            loop {
                let left = request.max.saturating_sub(rows.len() as u32);
                let shares = decide::shares(left, &claimants);
                if left == 0 || shares.is_empty() {
                    break;
                }
                for (tenant, n) in shares {
                    params.tenant = tenant;
                    params.max = n;
                    let got = tx.claim_eligible(&params).await?;
                    let claimant = claimants
                        .iter_mut()
                        .find(|c| c.tenant == tenant)
                        .expect("shares name claimants");
                    claimant.running += got.len() as u64;
                    claimant.room = claimant.room.map(|r| r.saturating_sub(got.len() as u64));
                    if (got.len() as u32) < n {
                        claimant.room = Some(0);
                    }
                    rows.extend(got.into_iter().map(|r| (tenant, r)));
                }
            }
            let mut tallies = Tallies::default();
            for (_, r) in &rows {
                tallies.shift(&r.job_id, TaskState::Queued, TaskState::Running, 1);
                tallies.started(&r.job_id, now);
            }
            tx.add_job_tallies(&tallies.rows()).await?;
            if !rows.is_empty() {
                tx.notify(&Scope::Nothing).await?;
            }
            Ok((rows, table))
        })?;
        let lease_ms = lease_ms(&self.config);
        Ok(rows
            .into_iter()
            .filter_map(|(tenant, r)| {
                // A row whose input cannot be read is not handed out (its lease runs out, and
                // after --max-lost such expiries it fails, saying so); the rest of the batch is.
                let input = match stored_input(&r.task_id, &r.input) {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::error!("not handing out task {}: {e}", r.task_id);
                        return None;
                    }
                };
                let quotas = Self::quotas_of(&table, tenant);
                Some(ClaimedTask {
                    task_id: r.task_id,
                    job_id: r.job_id,
                    identifier: r.identifier,
                    display: r.display,
                    input,
                    attempt: r.attempt,
                    lease: r.lease,
                    lease_ms,
                    component: r.component,
                    cache_seq: r.cache_seq,
                    memory_mib: quotas.memory_mib,
                    deadline_ms: quotas.deadline_seconds.map(|s| s.saturating_mul(1000)),
                })
            })
            .collect())
    }
}

#[async_trait]
impl<D: Driver> Store for Core<D> {
    async fn submit(&self, tenant: TenantId, job: &SubmitJob, now: u64) -> Result<Job, StoreError> {
        check_name("job name", &job.name)?;
        if let Some(cluster) = &job.cluster {
            check_name("cluster", cluster)?;
        }
        tessera_api::limits::check_input_depth(&job.root.input)
            .map_err(|e| StoreError::Invalid(format!("the root task's input is refused: {e}")))?;
        let job = job.clone();
        self.run(move |me| async move { me.do_submit(tenant, &job, now).await })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A real query through a real transaction: the cheapest read that touches the tasks.
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| tx.next_retry_at().await.map(|_| ()))
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Job, StoreError> {
        let id = id.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| Self::load_job(&mut tx, &id).await)
        })
        .await
    }

    async fn owner(&self, of: Owned<'_>) -> Result<Option<TenantId>, StoreError> {
        let (job, id) = match of {
            Owned::Job(id) => (true, id.to_string()),
            Owned::Task(id) => (false, id.to_string()),
        };
        self.run(move |me| async move {
            let of = if job {
                Owned::Job(&id)
            } else {
                Owned::Task(&id)
            };
            transact!(me, Mode::Read, |tx| tx.owner(of).await)
        })
        .await
    }

    async fn lease_of(&self, task: &str) -> Result<Option<super::LeaseOf>, StoreError> {
        let task = task.to_string();
        self.run(move |me| async move { transact!(me, Mode::Read, |tx| tx.lease_of(&task).await) })
            .await
    }

    async fn jobs(&self, reach: Reach, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let limit = page_size(filter.limit, 50, 500)?;
        if let Some(cursor) = filter.cursor.as_deref().filter(|c| !c.is_empty()) {
            // A job listing's cursor is the last job id of the page before.
            if id_bytes(cursor).is_none() {
                return Err(StoreError::Invalid(format!(
                    "cursor {cursor:?} is not valid: pass the next_cursor of the previous page"
                )));
            }
        }
        let filter = filter.clone();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let mut ids = tx.job_ids(reach, &filter, limit + 1).await?;
                let more = ids.len() > limit as usize;
                ids.truncate(limit as usize);
                let mut jobs = Vec::with_capacity(ids.len());
                for id in &ids {
                    // A job deleted between the two reads is left out, not an error.
                    if let Some(job) = tx.load_job(id).await? {
                        jobs.push(job);
                    }
                }
                Ok(JobPage {
                    next_cursor: if more { ids.last().cloned() } else { None },
                    jobs,
                })
            })
        })
        .await
    }

    async fn tasks(&self, job: &str, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let limit = page_size(query.limit, 100, 1000)?;
        let (job, query) = (job.to_string(), query.clone());
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                Self::load_job(&mut tx, &job).await?;
                let mut rows = tx.tasks(&job, &query, limit + 1).await?;
                let more = rows.len() > limit as usize;
                rows.truncate(limit as usize);
                let next_cursor = if more {
                    rows.last().map(|(_, p)| p.clone())
                } else {
                    None
                };
                Ok(TaskPage {
                    tasks: rows.into_iter().map(|(t, _)| t).collect(),
                    next_cursor,
                })
            })
        })
        .await
    }

    async fn task(&self, id: &str) -> Result<Task, StoreError> {
        let id = id.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| tx.task(&id).await)?
                .ok_or(StoreError::NotFound { what: "task", id })
        })
        .await
    }

    async fn cancel(&self, job: &str, now: u64) -> Result<Job, StoreError> {
        let job = job.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                tx.lock_job(&job).await?;
                let current = Self::load_job(&mut tx, &job).await?;
                decide::cancel(&current)?;
                tx.set_job_flags(&job, Some(true), None).await?;
                let n = tx
                    .cancel_queued(&job, now, "not run: the job was canceled")
                    .await?;
                let mut tallies = Tallies::default();
                tallies.shift(&job, TaskState::Queued, TaskState::Canceled, n);
                tx.add_job_tallies(&tallies.rows()).await?;
                tx.notify(&Scope::Nothing).await?;
                Self::load_job(&mut tx, &job).await
            })
        })
        .await
    }

    async fn delete_job(&self, job: &str) -> Result<Job, StoreError> {
        let job = job.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                tx.lock_job(&job).await?;
                let current = Self::load_job(&mut tx, &job).await?;
                decide::delete(&current)?;
                tx.delete_job(&job).await?;
                tx.notify(&Scope::Nothing).await?;
                Ok(current)
            })
        })
        .await
    }

    async fn retry(&self, job: &str, _now: u64) -> Result<Job, StoreError> {
        let job = job.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                tx.lock_job(&job).await?;
                let current = Self::load_job(&mut tx, &job).await?;
                decide::retry(&current)?;
                tx.set_job_flags(&job, Some(false), Some(false)).await?;
                let mut tallies = Tallies::default();
                for from in [TaskState::Failed, TaskState::Canceled] {
                    let n = tx.requeue(&job, from).await?;
                    tallies.shift(&job, from, TaskState::Queued, n);
                }
                tx.add_job_tallies(&tallies.rows()).await?;
                tx.notify(&Scope::Everyone).await?;
                Self::load_job(&mut tx, &job).await
            })
        })
        .await
    }

    async fn claim(
        &self,
        reach: Reach,
        key: Option<&str>,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        if (request.identifiers.is_empty() && !request.deployed) || request.max == 0 {
            return Ok(Vec::new());
        }
        let request = request.clone();
        let key = key.map(str::to_string);
        self.run(move |me| async move { me.do_claim(reach, key.as_deref(), &request, now).await })
            .await
    }

    async fn report(
        &self,
        reach: Reach,
        runner_id: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let (runner, reports) = (runner_id.to_string(), reports.to_vec());
        self.run(move |me| async move { me.do_report(reach, &runner, &reports, now).await })
            .await
    }

    async fn extend(
        &self,
        reach: Reach,
        runner_id: &str,
        leases: &[LeaseRef],
        now: u64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (runner, leases) = (runner_id.to_string(), leases.to_vec());
        self.run(move |me| async move {
            let mut ids: Vec<&str> = leases.iter().map(|l| l.task_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let expires = now.saturating_add(nanos(me.config.lease));
            transact!(me, Mode::Write, |tx| {
                let mut rows = tx.lock_tasks(&ids).await?;
                rows.retain(|r| reach.allows(r.tenant));
                let statuses = decide::extensions(&leases, &runner, &rows, &me.config, now);
                let mut held: Vec<&str> = statuses
                    .iter()
                    .filter(|s| s.held)
                    .map(|s| s.task_id.as_str())
                    .collect();
                held.dedup();
                if !held.is_empty() {
                    tx.extend_leases(&held, expires).await?;
                }
                Ok(statuses)
            })
        })
        .await
    }

    async fn outlook(&self, reach: Reach, request: &OutlookRequest) -> Result<Outlook, StoreError> {
        if request.identifiers.is_empty() && !request.deployed {
            return Ok(Outlook::default());
        }
        let request = request.clone();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let tenants: Vec<TenantId> = match reach {
                    Reach::Tenant(t) => vec![t],
                    // Only tenants with anything queued or running can have work here.
                    Reach::All => tx
                        .tenant_usage(Reach::All)
                        .await?
                        .into_iter()
                        .map(|l| l.tenant)
                        .collect(),
                };
                let mut sum = Outlook::default();
                for tenant in tenants {
                    let one = tx.outlook(tenant, &request).await?;
                    sum.queued = sum.queued.saturating_add(one.queued);
                    sum.running = sum.running.saturating_add(one.running);
                }
                Ok(sum)
            })
        })
        .await
    }

    async fn reap(&self, now: u64) -> Result<u64, StoreError> {
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                let rows = tx.lock_expired(now).await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                let mut plan = decide::expired(&rows, &me.config, now);
                tx.set_states(&plan.states).await?;
                Self::fail_jobs(&mut tx, &mut plan, now).await?;
                tx.add_job_tallies(&plan.tallies.rows()).await?;
                tx.insert_logs(&plan.logs).await?;
                let mut clusters: Vec<String> = rows
                    .iter()
                    .map(|r| super::scope::key(r.tenant, &r.cluster))
                    .collect();
                clusters.sort_unstable();
                clusters.dedup();
                tx.notify(&Scope::Clusters(clusters)).await?;
                Ok(rows.len() as u64)
            })
        })
        .await
    }

    async fn add_logs(&self, logs: Vec<LogLine>) -> Result<u64, StoreError> {
        if logs.is_empty() {
            return Ok(0);
        }
        self.run(move |me| async move {
            let mut logs = logs;
            let mut ids: Vec<String> = logs.iter().map(|l| l.task_id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut attempts: Vec<(String, u32)> = logs
                .iter()
                .map(|l| (l.task_id.clone(), l.attempt))
                .collect();
            attempts.sort_unstable();
            attempts.dedup();
            transact!(me, Mode::Write, |tx| {
                let jobs = tx.jobs_of_tasks(&ids).await?;
                let runners = tx.attempt_runners(&attempts).await?;
                decide::logs(&mut logs, &jobs, &runners)?;
                let mut named: Vec<&str> = logs.iter().map(|l| l.job_id.as_str()).collect();
                named.sort_unstable();
                named.dedup();
                let kept_so_far = tx.job_log_bytes(&named).await?;
                let table = me.tenants_in(&mut tx).await?;
                let (kept, added) = decide::logs_under_quota(logs.clone(), &kept_so_far, |t| {
                    Self::quotas_of(&table, t).log_bytes_per_job
                });
                tx.insert_logs(&kept).await?;
                tx.add_log_bytes(&added).await?;
                Ok(kept.len() as u64)
            })
        })
        .await
    }

    async fn logs(&self, job: &str, query: &LogQuery) -> Result<LogPage, StoreError> {
        let limit = page_size(query.limit, 500, 5000)?;
        let (job, query) = (job.to_string(), query.clone());
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                Self::load_job(&mut tx, &job).await?;
                let rows = tx.logs(&job, &query, limit).await?;
                let next_cursor = rows
                    .last()
                    .map(|(id, l)| format!("{}:{id}", l.time_unix_nano))
                    .or(query.cursor.clone());
                Ok(LogPage {
                    logs: rows.into_iter().map(|(_, l)| l).collect(),
                    next_cursor,
                })
            })
        })
        .await
    }

    async fn spans(&self, job: &str, query: &SpanQuery) -> Result<SpanPage, StoreError> {
        let limit = page_size(query.limit, 1000, 5000)?;
        let (job, query) = (job.to_string(), query.clone());
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                Self::load_job(&mut tx, &job).await?;
                // Each task's latest attempt is on its row, earlier ones in `spans`: two
                // ordered reads, merged. Keys come from one counter, so (start, key) orders both.
                let on_tasks = tx
                    .spans(&super::query::spans_on_tasks(&job, &query, limit + 1)?)
                    .await?;
                let archived = tx
                    .spans(&super::query::spans_archived(&job, &query, limit + 1)?)
                    .await?;
                let mut rows = merge_spans(on_tasks, archived);
                let more = rows.len() > limit as usize;
                rows.truncate(limit as usize);
                let next_cursor = if more {
                    rows.last()
                        .map(|(id, s)| format!("{}:{id}", s.start_time_unix_nano))
                } else {
                    None
                };
                Ok(SpanPage {
                    spans: rows.into_iter().map(|(_, s)| s).collect(),
                    next_cursor,
                })
            })
        })
        .await
    }

    async fn next_retry_at(&self) -> Result<Option<u64>, StoreError> {
        self.run(move |me| async move { transact!(me, Mode::Read, |tx| tx.next_retry_at().await) })
            .await
    }

    #[cfg(feature = "testing")]
    async fn plant(&self, job: &super::plant::PlantedJob) -> Result<(), StoreError> {
        let job = job.clone();
        let root = job
            .tasks
            .first()
            .map(|t| t.id.clone())
            .ok_or_else(|| StoreError::Invalid("a planted job needs its root task".into()))?;
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                tx.insert_job(&NewJob {
                    tenant: super::DEFAULT_TENANT,
                    pins: "[]".into(),
                    id: job.id.clone(),
                    name: job.name.clone(),
                    cluster: job.cluster.clone(),
                    root_id: root.clone(),
                    submitted_at: job.submitted_at,
                })
                .await?;
                tx.set_job_flags(&job.id, Some(job.canceled), Some(job.failed))
                    .await?;
                if let Some(at) = job.completed_at {
                    tx.complete_jobs(std::slice::from_ref(&job.id), at).await?;
                }
                tx.plant_tasks(&job.tasks).await?;
                let mut tallies = Tallies::default();
                for t in &job.tasks {
                    tallies.add(&job.id, t.state, 1);
                    if let Some(at) = t.started_at {
                        tallies.started(&job.id, at);
                    }
                }
                tx.add_job_tallies(&tallies.rows()).await?;
                tx.notify(&Scope::Everyone).await?;
                Ok(())
            })
        })
        .await
    }

    async fn runners(&self, reach: Reach, now: u64) -> Result<RunnerList, StoreError> {
        self.run(move |me| async move {
            let since = now.saturating_sub(nanos(decide::RUNNER_WINDOW));
            let mut runners = transact!(me, Mode::Read, |tx| {
                let runners = tx.runners(reach, since).await?;
                let running = tx.running_by_runner(reach).await?;
                Ok((runners, running))
            })
            .map(|(mut runners, running)| {
                for r in &mut runners {
                    r.running = running.get(&r.id).copied().unwrap_or(0);
                }
                runners
            })?;
            runners.shrink_to_fit();
            Ok(RunnerList { runners })
        })
        .await
    }

    async fn unserved(&self, job: &str, now: u64) -> Result<UnservedList, StoreError> {
        let job = job.to_string();
        self.run(move |me| async move {
            let since = now.saturating_sub(nanos(decide::RUNNER_WINDOW));
            transact!(me, Mode::Read, |tx| {
                Self::load_job(&mut tx, &job).await?;
                let kinds = tx.ready_kinds(&job, now).await?;
                let runners = match tx.owner(Owned::Job(&job)).await? {
                    Some(tenant) if !kinds.is_empty() => {
                        tx.runners(Reach::Tenant(tenant), since).await?
                    }
                    _ => Vec::new(),
                };
                Ok(UnservedList {
                    tasks: decide::unserved(&kinds, &runners),
                })
            })
        })
        .await
    }

    async fn deploy(
        &self,
        tenant: TenantId,
        component: &Component,
        bytes: Arc<[u8]>,
    ) -> Result<Deployed, StoreError> {
        let component = component.clone();
        let own = Reach::Tenant(tenant);
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                let digest = component.digest.as_str();
                let stored = tx.components(own, &Which::Digest(digest)).await?.pop();
                if let Some(stored) = &stored
                    && stored.undeployed_at.is_none()
                {
                    return Ok(Deployed {
                        component: stored.clone(),
                        created: false,
                    });
                }
                let deployed = tx.components(own, &Which::Deployed).await?;
                // Stored bytes keep the task types they were first deployed with.
                let types = stored.as_ref().unwrap_or(&component).task_types.len();
                let pinned = Pins::of(&deployed).count() + types;
                if pinned > MAX_PINNED_TYPES {
                    return Err(StoreError::Conflict(format!(
                        "the deployed components would export {pinned} task types between \
                         them, more than the {MAX_PINNED_TYPES} a job can pin; undeploy some \
                         first (`tessera components undeploy NAME`)"
                    )));
                }
                if stored.is_none() {
                    let quota =
                        Self::quotas_of(&me.tenants_in(&mut tx).await?, tenant).component_bytes;
                    let used = tx.component_bytes_of(tenant).await?;
                    if used.saturating_add(component.size) > quota {
                        return Err(StoreError::Quota(format!(
                            "the tenant's components would take {} bytes, more than its quota \
                             (component_bytes: {quota}); the {used} stored already include \
                             undeployed components, whose bytes pinned jobs keep; ask the \
                             operator to raise it",
                            used.saturating_add(component.size)
                        )));
                    }
                }
                let mut now_deployed = component.clone();
                now_deployed.undeployed_at = None;
                match stored {
                    Some(stored) => {
                        tx.set_deployed(
                            tenant,
                            std::slice::from_ref(&stored.digest),
                            Ok(component.deployed_at),
                        )
                        .await?;
                        now_deployed = Component {
                            deployed_at: component.deployed_at,
                            undeployed_at: None,
                            ..stored
                        };
                    }
                    None => tx.insert_component(tenant, &now_deployed, &bytes).await?,
                }
                // No wake-up: a deploy changes only jobs submitted after it.
                Ok(Deployed {
                    component: now_deployed,
                    created: true,
                })
            })
        })
        .await
    }

    async fn components(&self, reach: Reach, all: bool) -> Result<ComponentList, StoreError> {
        self.run(move |me| async move {
            let which = if all { Which::All } else { Which::Deployed };
            let components = transact!(me, Mode::Read, |tx| tx.components(reach, &which).await)?;
            Ok(ComponentList { components })
        })
        .await
    }

    async fn component(&self, reach: Reach, reference: &str) -> Result<Component, StoreError> {
        let reference = reference.to_string();
        self.run(move |me| async move {
            let which = component_ref(&reference);
            let found = transact!(me, Mode::Read, |tx| tx.components(reach, &which).await)?;
            // By name: the one deployed most recently, preferring one deployed now.
            found
                .iter()
                .find(|c| c.undeployed_at.is_none())
                .or(found.first())
                .cloned()
                .ok_or(StoreError::NotFound {
                    what: "component",
                    id: reference,
                })
        })
        .await
    }

    async fn output(&self, job: &str, task: Option<&str>) -> Result<TaskOutput, StoreError> {
        let (job, task) = (job.to_string(), task.map(str::to_string));
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let id = match task.clone() {
                    Some(id) => id,
                    // The root comes first in tree order.
                    None => match tx.tasks(&job, &TaskQuery::default(), 1).await?.pop() {
                        Some((root, _)) => root.id,
                        None => {
                            Self::load_job(&mut tx, &job).await?;
                            return Err(StoreError::Corrupt(format!("job {job} without tasks")));
                        }
                    },
                };
                // A task of this job, found by id (the common read: no job lookup); else say
                // whether the job or the task is missing.
                let row = match tx.task(&id).await? {
                    Some(row) if row.job_id == job => row,
                    _ => {
                        Self::load_job(&mut tx, &job).await?;
                        return Err(StoreError::NotFound {
                            what: "task",
                            id: id.clone(),
                        });
                    }
                };
                if !matches!(row.state, TaskState::Computed) {
                    return Err(StoreError::Conflict(format!(
                        "task {id} has no output: it is {}",
                        not_computed(row.state)
                    )));
                }
                // Follow outputs taken from subtasks down to a value (each hop goes one level
                // deeper, so the walk ends).
                let mut at = id.clone();
                loop {
                    let Some(found) = tx.output(&at).await? else {
                        return Ok(TaskOutput {
                            task_id: at,
                            value: None,
                        });
                    };
                    let Some(source) = found.source else {
                        return Ok(TaskOutput {
                            task_id: at,
                            value: found.value,
                        });
                    };
                    let state = tx.task(&source).await?.map(|t| t.state);
                    if state != Some(TaskState::Computed) {
                        return Err(StoreError::Conflict(format!(
                            "task {id}'s output is the output of its subtask {source}, which {}",
                            match state {
                                Some(s) => format!("is {}", not_computed(s)),
                                None => "does not exist".into(),
                            }
                        )));
                    }
                    at = source;
                }
            })
        })
        .await
    }

    async fn dependencies(&self, task: &str) -> Result<DependencyList, StoreError> {
        let task = task.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let rows = tx.dependencies(&task).await?;
                if rows.is_empty() && tx.task(&task).await?.is_none() {
                    return Err(StoreError::NotFound {
                        what: "task",
                        id: task.clone(),
                    });
                }
                let mut dependencies = Vec::with_capacity(rows.len());
                for row in rows {
                    let index = path_index(&row.path)
                        .ok_or_else(|| StoreError::Corrupt(format!("task path {:?}", row.path)))?;
                    dependencies.push(Dependency {
                        index,
                        task_id: row.task_id,
                        state: row.state,
                        output_bytes: row.output_bytes,
                    });
                }
                Ok(DependencyList { dependencies })
            })
        })
        .await
    }

    async fn cache_get(
        &self,
        job: &str,
        key: &str,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, StoreError> {
        let (job, key) = (job.to_string(), key.to_string());
        let as_of = as_of.unwrap_or(i64::MAX as u64);
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                if let Some(value) = tx.cache_get(&job, &key, as_of).await? {
                    return Ok(value);
                }
                // No value: say whether the job or the key is missing.
                Self::load_job(&mut tx, &job).await?;
                Err(StoreError::NotFound {
                    what: "cache key",
                    id: tessera_api::limits::elide(&key, 128),
                })
            })
        })
        .await
    }

    async fn cache(&self, job: &str, query: &CacheQuery) -> Result<CachePage, StoreError> {
        let limit = page_size(
            query.limit,
            tessera_api::limits::MAX_CACHE_LIST,
            tessera_api::limits::MAX_CACHE_LIST,
        )?;
        tessera_api::limits::check_cache_listing(
            query.prefix.as_deref().unwrap_or(""),
            query.after.as_deref(),
        )
        .map_err(StoreError::Invalid)?;
        let (job, query) = (job.to_string(), query.clone());
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let prefix = query.prefix.as_deref().unwrap_or("");
                let as_of = query.as_of.unwrap_or(i64::MAX as u64);
                let mut keys = tx
                    .cache_keys(&job, prefix, query.after.as_deref(), limit + 1, as_of)
                    .await?;
                if keys.is_empty() {
                    // An empty page of a job that does not exist is a 404.
                    Self::load_job(&mut tx, &job).await?;
                }
                let more = keys.len() > limit as usize;
                keys.truncate(limit as usize);
                let next = more.then(|| keys.last().map(|(k, _)| k.clone())).flatten();
                Ok(CachePage {
                    entries: keys
                        .into_iter()
                        .map(|(key, bytes)| CacheEntry { key, bytes })
                        .collect(),
                    next,
                })
            })
        })
        .await
    }

    async fn component_bytes(&self, reach: Reach, digest: &str) -> Result<Vec<u8>, StoreError> {
        let digest = digest.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| tx
                .component_bytes(reach, &digest)
                .await)?
            .ok_or(StoreError::NotFound {
                what: "component",
                id: digest,
            })
        })
        .await
    }

    async fn undeploy(
        &self,
        reach: Reach,
        reference: &str,
        now: u64,
    ) -> Result<ComponentList, StoreError> {
        let reference = reference.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                let which = component_ref(&reference);
                let found = tx.components(reach, &which).await?;
                if found.is_empty() {
                    return Err(StoreError::NotFound {
                        what: "component",
                        id: reference.clone(),
                    });
                }
                let mut components: Vec<Component> = found
                    .into_iter()
                    .filter(|c| c.undeployed_at.is_none())
                    .collect();
                if components.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "{reference} is not deployed (it was undeployed before)"
                    )));
                }
                let digests: Vec<String> = components.iter().map(|c| c.digest.clone()).collect();
                let mut tenants: Vec<TenantId> = Vec::new();
                for d in &digests {
                    tenants.extend(tx.component_tenants(reach, d).await?);
                }
                tenants.sort_unstable();
                tenants.dedup();
                for tenant in tenants {
                    tx.set_deployed(tenant, &digests, Err(now)).await?;
                }
                for c in &mut components {
                    c.undeployed_at = Some(now);
                }
                Ok(ComponentList { components })
            })
        })
        .await
    }

    async fn audit(&self, job: &str) -> Result<Vec<String>, StoreError> {
        let job = job.to_string();
        self.run(move |me| async move {
            // A write transaction: it locks the job, so no change lands between the reads.
            transact!(me, Mode::Write, |tx| {
                tx.lock_job(&job).await?;
                let kept = Self::load_job(&mut tx, &job).await?;
                let Some(counted) = tx.count_job(&job).await? else {
                    return Ok(vec![format!("job {job} vanished during the audit")]);
                };
                Ok(decide::audit(&kept, &counted))
            })
        })
        .await
    }

    async fn create_tenant(
        &self,
        tenant: &tessera_api::NewTenant,
        now: u64,
    ) -> Result<tessera_api::Tenant, StoreError> {
        let tenant = decide::new_tenant(tenant, now)?;
        let made = tenant.clone();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                if tx.tenant_named(&tenant.name).await?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "tenant {} exists already",
                        tenant.name
                    )));
                }
                tx.insert_tenant(&tenant).await?;
                Ok(tenant.clone())
            })
        })
        .await?;
        *self.tenant_table.lock().unwrap() = None;
        Ok(made)
    }

    async fn update_tenant(
        &self,
        name: &str,
        update: &tessera_api::TenantUpdate,
    ) -> Result<tessera_api::Tenant, StoreError> {
        let (name, update) = (name.to_string(), update.clone());
        let tenant = self
            .run(move |me| async move {
                transact!(me, Mode::Write, |tx| {
                    let Some((id, tenant)) = tx.tenant_named(&name).await? else {
                        return Err(StoreError::NotFound {
                            what: "tenant",
                            id: name.clone(),
                        });
                    };
                    let q = tenant.quotas;
                    let set = tessera_api::TenantUpdate {
                        weight: None,
                        queued_tasks: Some(q.queued_tasks),
                        running: q.running,
                        memory_mib: q.memory_mib,
                        deadline_seconds: q.deadline_seconds,
                        log_bytes_per_job: Some(q.log_bytes_per_job),
                        component_bytes: Some(q.component_bytes),
                        requests_per_second: Some(q.requests_per_second),
                    };
                    let (weight, set) = decide::update_tenant(tenant.weight, &set, &update)?;
                    let json = serde_json::to_string(&set).expect("quotas serialize");
                    tx.set_tenant(id, weight, &json).await?;
                    Ok(tessera_api::Tenant {
                        weight,
                        quotas: decide::quotas(&set),
                        ..tenant
                    })
                })
            })
            .await?;
        *self.tenant_table.lock().unwrap() = None;
        Ok(tenant)
    }

    async fn tenants(
        &self,
        reach: Reach,
    ) -> Result<Vec<(TenantId, tessera_api::Tenant)>, StoreError> {
        self.run(move |me| async move {
            transact!(me, Mode::Read, |tx| {
                let mut tenants = tx.tenants(reach).await?;
                let loads: HashMap<TenantId, (u64, u64)> = tx
                    .tenant_usage(reach)
                    .await?
                    .into_iter()
                    .map(|l| (l.tenant, (l.queued, l.running)))
                    .collect();
                for (id, tenant) in &mut tenants {
                    let (queued_tasks, running) = loads.get(id).copied().unwrap_or((0, 0));
                    tenant.usage = Some(tessera_api::Usage {
                        queued_tasks,
                        running,
                        component_bytes: tx.component_bytes_of(*id).await?,
                    });
                }
                Ok(tenants)
            })
        })
        .await
    }

    async fn tenant_named(
        &self,
        name: &str,
    ) -> Result<Option<(TenantId, tessera_api::Tenant)>, StoreError> {
        let name = name.to_string();
        self.run(
            move |me| async move { transact!(me, Mode::Read, |tx| tx.tenant_named(&name).await) },
        )
        .await
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(
            move |me| async move { transact!(me, Mode::Write, |tx| tx.insert_key(&key).await) },
        )
        .await
    }

    async fn keys(&self, reach: Reach) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(move |me| async move { transact!(me, Mode::Read, |tx| tx.keys(reach).await) })
            .await
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |me| async move { transact!(me, Mode::Read, |tx| tx.key(&id).await) })
            .await
    }

    async fn revoke_key(&self, reach: Reach, id: &str, now: u64) -> Result<KeyRecord, StoreError> {
        let id = id.to_string();
        self.run(move |me| async move {
            transact!(me, Mode::Write, |tx| {
                // Another tenant's key is as missing as one that never was.
                let Some(key) = tx.key(&id).await?.filter(|k| match (reach, k.tenant) {
                    (Reach::All, _) => true,
                    (Reach::Tenant(own), Some(t)) => own == t,
                    (Reach::Tenant(_), None) => false,
                }) else {
                    return Err(StoreError::NotFound {
                        what: "key",
                        id: id.clone(),
                    });
                };
                tx.revoke_key(&id, now).await?;
                Ok(KeyRecord {
                    revoked_at: key.revoked_at.or(Some(now)),
                    ..key
                })
            })
        })
        .await
    }

    async fn keys_created(&self) -> Result<u64, StoreError> {
        self.run(move |me| async move { transact!(me, Mode::Read, |tx| tx.keys_created().await) })
            .await
    }

    fn on_commit(&self, listener: Arc<dyn CommitListener>) {
        if self.listener.set(listener.clone()).is_ok() {
            self.driver.forward(listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64) -> Span {
        Span {
            name: String::new(),
            task_id: String::new(),
            job_id: String::new(),
            runner_id: String::new(),
            attempt: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: None,
            outcome: tessera_api::SpanOutcome::Running,
            error: None,
            component: None,
        }
    }

    #[test]
    fn spans_merge_in_start_then_key_order() {
        let keyed = |rows: &[(u64, i64)]| -> Vec<(i64, Span)> {
            rows.iter()
                .map(|&(start, key)| (key, span(start)))
                .collect()
        };
        let merged = merge_spans(
            keyed(&[(1, 4), (2, 2), (2, 9), (5, 1)]),
            keyed(&[(0, 7), (2, 3), (6, 5)]),
        );
        let order: Vec<(u64, i64)> = merged
            .iter()
            .map(|(k, s)| (s.start_time_unix_nano, *k))
            .collect();
        assert_eq!(
            order,
            [(0, 7), (1, 4), (2, 2), (2, 3), (2, 9), (5, 1), (6, 5)]
        );
        assert_eq!(merge_spans(Vec::new(), keyed(&[(3, 1)])).len(), 1);
        assert!(merge_spans(Vec::new(), Vec::new()).is_empty());
    }
}
