//! The PostgreSQL driver, for several servers sharing one database.
//!
//! Claims lock rows with `FOR UPDATE SKIP LOCKED`; reports lock their tasks in id order, so a
//! report and the lease reaper of another server never both win; every change that may make
//! work claimable sends `NOTIFY tessera_work`, which every server LISTENs to and turns into a
//! local wake-up. Each primitive is one statement over arrays (`UNNEST`), whatever the size of
//! its set. Migrations run under an advisory lock, so servers may start together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tessera_api::{
    Component, Job, JobFilter, LogLine, LogQuery, Outlook, OutlookRequest, ProgressUpdate,
    RunnerInfo, Span, Task, TaskCounts, TaskIdentifier, TaskQuery, TaskState, Version,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::core::Core;
use super::driver::{
    AddProgress, CacheSet, ClaimParams, ClaimedRow, CompletedRow, DependencyRow, Driver, ErrorText,
    HeldRow, JobGrowth, JobTally, Mode, NewJob, NewTask, Op, ParentRow, PutOutput, ReadyKind,
    SetState, TenantLoad, Tx, Which, state_index,
};
use super::encode::*;
use super::query::{self, Param, Query};
use super::{CommitListener, Scope};
use super::{KeyRecord, Owned, Reach, StoreConfig, StoreError, TenantId};

/// The notification channel that announces claimable work.
const CHANNEL: &str = "tessera_work";
/// Key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x0074_6573_7365_7261;

/// Migrations in order; table `tessera_schema` records how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_logs_task_time.sql"),
    include_str!("migrations/0003_lost.sql"),
    include_str!("migrations/0004_job_task_total.sql"),
    include_str!("migrations/0005_job_tallies.sql"),
    include_str!("migrations/0006_runners.sql"),
    include_str!("migrations/0007_drop_task_total.sql"),
    include_str!("migrations/0008_components.sql"),
    include_str!("migrations/0009_outputs_cache.sql"),
    include_str!("migrations/0010_span_digests.sql"),
    include_str!("migrations/0011_tenants.sql"),
    include_str!("migrations/0012_job_queued_index.sql"),
    include_str!("migrations/0013_span_runners.sql"),
    include_str!("migrations/0014_lease_runner_ref.sql"),
    include_str!("migrations/0015_spans_on_tasks.sql"),
    include_str!("migrations/0016_runner_wasmtime.sql"),
];

/// The PostgreSQL job store.
pub type PostgresStore = Core<PostgresDriver>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => {
                StoreError::Contention(Box::new(e))
            }
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => StoreError::Contention(Box::new(e)),
            Some(_) => StoreError::Database(Box::new(e)),
            None if e.is_closed() => StoreError::Unavailable(Box::new(e)),
            None => StoreError::Database(Box::new(e)),
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::Unavailable(format!("no PostgreSQL connection: {text}").into())
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

impl Core<PostgresDriver> {
    /// Connects, and applies pending migrations under an advisory lock.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<PostgresStore, StoreError> {
        Ok(Core::new(PostgresDriver::connect(url).await?, config))
    }
}

/// A pool of connections to one PostgreSQL database.
pub struct PostgresDriver {
    pool: Pool,
    url: String,
    /// This server's notifications say they are its own with this first line.
    origin: Arc<str>,
}

impl PostgresDriver {
    /// Connects, and applies pending migrations under an advisory lock.
    pub async fn connect(url: &str) -> Result<PostgresDriver, StoreError> {
        let pg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "{url:?} is not a PostgreSQL URL ({e}); use postgres://USER@HOST:PORT/DB"
            ))
        })?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(16).build().map_err(|e| {
            StoreError::Internal(format!("could not build the PostgreSQL pool: {e}"))
        })?;
        let driver = PostgresDriver {
            pool,
            url: url.to_string(),
            origin: origin_line(rand::random()),
        };
        driver
            .migrate()
            .await
            .map_err(|e| StoreError::Internal(format!("could not prepare {}: {e}", redact(url))))?;
        Ok(driver)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tessera_schema (version BIGINT NOT NULL)")
            .await?;
        let applied: i64 = tx
            .query_opt("SELECT version FROM tessera_schema", &[])
            .await?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if applied as usize > MIGRATIONS.len() {
            return Err(StoreError::Internal(format!(
                "the database has schema version {applied}, newer than this tessera ({}); upgrade tessera",
                MIGRATIONS.len()
            )));
        }
        for sql in MIGRATIONS.iter().skip(applied as usize) {
            tx.batch_execute(sql).await?;
        }
        tx.execute("DELETE FROM tessera_schema", &[]).await?;
        tx.execute(
            "INSERT INTO tessera_schema (version) VALUES ($1)",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl Driver for PostgresDriver {
    type Tx = PgTx;

    async fn begin(&self, mode: Mode) -> Result<PgTx, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        // Reads run statement by statement; only writes need a transaction.
        let open = mode == Mode::Write;
        if open {
            client.batch_execute("BEGIN").await?;
        }
        Ok(PgTx {
            client: Some(client),
            open,
            origin: self.origin.clone(),
            notified: Vec::new(),
        })
    }

    async fn run<R: Send + 'static>(&self, op: Op<R>) -> R {
        op.await
    }

    fn forward(&self, listener: std::sync::Arc<dyn CommitListener>) {
        tokio::spawn(listen_forever(
            self.url.clone(),
            self.origin.clone(),
            listener,
        ));
    }
}

/// One PostgreSQL transaction on a pooled connection.
pub struct PgTx {
    client: Option<Object>,
    open: bool,
    /// The first line of this server's notifications ([`origin_line`]).
    origin: Arc<str>,
    /// What this transaction announced ([`Tx::notify`]).
    notified: Vec<Scope>,
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // Dropped inside a transaction (a canceled request): close the connection rather than
        // hand it back to the pool mid-transaction; the server rolls back.
        if self.open
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

impl PgTx {
    fn c(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a transaction has its connection until it ends")
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.c();
        let statement = c.prepare_cached(sql).await?;
        Ok(c.execute(&statement, params).await?)
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.c();
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query(&statement, params).await?)
    }

    async fn one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
        let c = self.c();
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query_one(&statement, params).await?)
    }

    async fn opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let c = self.c();
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&statement, params).await?)
    }

    async fn end(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = self.c().batch_execute(sql).await;
        self.open = false;
        Ok(result?)
    }
}

fn task_from_row(r: &Row) -> Result<(Task, String), StoreError> {
    let name: String = r.get(4);
    let display: Option<String> = r.get(8);
    let id: String = r.get(0);
    let input = stored_input(&id, r.get(7))?;
    let depends_on = stored_depends_on(&id, r.get(10))?;
    let task = Task {
        id,
        job_id: r.get(1),
        parent_id: r.get(2),
        depth: r.get::<_, i32>(3) as u32,
        identifier: TaskIdentifier {
            name: name.clone(),
            version: Version {
                major: r.get::<_, i64>(5) as u32,
                minor: r.get::<_, i64>(6) as u32,
            },
        },
        display: display.unwrap_or(name),
        state: state_of(r.get(9))?,
        input,
        depends_on,
        attempts: r.get::<_, i64>(11) as u32,
        retries_used: r.get::<_, i64>(12) as u32,
        max_retries: r.get::<_, i64>(13) as u32,
        cluster: r.get(14),
        runner_id: r.get(15),
        error: r.get(16),
        children: u(r.get(17)),
        completed: r.get(18),
        created_at: u(r.get(19)),
        started_at: r.get::<_, Option<i64>>(20).map(u),
        finished_at: r.get::<_, Option<i64>>(21).map(u),
        component: r.get(23),
    };
    Ok((task, r.get(22)))
}

fn key_from_row(r: &Row) -> Result<KeyRecord, StoreError> {
    key_record(
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get::<_, Option<&str>>(8),
    )
}

fn held_from_row(r: &Row) -> Result<HeldRow, StoreError> {
    Ok(HeldRow {
        id: r.get(0),
        job_id: r.get(1),
        parent_id: r.get(16),
        tenant: r.get(15),
        cluster: r.get(2),
        path: r.get(3),
        depth: r.get::<_, i32>(4) as u32,
        state: state_of(r.get(5))?,
        lease: u(r.get(6)),
        lease_expires_at: r.get::<_, Option<i64>>(7).map(u),
        attempt: r.get::<_, i64>(8) as u32,
        retries_used: r.get::<_, i64>(9) as u32,
        max_retries: r.get::<_, i64>(10) as u32,
        job_canceled: r.get(11),
        job_failed: r.get(13),
        runner: r.get(14),
        lost: r.get::<_, i64>(12).clamp(0, i64::from(u32::MAX)) as u32,
        span_start: r.get::<_, Option<i64>>(17).map(u),
    })
}

/// Matches the identifiers a runner serves, passed as three arrays from `$first`: one statement
/// text however many identifiers there are.
fn identifier_match(first: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM UNNEST(${}::text[], ${}::bigint[], ${}::bigint[]) AS i(name, major, minor) \
         WHERE t.name = i.name AND t.major = i.major AND t.minor <= i.minor)",
        first,
        first + 1,
        first + 2
    )
}

/// What a runner serves: the task types in the identifier arrays at `$first…`, or (a fleet
/// runner) every task with a pinned component, still naming the (then empty) arrays so that
/// both statements take the same parameters.
fn serves_match(deployed: bool, first: usize) -> String {
    if deployed {
        format!(
            "t.component IS NOT NULL AND (${}::text[], ${}::bigint[], ${}::bigint[]) IS NOT NULL",
            first,
            first + 1,
            first + 2
        )
    } else {
        identifier_match(first)
    }
}

/// The claim's SQL for the `digests` id of the component a picked task runs with, as
/// [`ClaimParams::ran`] says: a fleet runner's, its pinned component; else the digest paired with
/// the first of the runner's identifiers (`$6`–`$8`, digests `$11`) that can run it. NULL when
/// the digest is not in `digests` yet.
fn ran_component(deployed: bool) -> &'static str {
    if deployed {
        // `$11` is named so that its type is known; a fleet runner's claim has no digests.
        "(SELECT id FROM digests WHERE digest = tasks.component AND $11::text[] IS NOT NULL)"
    } else {
        "(SELECT d.id FROM UNNEST($6::text[], $7::bigint[], $8::bigint[]) \
         WITH ORDINALITY AS o(name, major, minor, k) \
         LEFT JOIN digests d ON d.digest = ($11::text[])[o.k] \
         WHERE o.name = tasks.name AND o.major = tasks.major AND o.minor >= tasks.minor \
         ORDER BY o.k LIMIT 1)"
    }
}

/// The three arrays [`identifier_match`] takes.
fn identifier_arrays(identifiers: &[TaskIdentifier]) -> (Vec<&str>, Vec<i64>, Vec<i64>) {
    (
        identifiers.iter().map(|i| i.name.as_str()).collect(),
        identifiers
            .iter()
            .map(|i| i64::from(i.version.major))
            .collect(),
        identifiers
            .iter()
            .map(|i| i64::from(i.version.minor))
            .collect(),
    )
}

/// A [`Query`]'s parameters, bound for PostgreSQL.
fn bind(q: &Query) -> Vec<&(dyn ToSql + Sync)> {
    q.params
        .iter()
        .map(|p| match p {
            Param::Text(t) | Param::Id(t) => t as &(dyn ToSql + Sync),
            Param::Int(n) => n as &(dyn ToSql + Sync),
        })
        .collect()
}

#[async_trait]
impl Tx for PgTx {
    async fn commit(mut self) -> Result<(), StoreError> {
        if self.open {
            self.end("COMMIT").await?;
        }
        Ok(())
    }

    async fn rollback(mut self) {
        if self.open
            && let Err(e) = self.end("ROLLBACK").await
        {
            tracing::warn!("could not roll back a PostgreSQL transaction: {e}");
        }
    }

    async fn load_job(&mut self, id: &str) -> Result<Option<Job>, StoreError> {
        let Some(row) = self
            .opt(
                "SELECT id, name, cluster, canceled, failed, submitted_at, started_at, completed_at, \
                 tasks_queued, tasks_running, tasks_computed, tasks_failed, tasks_canceled, \
                 task_time_ns, last_end, (SELECT name FROM tenants WHERE id = jobs.tenant_id) \
                 FROM jobs WHERE id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let (canceled, failed): (bool, bool) = (row.get(3), row.get(4));
        let started_at: Option<i64> = row.get(6);
        let completed_at: Option<i64> = row.get(7);
        let counts = TaskCounts {
            queued: u(row.get(8)),
            running: u(row.get(9)),
            computed: u(row.get(10)),
            failed: u(row.get(11)),
            canceled: u(row.get(12)),
        };
        let last_end = u(row.get(14));
        let progress = self
            .rows(
                "SELECT label, done, total FROM progress WHERE job_id = $1 ORDER BY label",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| ProgressUpdate {
                label: r.get(0),
                done: u(r.get(1)),
                total: u(r.get(2)),
            })
            .collect();
        let state = derive_state(
            canceled,
            failed,
            completed_at.is_some(),
            started_at.is_some(),
        );
        Ok(Some(Job {
            id: row.get(0),
            name: row.get(1),
            cluster: row.get(2),
            state,
            canceled,
            task_counts: counts,
            progress,
            submitted_at: u(row.get(5)),
            started_at: started_at.map(u),
            finished_at: if state.is_finished() {
                Some(last_end).filter(|&t| t > 0).or(completed_at.map(u))
            } else {
                None
            },
            task_time_ns: u(row.get(13)),
            tenant: row.get::<_, Option<String>>(15).unwrap_or_default(),
        }))
    }

    async fn job_ids(
        &mut self,
        reach: Reach,
        filter: &JobFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let q = query::job_ids(reach, filter, limit, "strpos(name, ?) > 0");
        Ok(self
            .rows(&q.numbered(), &bind(&q))
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn owner(&mut self, of: Owned<'_>) -> Result<Option<TenantId>, StoreError> {
        let (sql, id) = match of {
            Owned::Job(id) => ("SELECT tenant_id FROM jobs WHERE id = $1", id),
            Owned::Task(id) => ("SELECT tenant_id FROM tasks WHERE id = $1", id),
        };
        Ok(self.opt(sql, &[&id]).await?.map(|r| r.get(0)))
    }

    async fn tasks(
        &mut self,
        job: &str,
        query: &TaskQuery,
        limit: u32,
    ) -> Result<Vec<(Task, String)>, StoreError> {
        let q = query::tasks(job, query, limit);
        self.rows(&q.numbered(), &bind(&q))
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    async fn task(&mut self, id: &str) -> Result<Option<Task>, StoreError> {
        self.opt(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|r| task_from_row(&r).map(|(t, _)| t))
        .transpose()
    }

    async fn logs(
        &mut self,
        job: &str,
        query: &LogQuery,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        let q = query::logs(job, query, limit)?;
        self.rows(&q.numbered(), &bind(&q))
            .await?
            .iter()
            .map(|r| {
                let fields: String = r.get(8);
                Ok((
                    r.get(0),
                    LogLine {
                        time_unix_nano: u(r.get(1)),
                        level: rank_level(r.get(2))?,
                        message: r.get(3),
                        task_id: r.get(4),
                        job_id: r.get(5),
                        runner_id: r.get(6),
                        attempt: r.get::<_, i64>(7) as u32,
                        fields: serde_json::from_str(&fields).unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    async fn spans(&mut self, q: &query::Query) -> Result<Vec<(i64, Span)>, StoreError> {
        self.rows(&q.numbered(), &bind(q))
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    Span {
                        name: r.get(1),
                        task_id: r.get(2),
                        job_id: r.get(3),
                        runner_id: r.get(4),
                        attempt: r.get::<_, i64>(5) as u32,
                        start_time_unix_nano: u(r.get(6)),
                        end_time_unix_nano: r.get::<_, Option<i64>>(7).map(u),
                        outcome: outcome_of(r.get(8))?,
                        error: r.get(9),
                        component: r.get(10),
                    },
                ))
            })
            .collect()
    }

    async fn outlook(
        &mut self,
        tenant: TenantId,
        request: &OutlookRequest,
    ) -> Result<Outlook, StoreError> {
        let (names, majors, minors) = identifier_arrays(&request.identifiers);
        let queued: i64 = self
            .one(
                &format!(
                    "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'queued' AND t.cluster = $1 AND t.tenant_id = $5 \
                     AND NOT j.canceled AND NOT j.failed AND {}",
                    serves_match(request.deployed, 2)
                ),
                &[&request.cluster, &names, &majors, &minors, &tenant],
            )
            .await?
            .get(0);
        let running: i64 = self
            .one(
                "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND cluster = $1 \
                 AND tenant_id = $2",
                &[&request.cluster, &tenant],
            )
            .await?
            .get(0);
        Ok(Outlook {
            queued: u(queued),
            running: u(running),
        })
    }

    async fn next_retry_at(&mut self) -> Result<Option<u64>, StoreError> {
        let row = self
            .one(
                "SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0",
                &[],
            )
            .await?;
        Ok(row.get::<_, Option<i64>>(0).map(u))
    }

    async fn attempt_runners(
        &mut self,
        attempts: &[(String, u32)],
    ) -> Result<HashMap<(String, u32), String>, StoreError> {
        let tasks: Vec<&str> = attempts.iter().map(|(t, _)| t.as_str()).collect();
        let numbers: Vec<i64> = attempts.iter().map(|(_, a)| i64::from(*a)).collect();
        let rows = self
            .rows(
                "SELECT t.id, t.attempt, r.name FROM tasks t \
                 JOIN UNNEST($1::text[], $2::bigint[]) AS a(task_id, attempt) \
                 ON t.id = a.task_id AND t.attempt = a.attempt AND t.span_key IS NOT NULL \
                 JOIN runner_names r ON r.id = t.span_runner_ref \
                 UNION ALL SELECT s.task_id, s.attempt, r.name FROM spans s \
                 JOIN UNNEST($1::text[], $2::bigint[]) AS a(task_id, attempt) \
                 ON s.task_id = a.task_id AND s.attempt = a.attempt \
                 JOIN runner_names r ON r.id = s.runner_ref",
                &[&tasks, &numbers],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let attempt: i64 = r.get::<_, i64>(1);
                (
                    (r.get(0), attempt.clamp(0, i64::from(u32::MAX)) as u32),
                    r.get(2),
                )
            })
            .collect())
    }

    async fn jobs_of_tasks(&mut self, ids: &[&str]) -> Result<HashMap<String, String>, StoreError> {
        Ok(self
            .rows("SELECT id, job_id FROM tasks WHERE id = ANY($1)", &[&ids])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn ready_kinds(&mut self, job: &str, now: u64) -> Result<Vec<ReadyKind>, StoreError> {
        Ok(self
            .rows(
                "SELECT cluster, name, major, minor, component IS NOT NULL, COUNT(*) FROM tasks \
                 WHERE job_id = $1 AND state = 'queued' AND pending_deps = 0 AND not_before <= $2 \
                 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 LIMIT 100",
                &[&job, &i(now)],
            )
            .await?
            .iter()
            .map(|r| ReadyKind {
                cluster: r.get(0),
                task: TaskIdentifier {
                    name: r.get(1),
                    version: Version {
                        major: r.get::<_, i64>(2) as u32,
                        minor: r.get::<_, i64>(3) as u32,
                    },
                },
                pinned: r.get(4),
                queued: u(r.get(5)),
            })
            .collect())
    }

    async fn running_by_runner(
        &mut self,
        reach: Reach,
    ) -> Result<HashMap<String, u64>, StoreError> {
        Ok(self
            .rows(&running_by_runner_sql(reach), &[])
            .await?
            .iter()
            .map(|r| (r.get(0), u(r.get(1))))
            .collect())
    }

    async fn components(
        &mut self,
        reach: Reach,
        which: &Which<'_>,
    ) -> Result<Vec<Component>, StoreError> {
        let (condition, param) = which_sql(which);
        let sql = format!(
            "SELECT {COMPONENT_COLUMNS} FROM components WHERE {condition} AND {} \
             ORDER BY deployed_at DESC, digest LIMIT 1000",
            reach_sql(reach, "tenant_id")
        );
        let rows = if param.is_empty() {
            self.rows(&sql, &[]).await?
        } else {
            self.rows(&sql, &[&param]).await?
        };
        rows.iter()
            .map(|r| {
                component(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect()
    }

    async fn insert_component(
        &mut self,
        tenant: TenantId,
        component: &Component,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO components (digest, name, size, task_types, deployed_by, deployed_at, \
             bytes, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &component.digest,
                &component.name,
                &i(component.size),
                &serde_json::to_string(&component.task_types).expect("identifiers serialize"),
                &component.deployed_by,
                &i(component.deployed_at),
                &bytes,
                &tenant,
            ],
        )
        .await?;
        Ok(())
    }

    async fn set_deployed(
        &mut self,
        tenant: TenantId,
        digests: &[String],
        deployed: Result<u64, u64>,
    ) -> Result<(), StoreError> {
        let (at, un) = match deployed {
            Ok(at) => (Some(i(at)), None),
            Err(un) => (None, Some(i(un))),
        };
        self.exec(
            "UPDATE components SET deployed_at = COALESCE($2, deployed_at), undeployed_at = $3 \
             WHERE digest = ANY($1) AND tenant_id = $4",
            &[&digests, &at, &un, &tenant],
        )
        .await?;
        Ok(())
    }

    async fn component_bytes(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!(
            "SELECT bytes FROM components WHERE digest = $1 AND {} LIMIT 1",
            reach_sql(reach, "tenant_id")
        );
        Ok(self.rows(&sql, &[&digest]).await?.first().map(|r| r.get(0)))
    }

    async fn runners(&mut self, reach: Reach, since: u64) -> Result<Vec<RunnerInfo>, StoreError> {
        let sql = format!(
            "SELECT id, cluster, identifiers, first_seen, last_seen, deployed, host, concurrency, \
             wasmtime FROM runners WHERE last_seen >= $1 AND ({} OR tenant_id IS NULL) \
             ORDER BY last_seen DESC, id LIMIT 1000",
            reach_sql(reach, "tenant_id")
        );
        self.rows(&sql, &[&i(since)])
            .await?
            .iter()
            .map(|r| {
                Ok(RunnerInfo {
                    deployed: r.get(5),
                    host: r.get(6),
                    concurrency: r
                        .get::<_, Option<i64>>(7)
                        .map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
                    wasmtime: r.get(8),
                    ..runner_info(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))?
                })
            })
            .collect()
    }

    async fn record_runner(
        &mut self,
        runner: &RunnerInfo,
        tenant: Option<TenantId>,
        forget_before: u64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO runners (id, cluster, identifiers, first_seen, last_seen, deployed, host, \
             concurrency, tenant_id, wasmtime) VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET \
             cluster = excluded.cluster, identifiers = excluded.identifiers, \
             last_seen = excluded.last_seen, deployed = excluded.deployed, \
             host = excluded.host, concurrency = excluded.concurrency, \
             tenant_id = excluded.tenant_id, wasmtime = excluded.wasmtime",
            &[
                &runner.id,
                &runner.cluster,
                &serde_json::to_string(&runner.identifiers).expect("identifiers serialize"),
                &i(runner.last_seen),
                &runner.deployed,
                &runner.host,
                &runner.concurrency.map(i64::from),
                &tenant,
                &runner.wasmtime,
            ],
        )
        .await?;
        self.exec(
            "DELETE FROM runners WHERE last_seen < $1",
            &[&i(forget_before)],
        )
        .await?;
        Ok(())
    }

    async fn lock_job(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .opt("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", &[&id])
            .await?
            .is_some())
    }

    async fn lock_job_totals(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, JobGrowth>, StoreError> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        Ok(self
            .rows(
                "SELECT id, tasks_queued + tasks_running + tasks_computed + tasks_failed + \
                 tasks_canceled, pins FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&sorted],
            )
            .await?
            .iter()
            .map(|r| {
                let growth = JobGrowth {
                    total: u(r.get(1)),
                    pins: r.get(2),
                };
                (r.get(0), growth)
            })
            .collect())
    }

    async fn add_job_tallies(&mut self, tallies: &[JobTally]) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = tallies.iter().map(|t| t.job_id.as_str()).collect();
        let column = |k: usize| -> Vec<i64> { tallies.iter().map(|t| t.states[k]).collect() };
        let (q, r, c, f, x) = (column(0), column(1), column(2), column(3), column(4));
        let times: Vec<i64> = tallies.iter().map(|t| i(t.task_time_ns)).collect();
        let ends: Vec<i64> = tallies.iter().map(|t| i(t.last_end)).collect();
        let starts: Vec<Option<i64>> = tallies.iter().map(|t| t.started_at.map(i)).collect();
        self.exec(
            "UPDATE jobs SET tasks_queued = jobs.tasks_queued + d.q, \
             tasks_running = jobs.tasks_running + d.r, tasks_computed = jobs.tasks_computed + d.c, \
             tasks_failed = jobs.tasks_failed + d.f, tasks_canceled = jobs.tasks_canceled + d.x, \
             task_time_ns = LEAST(jobs.task_time_ns::NUMERIC + d.t, 9223372036854775807)::BIGINT, \
             last_end = GREATEST(jobs.last_end, d.e), started_at = COALESCE(jobs.started_at, d.s) \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) \
             AS d(id, q, r, c, f, x, t, e, s) WHERE jobs.id = d.id",
            &[&ids, &q, &r, &c, &f, &x, &times, &ends, &starts],
        )
        .await?;
        Ok(())
    }

    async fn count_job(&mut self, id: &str) -> Result<Option<JobTally>, StoreError> {
        if self
            .opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let mut tally = JobTally {
            job_id: id.to_string(),
            ..JobTally::default()
        };
        for r in self
            .rows(
                "SELECT state, COUNT(*) FROM tasks WHERE job_id = $1 GROUP BY state",
                &[&id],
            )
            .await?
        {
            tally.states[state_index(state_of(r.get(0))?)] = r.get(1);
        }
        let spans = self
            .one(
                r#"SELECT COALESCE(SUM(n), 0)::BIGINT, COALESCE(MAX(e), 0)::BIGINT FROM
                   (SELECT span_end - started_at AS n, span_end AS e FROM tasks
                    WHERE job_id = $1 AND span_key IS NOT NULL AND span_end IS NOT NULL
                    UNION ALL SELECT "end" - start, "end" FROM spans
                    WHERE job_id = $1 AND "end" IS NOT NULL) AS ended"#,
                &[&id],
            )
            .await?;
        tally.task_time_ns = u(spans.get(0));
        tally.last_end = u(spans.get(1));
        Ok(Some(tally))
    }

    async fn insert_job(&mut self, job: &NewJob) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO jobs (id, name, cluster, root_id, submitted_at, pins, tenant_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &job.id,
                &job.name,
                &job.cluster,
                &job.root_id,
                &i(job.submitted_at),
                &job.pins,
                &job.tenant,
            ],
        )
        .await?;
        Ok(())
    }

    async fn set_job_flags(
        &mut self,
        id: &str,
        canceled: Option<bool>,
        failed: Option<bool>,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE jobs SET canceled = COALESCE($2, canceled), failed = COALESCE($3, failed) \
             WHERE id = $1",
            &[&id, &canceled, &failed],
        )
        .await?;
        Ok(())
    }

    async fn fail_jobs(&mut self, ids: &[String]) -> Result<(), StoreError> {
        if !ids.is_empty() {
            self.exec("UPDATE jobs SET failed = TRUE WHERE id = ANY($1)", &[&ids])
                .await?;
        }
        Ok(())
    }

    async fn complete_jobs(&mut self, ids: &[String], now: u64) -> Result<(), StoreError> {
        if !ids.is_empty() {
            self.exec(
                "UPDATE jobs SET completed_at = $2 WHERE id = ANY($1)",
                &[&ids, &i(now)],
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_job(&mut self, id: &str) -> Result<(), StoreError> {
        // Children before parents: outputs and edges name the job's tasks.
        for sql in [
            "DELETE FROM outputs WHERE task_id IN (SELECT id FROM tasks WHERE job_id = $1)",
            "DELETE FROM task_deps WHERE depends_on IN (SELECT id FROM tasks WHERE job_id = $1)",
            "DELETE FROM cache_entries WHERE job_id = $1",
            "DELETE FROM logs WHERE job_id = $1",
            "DELETE FROM spans WHERE job_id = $1",
            "DELETE FROM progress WHERE job_id = $1",
            "DELETE FROM tasks WHERE job_id = $1",
            "DELETE FROM jobs WHERE id = $1",
        ] {
            self.exec(sql, &[&id]).await?;
        }
        Ok(())
    }

    async fn cancel_queued(&mut self, job: &str, now: u64, why: &str) -> Result<u64, StoreError> {
        self.exec(
            "UPDATE tasks SET state = 'canceled', finished_at = $2, error = $3 \
             WHERE job_id = $1 AND state = 'queued'",
            &[&job, &i(now), &why],
        )
        .await
    }

    async fn requeue(&mut self, job: &str, from: TaskState) -> Result<u64, StoreError> {
        self.exec(
            "UPDATE tasks SET state = 'queued', retries_used = 0, not_before = 0, lost = 0, \
             finished_at = NULL, error = NULL WHERE job_id = $1 AND state = $2",
            &[&job, &from.as_str()],
        )
        .await
    }

    async fn insert_tasks(&mut self, tasks: &[NewTask]) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&NewTask) -> String| tasks.iter().map(f).collect::<Vec<String>>();
        let ids = col(|t| t.id.clone());
        let jobs = col(|t| t.job_id.clone());
        let paths = col(|t| t.path.clone());
        let names = col(|t| t.identifier.name.clone());
        let inputs = col(|t| t.input.clone());
        let clusters = col(|t| t.cluster.clone());
        let states = col(|t| t.state.as_str().to_string());
        let deps = col(|t| serde_json::to_string(&t.depends_on).expect("strings serialize"));
        let parents: Vec<Option<&str>> = tasks.iter().map(|t| t.parent_id.as_deref()).collect();
        let displays: Vec<Option<&str>> = tasks.iter().map(|t| t.display.as_deref()).collect();
        let depths: Vec<i32> = tasks.iter().map(|t| t.depth as i32).collect();
        let num = |f: fn(&NewTask) -> u64| tasks.iter().map(|t| i(f(t))).collect::<Vec<i64>>();
        let majors = num(|t| t.identifier.version.major.into());
        let minors = num(|t| t.identifier.version.minor.into());
        let pending = num(|t| t.depends_on.len() as u64);
        let retries = num(|t| t.max_retries.into());
        let created = num(|t| t.created_at);
        let finished: Vec<Option<i64>> = tasks.iter().map(|t| t.finished_at.map(i)).collect();
        let components: Vec<Option<&str>> = tasks.iter().map(|t| t.component.as_deref()).collect();
        let tenants: Vec<i64> = tasks.iter().map(|t| t.tenant).collect();
        self.exec(
            "INSERT INTO tasks (id, job_id, parent_id, depth, path, name, major, minor, input, display, \
             cluster, state, depends_on, pending_deps, max_retries, created_at, finished_at, component, \
             tenant_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], \
             $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
             $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[], $19::bigint[])",
            &[
                &ids, &jobs, &parents, &depths, &paths, &names, &majors, &minors, &inputs,
                &displays, &clusters, &states, &deps, &pending, &retries, &created, &finished,
                &components, &tenants,
            ],
        )
        .await?;
        let (mut dep_from, mut dep_to): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for t in tasks {
            for d in &t.depends_on {
                dep_from.push(d);
                dep_to.push(&t.id);
            }
        }
        if !dep_from.is_empty() {
            self.exec(
                "INSERT INTO task_deps (depends_on, task_id) SELECT * FROM UNNEST($1::text[], $2::text[])",
                &[&dep_from, &dep_to],
            )
            .await?;
        }
        Ok(())
    }

    async fn lock_tasks(&mut self, ids: &[&str]) -> Result<Vec<HeldRow>, StoreError> {
        // In id order, so concurrent batches cannot deadlock on each other's rows.
        self.rows(
            &format!("{HELD_SELECT} WHERE t.id = ANY($1) ORDER BY t.id FOR UPDATE OF t"),
            &[&ids],
        )
        .await?
        .iter()
        .map(held_from_row)
        .collect()
    }

    async fn lock_expired(&mut self, now: u64) -> Result<Vec<HeldRow>, StoreError> {
        // Rows another server's reaper or a late report holds are theirs to settle.
        self.rows(
            &format!(
                "{HELD_SELECT} WHERE t.state = 'running' AND t.lease_expires_at < $1 \
                 ORDER BY t.id FOR UPDATE OF t SKIP LOCKED"
            ),
            &[&i(now)],
        )
        .await?
        .iter()
        .map(held_from_row)
        .collect()
    }

    async fn set_states(&mut self, states: &[SetState]) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = states.iter().map(|s| s.id.as_str()).collect();
        let new: Vec<&str> = states.iter().map(|s| s.state.as_str()).collect();
        let set_error: Vec<bool> = states.iter().map(|s| s.error != ErrorText::Keep).collect();
        let errors: Vec<Option<&str>> = states
            .iter()
            .map(|s| match &s.error {
                ErrorText::Set(e) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        let displays: Vec<Option<&str>> = states.iter().map(|s| s.display.as_deref()).collect();
        let children: Vec<Option<i64>> = states.iter().map(|s| s.children.map(i)).collect();
        let spend: Vec<i64> = states.iter().map(|s| i64::from(s.spend_retry)).collect();
        let not_before: Vec<Option<i64>> = states.iter().map(|s| s.not_before.map(i)).collect();
        let finished: Vec<Option<i64>> = states.iter().map(|s| s.finished_at.map(i)).collect();
        let lost: Vec<i64> = states.iter().map(|s| i64::from(s.lost)).collect();
        let complete: Vec<bool> = states.iter().map(|s| s.complete).collect();
        let span_end: Vec<Option<i64>> = states
            .iter()
            .map(|s| s.span.as_ref().map(|e| i(e.at)))
            .collect();
        let span_outcome: Vec<Option<i64>> = states
            .iter()
            .map(|s| s.span.as_ref().map(|e| outcome_code(e.outcome)))
            .collect();
        let span_error: Vec<Option<&str>> = states
            .iter()
            .map(|s| s.span.as_ref().and_then(|e| e.error.as_deref()))
            .collect();
        self.exec(
            "UPDATE tasks SET state = d.state, \
             error = CASE WHEN d.set_error THEN d.error ELSE tasks.error END, \
             display = COALESCE(d.display, tasks.display), \
             children = COALESCE(d.children, tasks.children), \
             open_children = COALESCE(d.children, tasks.open_children), \
             retries_used = tasks.retries_used + d.spend, \
             not_before = COALESCE(d.not_before, tasks.not_before), finished_at = d.finished, \
             lost = d.lost, completed = tasks.completed OR d.complete, \
             lease_runner_ref = NULL, lease_expires_at = NULL, \
             span_end = COALESCE(d.span_end, tasks.span_end), \
             span_outcome = COALESCE(d.span_outcome, tasks.span_outcome), \
             span_error = CASE WHEN d.span_end IS NULL THEN tasks.span_error ELSE d.span_error END \
             FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::bigint[], \
             $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bool[], $12::bigint[], \
             $13::bigint[], $14::text[]) \
             AS d(id, state, set_error, error, display, children, spend, not_before, finished, lost, \
             complete, span_end, span_outcome, span_error) \
             WHERE tasks.id = d.id",
            &[
                &ids,
                &new,
                &set_error,
                &errors,
                &displays,
                &children,
                &spend,
                &not_before,
                &finished,
                &lost,
                &complete,
                &span_end,
                &span_outcome,
                &span_error,
            ],
        )
        .await?;
        Ok(())
    }

    async fn extend_leases(&mut self, ids: &[&str], expires: u64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE tasks SET lease_expires_at = $2 WHERE id = ANY($1)",
            &[&ids, &i(expires)],
        )
        .await?;
        Ok(())
    }

    async fn claim_eligible(
        &mut self,
        claim: &ClaimParams<'_>,
    ) -> Result<Vec<ClaimedRow>, StoreError> {
        let (names, majors, minors) = identifier_arrays(claim.identifiers);
        // Pick and lease in one statement; rows other claimers hold are skipped, not waited on.
        let sql = format!(
            "WITH added AS (INSERT INTO runner_names (name) SELECT $4 \
             WHERE NOT EXISTS (SELECT 1 FROM runner_names WHERE name = $4) \
             ON CONFLICT (name) DO NOTHING RETURNING id), \
             runner AS (SELECT id FROM added UNION ALL \
             SELECT id FROM runner_names WHERE name = $4 LIMIT 1), \
             picked AS (SELECT t.id, j.cache_seq FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE t.state = 'queued' AND t.tenant_id = $10 AND t.cluster = $1 AND t.pending_deps = 0 \
             AND t.not_before <= $2 AND NOT j.canceled AND NOT j.failed AND {} \
             ORDER BY t.job_id, t.path LIMIT $3 FOR UPDATE OF t SKIP LOCKED), \
             archived AS (INSERT INTO spans (id, job_id, task_id, attempt, runner_ref, name, \
             start, \"end\", outcome, error, component_id) \
             SELECT t.span_key, t.job_id, t.id, t.attempt, COALESCE(t.span_runner_ref, 0), \
             COALESCE(t.display, t.name), t.started_at, t.span_end, {}, t.span_error, \
             t.span_component_id FROM tasks t JOIN picked ON picked.id = t.id \
             WHERE t.span_key IS NOT NULL) \
             UPDATE tasks SET state = 'running', attempt = attempt + 1, \
             lease = ((('x' || substr(md5($9 || tasks.id), 1, 14))::bit(56)::bigint >> 3) + 1), \
             lease_runner_ref = (SELECT id FROM runner), \
             lease_expires_at = $5, started_at = $2, span_key = nextval('spans_id_seq'), \
             span_end = NULL, span_outcome = 0, span_error = NULL, \
             span_runner_ref = (SELECT id FROM runner), span_component_id = {} \
             FROM picked WHERE tasks.id = picked.id \
             RETURNING tasks.id, tasks.job_id, tasks.name, tasks.major, tasks.minor, tasks.input, tasks.attempt, \
             tasks.lease, tasks.path, tasks.display, tasks.component, \
             picked.cache_seq, tasks.lease_runner_ref, tasks.span_component_id",
            serves_match(claim.deployed, 6),
            ROW_OUTCOME_SQL.replace("span_outcome", "t.span_outcome"),
            ran_component(claim.deployed),
        );
        let mut picked = self
            .rows(
                &sql,
                &[
                    &claim.cluster,
                    &i(claim.now),
                    &i64::from(claim.max),
                    &claim.runner_id,
                    &i(claim.expires),
                    &names,
                    &majors,
                    &minors,
                    &lease_secret(),
                    &claim.tenant,
                    &claim.digests,
                ],
            )
            .await?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        picked.sort_by(|a, b| {
            (a.get::<_, &str>(1), a.get::<_, &str>(8))
                .cmp(&(b.get::<_, &str>(1), b.get::<_, &str>(8)))
        });
        let rows: Vec<ClaimedRow> = picked
            .iter()
            .map(|r| ClaimedRow {
                task_id: r.get(0),
                job_id: r.get(1),
                identifier: TaskIdentifier {
                    name: r.get(2),
                    version: Version {
                        major: r.get::<_, i64>(3) as u32,
                        minor: r.get::<_, i64>(4) as u32,
                    },
                },
                display: r.get(9),
                input: r.get(5),
                attempt: r.get::<_, i64>(6) as u32,
                lease: u(r.get(7)),
                component: r.get(10),
                cache_seq: u(r.get(11)),
            })
            .collect();
        // The runner was named once, in `runner_names`, by the pick (its number is new, and
        // returned by the insert, or found).
        // None only if another transaction added this runner's name and committed after this
        // statement began (a new runner's first claims, at once): retried as contention.
        if picked[0].get::<_, Option<i64>>(12).is_none() {
            return Err(StoreError::Contention(
                "a new runner's name was being recorded by another claim".into(),
            ));
        }
        // The pick named each span's component if its digest was known; one seen for the first
        // time is recorded in `digests` now, and the spans naming it written again.
        let (ids, unnamed): (Vec<&str>, Vec<String>) = rows
            .iter()
            .zip(&picked)
            .filter(|(_, p)| p.get::<_, Option<i64>>(13).is_none())
            .filter_map(|(r, _)| Some((r.task_id.as_str(), claim.ran(r)?)))
            .unzip();
        if !unnamed.is_empty() {
            self.exec(
                "INSERT INTO digests (digest) SELECT DISTINCT d FROM UNNEST($1::text[]) AS d \
                 ON CONFLICT (digest) DO NOTHING",
                &[&unnamed],
            )
            .await?;
            self.exec(
                "UPDATE tasks SET span_component_id = d.id \
                 FROM UNNEST($1::text[], $2::text[]) AS s(id, component) \
                 JOIN digests d ON d.digest = s.component WHERE tasks.id = s.id",
                &[&ids, &unnamed],
            )
            .await?;
        }
        Ok(rows)
    }

    async fn set_completed(&mut self, ids: &[String]) -> Result<Vec<CompletedRow>, StoreError> {
        Ok(self
            .rows(
                "UPDATE tasks SET completed = TRUE WHERE id = ANY($1) RETURNING id, parent_id, job_id",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| CompletedRow {
                id: r.get(0),
                parent_id: r.get(1),
                job_id: r.get(2),
            })
            .collect())
    }

    async fn release_dependents(&mut self, ids: &[String]) -> Result<(), StoreError> {
        self.exec(
            "UPDATE tasks SET pending_deps = pending_deps - c.n FROM (SELECT task_id, COUNT(*)::BIGINT AS n \
             FROM task_deps WHERE depends_on = ANY($1) GROUP BY task_id) AS c WHERE tasks.id = c.task_id",
            &[&ids],
        )
        .await?;
        Ok(())
    }

    async fn close_children(
        &mut self,
        counts: &[(String, u64)],
    ) -> Result<Vec<ParentRow>, StoreError> {
        let ids: Vec<&str> = counts.iter().map(|(id, _)| id.as_str()).collect();
        let ns: Vec<i64> = counts.iter().map(|(_, n)| i(*n)).collect();
        self.rows(
            "UPDATE tasks SET open_children = open_children - p.n \
             FROM UNNEST($1::text[], $2::bigint[]) AS p(id, n) WHERE tasks.id = p.id \
             RETURNING tasks.id, tasks.state, tasks.open_children",
            &[&ids, &ns],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ParentRow {
                id: r.get(0),
                state: state_of(r.get(1))?,
                open_children: r.get(2),
            })
        })
        .collect()
    }

    async fn add_progress(&mut self, progress: &[AddProgress]) -> Result<(), StoreError> {
        if progress.is_empty() {
            return Ok(());
        }
        let jobs: Vec<&str> = progress.iter().map(|p| p.job_id.as_str()).collect();
        let labels: Vec<&str> = progress.iter().map(|p| p.label.as_str()).collect();
        let done: Vec<i64> = progress.iter().map(|p| i(p.done)).collect();
        let total: Vec<i64> = progress.iter().map(|p| i(p.total)).collect();
        // Saturating at i64::MAX, so no report can make the counter unreadable.
        self.exec(
            "INSERT INTO progress (job_id, label, done, total) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (job_id, label) DO UPDATE SET \
             done = CASE WHEN progress.done > 9223372036854775807 - excluded.done \
                    THEN 9223372036854775807 ELSE progress.done + excluded.done END, \
             total = CASE WHEN progress.total > 9223372036854775807 - excluded.total \
                    THEN 9223372036854775807 ELSE progress.total + excluded.total END",
            &[&jobs, &labels, &done, &total],
        )
        .await?;
        Ok(())
    }

    async fn put_outputs(&mut self, outputs: &[PutOutput]) -> Result<(), StoreError> {
        if outputs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = outputs.iter().map(|o| o.task_id.as_str()).collect();
        let values: Vec<Option<&[u8]>> = outputs.iter().map(|o| o.value.as_deref()).collect();
        let sources: Vec<Option<&str>> = outputs.iter().map(|o| o.source.as_deref()).collect();
        self.exec(
            "INSERT INTO outputs (task_id, value, source) \
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[]) \
             ON CONFLICT (task_id) DO UPDATE SET value = excluded.value, source = excluded.source",
            &[&ids, &values, &sources],
        )
        .await?;
        Ok(())
    }

    async fn next_cache_seqs(&mut self, jobs: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let mut seqs = HashMap::with_capacity(jobs.len());
        // One at a time, in the caller's (id) order: row locks taken in one order never deadlock.
        for job in jobs {
            let rows = self
                .rows(
                    "UPDATE jobs SET cache_seq = cache_seq + 1 WHERE id = $1 RETURNING cache_seq",
                    &[job],
                )
                .await?;
            if let Some(r) = rows.first() {
                seqs.insert(job.to_string(), u(r.get(0)));
            }
        }
        Ok(seqs)
    }

    async fn write_cache(&mut self, writes: &[CacheSet]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let jobs: Vec<&str> = writes.iter().map(|w| w.job_id.as_str()).collect();
        let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
        let seqs: Vec<i64> = writes.iter().map(|w| i(w.seq)).collect();
        let values: Vec<Option<&[u8]>> = writes.iter().map(|w| w.value.as_deref()).collect();
        self.exec(
            "INSERT INTO cache_entries (job_id, key, seq, value) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[]) \
             ON CONFLICT (job_id, key, seq) DO UPDATE SET value = excluded.value",
            &[&jobs, &keys, &seqs, &values],
        )
        .await?;
        Ok(())
    }

    async fn compact_cache(&mut self, jobs: &[String]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.exec(
            "DELETE FROM cache_entries c WHERE c.job_id = ANY($1) AND (c.value IS NULL OR c.seq < \
             (SELECT max(seq) FROM cache_entries l WHERE l.job_id = c.job_id AND l.key = c.key))",
            &[&jobs],
        )
        .await?;
        Ok(())
    }

    async fn output(&mut self, task: &str) -> Result<Option<PutOutput>, StoreError> {
        Ok(self
            .rows(
                "SELECT value, source FROM outputs WHERE task_id = $1",
                &[&task],
            )
            .await?
            .first()
            .map(|r| PutOutput {
                task_id: task.to_string(),
                value: r.get(0),
                source: r.get(1),
            }))
    }

    async fn dependencies(&mut self, task: &str) -> Result<Vec<DependencyRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT t.id, t.path, t.state, octet_length(o.value)::bigint \
                 FROM tasks d \
                 CROSS JOIN LATERAL jsonb_array_elements_text(d.depends_on::jsonb) \
                     WITH ORDINALITY AS j(id, n) \
                 JOIN tasks t ON t.id = j.id \
                 LEFT JOIN outputs o ON o.task_id = t.id \
                 WHERE d.id = $1 ORDER BY j.n",
                &[&task],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DependencyRow {
                    task_id: r.get(0),
                    path: r.get(1),
                    state: state_of(r.get(2))?,
                    output_bytes: r.get::<_, Option<i64>>(3).map(|n| n.max(0) as u64),
                })
            })
            .collect()
    }

    async fn cache_get(
        &mut self,
        job: &str,
        key: &str,
        as_of: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .rows(
                "SELECT value FROM cache_entries WHERE job_id = $1 AND key = $2 AND seq <= $3 \
                 ORDER BY seq DESC LIMIT 1",
                &[&job, &key, &i(as_of)],
            )
            .await?
            .first()
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    async fn cache_keys(
        &mut self,
        job: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        as_of: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        // Keys compare bytewise; of each key, the latest version at or below `as_of`, unless
        // it is a delete.
        let range = key_range(prefix, after);
        let rows = self
            .rows(
                "SELECT c.key, octet_length(c.value)::bigint FROM cache_entries c \
                 WHERE c.job_id = $1 AND (c.key > $2 OR ($3 AND c.key = $2)) \
                 AND ($4::text IS NULL OR c.key < $4) AND c.value IS NOT NULL \
                 AND c.seq = (SELECT max(l.seq) FROM cache_entries l \
                     WHERE l.job_id = c.job_id AND l.key = c.key AND l.seq <= $6) \
                 ORDER BY c.key LIMIT $5",
                &[
                    &job,
                    &range.start,
                    &range.inclusive,
                    &range.end,
                    &i64::from(limit),
                    &i(as_of),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    async fn insert_logs(&mut self, lines: &[LogLine]) -> Result<(), StoreError> {
        let job_ids: Vec<&str> = lines.iter().map(|l| l.job_id.as_str()).collect();
        let task_ids: Vec<&str> = lines.iter().map(|l| l.task_id.as_str()).collect();
        let runners: Vec<&str> = lines.iter().map(|l| l.runner_id.as_str()).collect();
        let attempts: Vec<i64> = lines.iter().map(|l| i64::from(l.attempt)).collect();
        let times: Vec<i64> = lines.iter().map(|l| i(l.time_unix_nano)).collect();
        let levels: Vec<i64> = lines.iter().map(|l| level_rank(l.level)).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        let fields: Vec<String> = lines
            .iter()
            .map(|l| serde_json::to_string(&l.fields).expect("JSON maps serialize"))
            .collect();
        self.exec(
            "INSERT INTO logs (job_id, task_id, runner_id, attempt, time, level, message, fields) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::text[], $8::text[])",
            &[
                &job_ids, &task_ids, &runners, &attempts, &times, &levels, &messages, &fields,
            ],
        )
        .await?;
        Ok(())
    }

    #[cfg(feature = "testing")]
    async fn plant_tasks(&mut self, tasks: &[super::plant::PlantedTask]) -> Result<(), StoreError> {
        let root = tasks.first().map(|t| t.id.as_str()).unwrap_or_default();
        for t in tasks {
            if let Some(runner) = &t.runner {
                self.exec(
                    "INSERT INTO runner_names (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                    &[runner],
                )
                .await?;
            }
            let ints: Vec<i64> = vec![
                i64::from(t.depth),
                i64::from(t.identifier.version.major),
                i64::from(t.identifier.version.minor),
                i64::from(t.pending_deps),
                i(t.children),
                i(t.open_children),
                i64::from(t.retries_used),
                i64::from(t.max_retries),
                i64::from(t.attempt),
                i(t.lease),
                i(t.not_before),
                i(t.created_at),
                i64::from(t.lost),
            ];
            self.exec(
                "INSERT INTO tasks (id, job_id, parent_id, path, name, input, display, cluster, \
                 state, depends_on, completed, lease_runner_ref, lease_expires_at, error, started_at, \
                 finished_at, depth, major, minor, pending_deps, children, open_children, \
                 retries_used, max_retries, attempt, lease, not_before, created_at, lost) \
                 SELECT $1, j.id, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 (SELECT id FROM runner_names WHERE name = $11), $12, $13, $14, $15, \
                 n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[11], n[12], n[13] \
                 FROM jobs j, (SELECT $16::bigint[] AS n) AS ints WHERE j.root_id = $17",
                &[
                    &t.id,
                    &t.parent_id,
                    &t.path,
                    &t.identifier.name,
                    &t.input.to_string(),
                    &t.display,
                    &t.cluster,
                    &t.state.as_str(),
                    &serde_json::to_string(&t.depends_on).expect("strings serialize"),
                    &t.completed,
                    &t.runner,
                    &t.lease_expires_at.map(i),
                    &t.error,
                    &t.started_at.map(i),
                    &t.finished_at.map(i),
                    &ints,
                    &root,
                ],
            )
            .await?;
            for d in &t.depends_on {
                self.exec(
                    "INSERT INTO task_deps (depends_on, task_id) VALUES ($1, $2)",
                    &[d, &t.id],
                )
                .await?;
            }
            if t.state == TaskState::Running {
                self.exec(
                    "UPDATE tasks SET span_key = nextval('spans_id_seq'), span_outcome = 0, \
                     span_runner_ref = lease_runner_ref WHERE id = $1 AND started_at IS NOT NULL",
                    &[&t.id],
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn component_tenants(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Vec<TenantId>, StoreError> {
        let sql = format!(
            "SELECT tenant_id FROM components WHERE digest = $1 AND {} ORDER BY tenant_id",
            reach_sql(reach, "tenant_id")
        );
        Ok(self
            .rows(&sql, &[&digest])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn insert_tenant(
        &mut self,
        tenant: &tessera_api::Tenant,
    ) -> Result<TenantId, StoreError> {
        Ok(self
            .one(
                "INSERT INTO tenants (name, weight, created_at) VALUES ($1, $2, $3) RETURNING id",
                &[
                    &tenant.name,
                    &i64::from(tenant.weight),
                    &i(tenant.created_at),
                ],
            )
            .await?
            .get(0))
    }

    async fn tenants(
        &mut self,
        reach: Reach,
    ) -> Result<Vec<(TenantId, tessera_api::Tenant)>, StoreError> {
        let sql = format!(
            "SELECT id, name, weight, created_at, quotas FROM tenants WHERE {} ORDER BY name",
            reach_sql(reach, "id")
        );
        self.rows(&sql, &[])
            .await?
            .iter()
            .map(|r| Ok((r.get(0), tenant(r.get(1), r.get(2), r.get(3), r.get(4))?)))
            .collect()
    }

    async fn tenant_named(
        &mut self,
        name: &str,
    ) -> Result<Option<(TenantId, tessera_api::Tenant)>, StoreError> {
        self.opt(
            "SELECT id, name, weight, created_at, quotas FROM tenants WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|r| Ok((r.get(0), tenant(r.get(1), r.get(2), r.get(3), r.get(4))?)))
        .transpose()
    }

    async fn set_tenant(
        &mut self,
        id: TenantId,
        weight: u32,
        quotas: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE tenants SET weight = $2, quotas = $3 WHERE id = $1",
            &[&id, &i64::from(weight), &quotas],
        )
        .await?;
        Ok(())
    }

    async fn tenant_usage(&mut self, reach: Reach) -> Result<Vec<TenantLoad>, StoreError> {
        let sql = format!(
            "SELECT tenant_id, SUM(tasks_queued)::bigint, SUM(tasks_running)::bigint FROM jobs \
             WHERE completed_at IS NULL AND {} GROUP BY tenant_id \
             HAVING SUM(tasks_queued) > 0 OR SUM(tasks_running) > 0",
            reach_sql(reach, "tenant_id")
        );
        Ok(self
            .rows(&sql, &[])
            .await?
            .iter()
            .map(|r| TenantLoad {
                tenant: r.get(0),
                queued: u(r.get(1)),
                running: u(r.get(2)),
            })
            .collect())
    }

    async fn component_bytes_of(&mut self, tenant: TenantId) -> Result<u64, StoreError> {
        Ok(u(self
            .one(
                "SELECT COALESCE(SUM(size), 0)::bigint FROM components WHERE tenant_id = $1",
                &[&tenant],
            )
            .await?
            .get(0)))
    }

    async fn job_log_bytes(
        &mut self,
        jobs: &[&str],
    ) -> Result<HashMap<String, (TenantId, u64)>, StoreError> {
        Ok(self
            .rows(
                "SELECT id, tenant_id, log_bytes FROM jobs WHERE id = ANY($1)",
                &[&jobs],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), u(r.get(2)))))
            .collect())
    }

    async fn add_log_bytes(&mut self, added: &[(String, u64)]) -> Result<(), StoreError> {
        if added.is_empty() {
            return Ok(());
        }
        let jobs: Vec<&str> = added.iter().map(|(j, _)| j.as_str()).collect();
        let bytes: Vec<i64> = added.iter().map(|(_, b)| i(*b)).collect();
        self.exec(
            "UPDATE jobs SET log_bytes = jobs.log_bytes + a.bytes \
             FROM UNNEST($1::text[], $2::bigint[]) AS a(id, bytes) WHERE jobs.id = a.id",
            &[&jobs, &bytes],
        )
        .await?;
        Ok(())
    }

    async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO api_keys (id, tenant_id, role, name, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &key.id,
                &key.tenant,
                &key.role.as_str(),
                &key.name,
                &key.hash,
                &i(key.created_at),
            ],
        )
        .await?;
        Ok(())
    }

    async fn keys(&mut self, reach: Reach) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE {} ORDER BY k.created_at DESC, k.id LIMIT 1000",
            reach_sql(reach, "k.tenant_id")
        );
        self.rows(&sql, &[])
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn key(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.id = $1"
        );
        self.opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn revoke_key(&mut self, id: &str, now: u64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &i(now)],
        )
        .await?;
        Ok(())
    }

    async fn lease_of(&mut self, task: &str) -> Result<Option<super::LeaseOf>, StoreError> {
        Ok(self
            .opt(&format!("{LEASE_SELECT} WHERE t.id = $1"), &[&task])
            .await?
            .map(|r| super::LeaseOf {
                job_id: r.get(0),
                running: r.get(1),
                lease: u(r.get(2)),
                expires_at: r.get::<_, Option<i64>>(3).map(u),
                runner: r.get(4),
                component: r.get(5),
            }))
    }

    async fn lock_key(&mut self, id: &str) -> Result<bool, StoreError> {
        // FOR SHARE conflicts with the revocation's UPDATE: it waits for this claim to end, and
        // a claim that waited for it reads the row as revoked (READ COMMITTED re-reads a row
        // it locked after waiting).
        Ok(self
            .opt(
                "SELECT revoked_at IS NULL FROM api_keys WHERE id = $1 FOR SHARE",
                &[&id],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn keys_created(&mut self) -> Result<u64, StoreError> {
        Ok(u(self
            .one("SELECT COUNT(*) FROM api_keys", &[])
            .await?
            .get(0)))
    }

    async fn notify(&mut self, scope: &Scope) -> Result<(), StoreError> {
        if let Some(payload) = scope.to_payload() {
            let payload = format!("{}\n{payload}", self.origin);
            self.exec("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
        }
        self.notified.push(scope.clone());
        Ok(())
    }

    fn notified(&mut self) -> Vec<Scope> {
        std::mem::take(&mut self.notified)
    }
}

/// The first line of a notification from the server whose driver has `id`: each server skips
/// its own (its core has told its listener already) and reads the rest.
fn origin_line(id: u64) -> Arc<str> {
    Arc::from(format!("@{id:016x}"))
}

/// The scope another server's notification names, or `None` for this server's own (`origin`).
/// A payload without an origin line is from a server that predates them.
fn foreign_scope(payload: &str, origin: &str) -> Option<Scope> {
    match payload.split_once('\n') {
        Some((first, _)) if first == origin => None,
        Some((first, rest)) if first.starts_with('@') => Some(Scope::from_payload(rest)),
        _ if payload == origin => None,
        _ => Some(Scope::from_payload(payload)),
    }
}

/// Turns `NOTIFY tessera_work` from other servers into calls of `listener` with the scope its
/// payload names (see [`Scope::to_payload`]); reconnects on failure.
async fn listen_forever(url: String, origin: Arc<str>, listener: Arc<dyn CommitListener>) {
    use futures_util::StreamExt;
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    // Work may have appeared while we were not listening.
                    listener.committed(&Scope::Everyone);
                    futures_util::future::pending::<()>().await;
                    Ok::<(), tokio_postgres::Error>(())
                };
                tokio::pin!(listening);
                loop {
                    tokio::select! {
                        r = &mut listening => {
                            if let Err(e) = r {
                                tracing::warn!("LISTEN {CHANNEL} failed: {e}");
                            }
                            break;
                        }
                        message = messages.next() => match message {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                if let Some(scope) = foreign_scope(n.payload(), &origin) {
                                    listener.committed(&scope);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!("the PostgreSQL notification connection failed: {e}");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(e) => tracing::warn!("could not connect to PostgreSQL for notifications: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_skips_its_own_notifications_and_reads_the_others() {
        let (ours, theirs) = (origin_line(1), origin_line(2));
        let scope = Scope::Clusters(vec!["gpu".into()]);
        let sent = |origin: &str| format!("{origin}\n{}", scope.to_payload().unwrap());
        assert_eq!(foreign_scope(&sent(&ours), &ours), None);
        assert_eq!(foreign_scope(&sent(&theirs), &ours), Some(scope.clone()));
        let everyone = format!("{theirs}\n*");
        assert_eq!(foreign_scope(&everyone, &ours), Some(Scope::Everyone));
        // An older server sends no origin line.
        assert_eq!(foreign_scope("gpu", &ours), Some(scope));
        assert_eq!(foreign_scope("", &ours), Some(Scope::Everyone));
    }
}
