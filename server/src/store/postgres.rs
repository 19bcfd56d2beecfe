//! The PostgreSQL store, for several servers sharing one database.
//!
//! Claims lock rows with `FOR UPDATE SKIP LOCKED`; reports lock their task row, so a report and
//! the lease reaper of another server never both win; every change that may make work claimable
//! sends `NOTIFY tessera_work`, which every server LISTENs to and turns into a local wake-up.
//! Migrations run under an advisory lock, so servers may start together.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tessera_api::{
    ClaimRequest, ClaimedTask, Job, JobFilter, JobPage, JobState, LeaseRef, LeaseStatus, LogLine,
    LogPage, LogQuery, Outlook, OutlookRequest, ProgressUpdate, Report, ReportResult, Span,
    SpanOutcome, SpanPage, SpanQuery, SubmitJob, SubtaskSpec, Task, TaskCounts, TaskIdentifier,
    TaskPage, TaskQuery, TaskReport, TaskState, Version,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::common::*;
use super::{Store, StoreConfig, StoreError, check_name, page_size};
use crate::wake::Wake;

/// The notification channel that announces claimable work.
const CHANNEL: &str = "tessera_work";
/// Key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_61;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    root_id       TEXT NOT NULL,
    canceled      BOOLEAN NOT NULL DEFAULT FALSE,
    failed        BOOLEAN NOT NULL DEFAULT FALSE,
    submitted_at  BIGINT NOT NULL,
    started_at    BIGINT,
    completed_at  BIGINT
);
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    parent_id        TEXT,
    depth            INTEGER NOT NULL,
    path             TEXT COLLATE "C" NOT NULL,
    name             TEXT NOT NULL,
    major            BIGINT NOT NULL,
    minor            BIGINT NOT NULL,
    input            TEXT NOT NULL,
    display          TEXT,
    cluster          TEXT NOT NULL,
    state            TEXT NOT NULL,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    pending_deps     BIGINT NOT NULL DEFAULT 0,
    children         BIGINT NOT NULL DEFAULT 0,
    open_children    BIGINT NOT NULL DEFAULT 0,
    completed        BOOLEAN NOT NULL DEFAULT FALSE,
    retries_used     BIGINT NOT NULL DEFAULT 0,
    max_retries      BIGINT NOT NULL DEFAULT 0,
    attempt          BIGINT NOT NULL DEFAULT 0,
    lease            BIGINT NOT NULL DEFAULT 0,
    lease_runner     TEXT,
    lease_expires_at BIGINT,
    not_before       BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX tasks_job_path ON tasks(job_id, path);
CREATE INDEX tasks_parent_path ON tasks(parent_id, path);
CREATE INDEX tasks_job_state ON tasks(job_id, state);
CREATE INDEX tasks_queued ON tasks(cluster, job_id, path) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks(lease_expires_at) WHERE state = 'running';
CREATE TABLE task_deps (
    depends_on TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE TABLE progress (
    job_id TEXT NOT NULL,
    label  TEXT NOT NULL,
    done   BIGINT NOT NULL,
    total  BIGINT NOT NULL,
    PRIMARY KEY (job_id, label)
);
CREATE TABLE logs (
    id        BIGSERIAL PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    attempt   BIGINT NOT NULL,
    time      BIGINT NOT NULL,
    level     BIGINT NOT NULL,
    message   TEXT NOT NULL,
    fields    TEXT NOT NULL
);
CREATE INDEX logs_job_time ON logs(job_id, time, id);
CREATE TABLE spans (
    id        BIGSERIAL PRIMARY KEY,
    job_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    attempt   BIGINT NOT NULL,
    runner_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    start     BIGINT NOT NULL,
    "end"     BIGINT,
    outcome   TEXT NOT NULL,
    error     TEXT
);
CREATE INDEX spans_job_start ON spans(job_id, start, id);
CREATE UNIQUE INDEX spans_task_attempt ON spans(task_id, attempt);
"#];

/// The PostgreSQL job store.
pub struct PostgresStore {
    pool: Pool,
    url: String,
    config: StoreConfig,
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Internal(format!("PostgreSQL: {e}"))
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::Internal(format!("no PostgreSQL connection: {text}"))
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        db(e)
    }
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

impl PostgresStore {
    /// Connects, and applies pending migrations under an advisory lock.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<PostgresStore, StoreError> {
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
        let store = PostgresStore {
            pool,
            url: url.to_string(),
            config,
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Internal(m) => {
                StoreError::Internal(format!("could not prepare {}: {m}", redact(url)))
            }
            other => other,
        })?;
        Ok(store)
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

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
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

/// Runs a statement through the connection's prepared-statement cache.
async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// Queries through the connection's prepared-statement cache.
async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// One row, through the statement cache.
async fn one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

/// At most one row, through the statement cache.
async fn opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn notify(tx: &Transaction<'_>) -> Result<(), StoreError> {
    exec(tx, "SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    Ok(())
}

const TASK_SELECT: &str = "SELECT id, job_id, parent_id, depth, name, major, minor, input, display, \
    state, depends_on, attempt, retries_used, max_retries, cluster, lease_runner, error, \
    children, completed, created_at, started_at, finished_at, path FROM tasks";

fn task_from_row(r: &Row) -> (Task, String) {
    let name: String = r.get(4);
    let display: Option<String> = r.get(8);
    let input: String = r.get(7);
    let depends_on: String = r.get(10);
    let task = Task {
        id: r.get(0),
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
        state: state_of(r.get(9)),
        input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
        depends_on: serde_json::from_str(&depends_on).unwrap_or_default(),
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
    };
    (task, r.get(22))
}

async fn load_job(tx: &Transaction<'_>, id: &str) -> Result<Job, StoreError> {
    let row = opt(tx,
            "SELECT id, name, cluster, canceled, failed, submitted_at, started_at, completed_at FROM jobs WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound { what: "job", id: id.to_string() })?;
    let (canceled, failed): (bool, bool) = (row.get(3), row.get(4));
    let started_at: Option<i64> = row.get(6);
    let completed_at: Option<i64> = row.get(7);
    let mut counts = TaskCounts::default();
    for r in rows(
        tx,
        "SELECT state, COUNT(*) FROM tasks WHERE job_id = $1 GROUP BY state",
        &[&id],
    )
    .await?
    {
        counts.add(state_of(r.get(0)), u(r.get(1)));
    }
    let progress = rows(
        tx,
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
    let agg = one(tx,
            r#"SELECT MAX("end"), SUM("end" - start)::BIGINT FROM spans WHERE job_id = $1 AND "end" IS NOT NULL"#,
            &[&id],
        )
        .await?;
    let last_stop: Option<i64> = agg.get(0);
    let task_time: Option<i64> = agg.get(1);
    let state = derive_state(
        canceled,
        failed,
        completed_at.is_some(),
        started_at.is_some(),
    );
    Ok(Job {
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
            last_stop.or(completed_at).map(u)
        } else {
            None
        },
        task_time_ns: task_time.map(u).unwrap_or(0),
    })
}

/// Inserts tasks in one statement; returns their ids in order.
#[allow(clippy::too_many_arguments)]
async fn insert_tasks(
    tx: &Transaction<'_>,
    job_id: &str,
    parent: Option<(&str, &str, u32)>,
    specs: &[SubtaskSpec],
    default_cluster: &str,
    state: TaskState,
    now: u64,
) -> Result<Vec<String>, StoreError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = specs.iter().map(|_| new_id()).collect();
    let mut paths = Vec::with_capacity(specs.len());
    let mut names = Vec::with_capacity(specs.len());
    let mut majors = Vec::with_capacity(specs.len());
    let mut minors = Vec::with_capacity(specs.len());
    let mut inputs = Vec::with_capacity(specs.len());
    let mut displays: Vec<Option<String>> = Vec::with_capacity(specs.len());
    let mut clusters = Vec::with_capacity(specs.len());
    let mut deps_json = Vec::with_capacity(specs.len());
    let mut pending = Vec::with_capacity(specs.len());
    let mut retries = Vec::with_capacity(specs.len());
    let (mut dep_from, mut dep_to) = (Vec::new(), Vec::new());
    for (n, spec) in specs.iter().enumerate() {
        paths.push(match parent {
            Some((_, ppath, _)) => format!("{ppath}{}", path_segment(n)),
            None => String::new(),
        });
        names.push(spec.identifier.name.clone());
        majors.push(i64::from(spec.identifier.version.major));
        minors.push(i64::from(spec.identifier.version.minor));
        inputs.push(serde_json::to_string(&spec.input).expect("JSON values serialize"));
        displays.push(spec.display.clone());
        clusters.push(
            spec.cluster
                .clone()
                .unwrap_or_else(|| default_cluster.to_string()),
        );
        let deps: Vec<String> = spec
            .depends_on
            .iter()
            .map(|&d| ids[d as usize].clone())
            .collect();
        for d in &deps {
            dep_from.push(d.clone());
            dep_to.push(ids[n].clone());
        }
        deps_json.push(serde_json::to_string(&deps).expect("strings serialize"));
        pending.push(deps.len() as i64);
        retries.push(i64::from(spec.max_retries));
    }
    let (parent_id, depth) = match parent {
        Some((pid, _, pdepth)) => (Some(pid.to_string()), pdepth as i32 + 1),
        None => (None, 0),
    };
    let finished = (state == TaskState::Canceled).then_some(i(now));
    exec(tx,
        "INSERT INTO tasks (id, job_id, parent_id, depth, path, name, major, minor, input, display, cluster, \
         state, depends_on, pending_deps, max_retries, created_at, finished_at) \
         SELECT t.id, $1, $2, $3, t.path, t.name, t.major, t.minor, t.input, t.display, t.cluster, $4, \
         t.deps, t.pending, t.retries, $5, $6 \
         FROM UNNEST($7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::bigint[], $17::bigint[]) \
         AS t(id, path, name, major, minor, input, display, cluster, deps, pending, retries)",
        &[
            &job_id, &parent_id, &depth, &state.as_str(), &i(now), &finished,
            &ids, &paths, &names, &majors, &minors, &inputs, &displays, &clusters, &deps_json, &pending, &retries,
        ],
    )
    .await?;
    if !dep_from.is_empty() {
        exec(tx,
            "INSERT INTO task_deps (depends_on, task_id) SELECT * FROM UNNEST($1::text[], $2::text[])",
            &[&dep_from, &dep_to],
        )
        .await?;
    }
    Ok(ids)
}

async fn mark_completed(tx: &Transaction<'_>, task_id: &str, now: u64) -> Result<(), StoreError> {
    let mut current = task_id.to_string();
    loop {
        let row = one(
            tx,
            "UPDATE tasks SET completed = TRUE WHERE id = $1 RETURNING parent_id, job_id",
            &[&current],
        )
        .await?;
        let (parent, job): (Option<String>, String) = (row.get(0), row.get(1));
        exec(
            tx,
            "UPDATE tasks SET pending_deps = pending_deps - 1 \
             WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = $1)",
            &[&current],
        )
        .await?;
        let Some(parent) = parent else {
            exec(
                tx,
                "UPDATE jobs SET completed_at = $2 WHERE id = $1",
                &[&job, &i(now)],
            )
            .await?;
            return Ok(());
        };
        let row = one(tx,
                "UPDATE tasks SET open_children = open_children - 1 WHERE id = $1 RETURNING state, open_children",
                &[&parent],
            )
            .await?;
        let (state, open): (String, i64) = (row.get(0), row.get(1));
        if state != "computed" || open > 0 {
            return Ok(());
        }
        current = parent;
    }
}

async fn close_span(
    tx: &Transaction<'_>,
    task_id: &str,
    attempt: u32,
    outcome: SpanOutcome,
    error: Option<&str>,
    display: Option<&str>,
    now: u64,
) -> Result<(), StoreError> {
    exec(
        tx,
        r#"UPDATE spans SET "end" = $3, outcome = $4, error = $5, name = COALESCE($6, name)
           WHERE task_id = $1 AND attempt = $2 AND "end" IS NULL"#,
        &[
            &task_id,
            &i64::from(attempt),
            &i(now),
            &outcome_str(outcome),
            &error,
            &display,
        ],
    )
    .await?;
    Ok(())
}

/// Locks the task row and returns it if `lease` still holds it at `now`, else why not.
async fn held(
    tx: &Transaction<'_>,
    task_id: &str,
    lease: u64,
    now: u64,
) -> Result<Result<Held, String>, StoreError> {
    let Some(r) = opt(tx,
            "SELECT t.state, t.lease, t.lease_expires_at, t.job_id, t.cluster, t.path, t.depth, t.attempt, \
             t.retries_used, t.max_retries, j.canceled \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1 FOR UPDATE OF t",
            &[&task_id],
        )
        .await?
    else {
        return Ok(Err(format!("task {task_id} does not exist")));
    };
    let state: String = r.get(0);
    let current = u(r.get(1));
    let expires: Option<i64> = r.get(2);
    if let Err(why) = check_lease(task_id, lease, now, &state, current, expires.map(u)) {
        return Ok(Err(why));
    }
    Ok(Ok(Held {
        job_id: r.get(3),
        cluster: r.get(4),
        path: r.get(5),
        depth: r.get::<_, i32>(6) as u32,
        attempt: r.get::<_, i64>(7) as u32,
        retries_used: r.get::<_, i64>(8) as u32,
        max_retries: r.get::<_, i64>(9) as u32,
        job_canceled: r.get(10),
    }))
}

async fn fail_task(
    tx: &Transaction<'_>,
    config: &StoreConfig,
    task_id: &str,
    h: &Held,
    reason: &str,
    display: Option<&str>,
    now: u64,
) -> Result<(), StoreError> {
    close_span(
        tx,
        task_id,
        h.attempt,
        SpanOutcome::Failed,
        Some(reason),
        display,
        now,
    )
    .await?;
    match h.after_failure(config, now) {
        AfterFailure::Canceled => {
            exec(
                tx,
                "UPDATE tasks SET state = 'canceled', error = $2, display = COALESCE($3, display), \
             lease_runner = NULL, lease_expires_at = NULL, finished_at = $4 WHERE id = $1",
                &[&task_id, &reason, &display, &i(now)],
            )
            .await?;
        }
        AfterFailure::Retry { not_before } => {
            exec(tx,
            "UPDATE tasks SET state = 'queued', retries_used = retries_used + 1, error = $2, \
             display = COALESCE($3, display), lease_runner = NULL, lease_expires_at = NULL, not_before = $4 \
             WHERE id = $1",
            &[&task_id, &reason, &display, &i(not_before)],
        )
        .await?;
        }
        AfterFailure::Failed => {
            exec(
                tx,
                "UPDATE tasks SET state = 'failed', error = $2, display = COALESCE($3, display), \
             lease_runner = NULL, lease_expires_at = NULL, finished_at = $4 WHERE id = $1",
                &[&task_id, &reason, &display, &i(now)],
            )
            .await?;
            exec(
                tx,
                "UPDATE jobs SET failed = TRUE WHERE id = $1",
                &[&h.job_id],
            )
            .await?;
        }
    }
    Ok(())
}

async fn record_report(
    tx: &Transaction<'_>,
    config: &StoreConfig,
    task_id: &str,
    lease: u64,
    report: &Report,
    now: u64,
) -> Result<Result<(), String>, StoreError> {
    let h = match held(tx, task_id, lease, now).await? {
        Ok(h) => h,
        Err(why) => return Ok(Err(why)),
    };
    match report {
        Report::Computed {
            subtasks,
            display,
            progress,
        } => {
            if let Some(why) = check_subtasks(subtasks) {
                let reason = format!("the attempt submitted invalid subtasks: {why}");
                fail_task(tx, config, task_id, &h, &reason, display.as_deref(), now).await?;
                return Ok(Ok(()));
            }
            let state = if h.job_canceled {
                TaskState::Canceled
            } else {
                TaskState::Queued
            };
            insert_tasks(
                tx,
                &h.job_id,
                Some((task_id, &h.path, h.depth)),
                subtasks,
                &h.cluster,
                state,
                now,
            )
            .await?;
            let n = subtasks.len() as i64;
            exec(tx,
                "UPDATE tasks SET state = 'computed', display = COALESCE($2, display), children = $3, \
                 open_children = $3, lease_runner = NULL, lease_expires_at = NULL, error = NULL, finished_at = $4 \
                 WHERE id = $1",
                &[&task_id, display, &n, &i(now)],
            )
            .await?;
            for p in progress {
                exec(tx,
                    "INSERT INTO progress (job_id, label, done, total) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (job_id, label) DO UPDATE SET done = progress.done + excluded.done, \
                     total = progress.total + excluded.total",
                    &[&h.job_id, &p.label, &i(p.done), &i(p.total)],
                )
                .await?;
            }
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Computed,
                None,
                display.as_deref(),
                now,
            )
            .await?;
            if subtasks.is_empty() {
                mark_completed(tx, task_id, now).await?;
            }
        }
        Report::Failed { reason, display } => {
            fail_task(tx, config, task_id, &h, reason, display.as_deref(), now).await?;
        }
        Report::Abandoned => {
            let state = if h.job_canceled { "canceled" } else { "queued" };
            exec(tx,
                "UPDATE tasks SET state = $2, lease_runner = NULL, lease_expires_at = NULL WHERE id = $1",
                &[&task_id, &state],
            )
            .await?;
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Abandoned,
                None,
                None,
                now,
            )
            .await?;
        }
        Report::Canceled => {
            exec(tx,
                "UPDATE tasks SET state = 'canceled', lease_runner = NULL, lease_expires_at = NULL, \
                 finished_at = $2 WHERE id = $1",
                &[&task_id, &i(now)],
            )
            .await?;
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Canceled,
                None,
                None,
                now,
            )
            .await?;
        }
    }
    Ok(Ok(()))
}

/// Records computed leaves (no subtasks) in a handful of set-based statements; returns each
/// report's verdict by task id.
async fn computed_leaves(
    tx: &Transaction<'_>,
    leaves: &[&TaskReport],
    now: u64,
) -> Result<HashMap<String, Result<(), String>>, StoreError> {
    let mut verdicts = HashMap::new();
    if leaves.is_empty() {
        return Ok(verdicts);
    }
    let mut ids: Vec<&str> = leaves.iter().map(|r| r.task_id.as_str()).collect();
    ids.sort_unstable();
    // Lock in id order, so concurrent batches cannot deadlock on each other's rows.
    let found: HashMap<String, Row> = rows(
        tx,
        "SELECT id, state, lease, lease_expires_at, attempt, parent_id, job_id FROM tasks \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?
    .into_iter()
    .map(|r| (r.get::<_, String>(0), r))
    .collect();
    let (mut ok_ids, mut attempts, mut displays) = (Vec::new(), Vec::new(), Vec::new());
    let mut parents: HashMap<String, i64> = HashMap::new();
    let mut roots: Vec<String> = Vec::new();
    let mut progress: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for r in leaves {
        let verdict = match found.get(&r.task_id) {
            None => Err(format!("task {} does not exist", r.task_id)),
            Some(row) => {
                let state: String = row.get(1);
                let expires: Option<i64> = row.get(3);
                check_lease(
                    &r.task_id,
                    r.lease,
                    now,
                    &state,
                    u(row.get(2)),
                    expires.map(u),
                )
            }
        };
        if verdict.is_ok() && !ok_ids.contains(&r.task_id) {
            let row = &found[&r.task_id];
            let Report::Computed {
                display,
                progress: p,
                ..
            } = &r.report
            else {
                unreachable!("leaves are computed")
            };
            ok_ids.push(r.task_id.clone());
            attempts.push(row.get::<_, i64>(4));
            displays.push(display.clone());
            let job: String = row.get(6);
            match row.get::<_, Option<String>>(5) {
                Some(parent) => *parents.entry(parent).or_default() += 1,
                None => roots.push(job.clone()),
            }
            for update in p {
                let e = progress
                    .entry((job.clone(), update.label.clone()))
                    .or_default();
                e.0 += update.done;
                e.1 += update.total;
            }
        }
        verdicts.insert(r.task_id.clone(), verdict);
    }
    if ok_ids.is_empty() {
        return Ok(verdicts);
    }
    exec(
        tx,
        "UPDATE tasks SET state = 'computed', display = COALESCE(d.display, tasks.display), children = 0, \
         open_children = 0, completed = TRUE, lease_runner = NULL, lease_expires_at = NULL, error = NULL, \
         finished_at = $3 FROM UNNEST($1::text[], $2::text[]) AS d(id, display) WHERE tasks.id = d.id",
        &[&ok_ids, &displays, &i(now)],
    )
    .await?;
    exec(
        tx,
        r#"UPDATE spans SET "end" = $4, outcome = 'computed', error = NULL, name = COALESCE(d.display, spans.name)
           FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS d(id, attempt, display)
           WHERE spans.task_id = d.id AND spans.attempt = d.attempt AND spans."end" IS NULL"#,
        &[&ok_ids, &attempts, &displays, &i(now)],
    )
    .await?;
    for ((job, label), (done, total)) in &progress {
        exec(
            tx,
            "INSERT INTO progress (job_id, label, done, total) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, label) DO UPDATE SET done = progress.done + excluded.done, \
             total = progress.total + excluded.total",
            &[job, label, &i(*done), &i(*total)],
        )
        .await?;
    }
    exec(
        tx,
        "UPDATE tasks SET pending_deps = pending_deps - c.n FROM (SELECT task_id, COUNT(*)::BIGINT AS n \
         FROM task_deps WHERE depends_on = ANY($1) GROUP BY task_id) AS c WHERE tasks.id = c.task_id",
        &[&ok_ids],
    )
    .await?;
    if !roots.is_empty() {
        exec(
            tx,
            "UPDATE jobs SET completed_at = $2 WHERE id = ANY($1)",
            &[&roots, &i(now)],
        )
        .await?;
    }
    if !parents.is_empty() {
        let mut list: Vec<(String, i64)> = parents.into_iter().collect();
        list.sort();
        let (ids, counts): (Vec<String>, Vec<i64>) = list.into_iter().unzip();
        let updated = rows(
            tx,
            "UPDATE tasks SET open_children = open_children - p.n FROM UNNEST($1::text[], $2::bigint[]) AS p(id, n) \
             WHERE tasks.id = p.id RETURNING tasks.id, tasks.state, tasks.open_children",
            &[&ids, &counts],
        )
        .await?;
        for r in updated {
            let (state, open): (String, i64) = (r.get(1), r.get(2));
            if state == "computed" && open == 0 {
                mark_completed(tx, r.get::<_, &str>(0), now).await?;
            }
        }
    }
    Ok(verdicts)
}

/// `(t.name = $k AND t.major = $k+1 AND t.minor <= $k+2) OR …`, numbering from `first`.
fn identifier_clause(
    identifiers: &[TaskIdentifier],
    first: usize,
    params: &mut Vec<Box<dyn ToSql + Sync + Send>>,
) -> String {
    let mut clause = String::from("(");
    for (n, id) in identifiers.iter().enumerate() {
        if n > 0 {
            clause.push_str(" OR ");
        }
        let k = first + 3 * n;
        clause.push_str(&format!(
            "(t.name = ${k} AND t.major = ${} AND t.minor <= ${})",
            k + 1,
            k + 2
        ));
        params.push(Box::new(id.name.clone()));
        params.push(Box::new(i64::from(id.version.major)));
        params.push(Box::new(i64::from(id.version.minor)));
    }
    clause.push(')');
    clause
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn submit(&self, job: &SubmitJob, now: u64) -> Result<Job, StoreError> {
        check_name("job name", &job.name)?;
        let cluster = job.cluster.clone().unwrap_or_else(|| "default".into());
        check_name("cluster", &cluster)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = new_id();
        let spec = SubtaskSpec {
            identifier: job.root.identifier.clone(),
            input: job.root.input.clone(),
            display: job.root.display.clone(),
            depends_on: vec![],
            max_retries: job.root.max_retries,
            cluster: None,
        };
        let root = insert_tasks(&tx, &id, None, &[spec], &cluster, TaskState::Queued, now)
            .await?
            .remove(0);
        exec(&tx,
            "INSERT INTO jobs (id, name, cluster, root_id, submitted_at) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &job.name, &cluster, &root, &i(now)],
        )
        .await?;
        notify(&tx).await?;
        let job = load_job(&tx, &id).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn job(&self, id: &str) -> Result<Job, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        load_job(&tx, id).await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let limit = page_size(filter.limit, 50, 500)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut sql = String::from("SELECT id FROM jobs WHERE TRUE");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(state) = filter.state {
            arg(
                &mut sql,
                &format!(" AND {JOB_STATE_SQL} = ?"),
                Box::new(state.as_str().to_string()),
            );
        }
        if let Some(name) = &filter.name {
            arg(&mut sql, " AND strpos(name, ?) > 0", Box::new(name.clone()));
        }
        if let Some(since) = filter.since {
            arg(&mut sql, " AND submitted_at >= ?", Box::new(i(since)));
        }
        if let Some(until) = filter.until {
            arg(&mut sql, " AND submitted_at < ?", Box::new(i(until)));
        }
        if let Some(cursor) = &filter.cursor {
            arg(&mut sql, " AND id < ?", Box::new(cursor.clone()));
        }
        arg(
            &mut sql,
            " ORDER BY id DESC LIMIT ?",
            Box::new(i64::from(limit) + 1),
        );
        let mut ids: Vec<String> = rows(&tx, &sql, &refs(&params))
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let more = ids.len() > limit as usize;
        ids.truncate(limit as usize);
        let mut jobs = Vec::with_capacity(ids.len());
        for id in &ids {
            jobs.push(load_job(&tx, id).await?);
        }
        Ok(JobPage {
            next_cursor: if more { ids.last().cloned() } else { None },
            jobs,
        })
    }

    async fn tasks(&self, job: &str, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let limit = page_size(query.limit, 100, 1000)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        load_job(&tx, job).await?;
        let mut sql = format!("{TASK_SELECT} WHERE job_id = $1");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(job.to_string())];
        if let Some(parent) = &query.parent {
            params.push(Box::new(parent.clone()));
            sql.push_str(&format!(" AND parent_id = ${}", params.len()));
        }
        if let Some(state) = query.state {
            params.push(Box::new(state.as_str().to_string()));
            sql.push_str(&format!(" AND state = ${}", params.len()));
        }
        if let Some(cursor) = &query.cursor {
            params.push(Box::new(cursor.clone()));
            sql.push_str(&format!(" AND path > ${}", params.len()));
        }
        params.push(Box::new(i64::from(limit) + 1));
        sql.push_str(&format!(" ORDER BY path LIMIT ${}", params.len()));
        let mut rows: Vec<(Task, String)> = rows(&tx, &sql, &refs(&params))
            .await?
            .iter()
            .map(task_from_row)
            .collect();
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
    }

    async fn task(&self, id: &str) -> Result<Task, StoreError> {
        let client = self.client().await?;
        opt(&client, &format!("{TASK_SELECT} WHERE id = $1"), &[&id])
            .await?
            .map(|r| task_from_row(&r).0)
            .ok_or_else(|| StoreError::NotFound {
                what: "task",
                id: id.to_string(),
            })
    }

    async fn cancel(&self, job: &str, now: u64) -> Result<Job, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        opt(&tx, "SELECT id FROM jobs WHERE id = $1 FOR UPDATE", &[&job]).await?;
        let current = load_job(&tx, job).await?;
        if current.state == JobState::Completed {
            return Err(StoreError::Invalid(format!(
                "job {job} already completed; there is nothing left to cancel"
            )));
        }
        exec(
            &tx,
            "UPDATE jobs SET canceled = TRUE WHERE id = $1",
            &[&job],
        )
        .await?;
        exec(&tx,
            "UPDATE tasks SET state = 'canceled', finished_at = $2 WHERE job_id = $1 AND state = 'queued'",
            &[&job, &i(now)],
        )
        .await?;
        let out = load_job(&tx, job).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn retry(&self, job: &str, _now: u64) -> Result<Job, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        opt(&tx, "SELECT id FROM jobs WHERE id = $1 FOR UPDATE", &[&job]).await?;
        let current = load_job(&tx, job).await?;
        if current.task_counts.failed == 0 && current.task_counts.canceled == 0 && !current.canceled
        {
            return Err(StoreError::Invalid(format!(
                "job {job} has no failed or canceled tasks to retry (it is {})",
                current.state
            )));
        }
        exec(
            &tx,
            "UPDATE jobs SET canceled = FALSE, failed = FALSE WHERE id = $1",
            &[&job],
        )
        .await?;
        exec(&tx,
            "UPDATE tasks SET state = 'queued', retries_used = 0, not_before = 0, finished_at = NULL \
             WHERE job_id = $1 AND state IN ('failed', 'canceled')",
            &[&job],
        )
        .await?;
        notify(&tx).await?;
        let out = load_job(&tx, job).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        if request.identifiers.is_empty() || request.max == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let expires = i(now + self.config.lease.as_nanos() as u64);
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
            Box::new(request.cluster.clone()),
            Box::new(i(now)),
            Box::new(i64::from(request.max)),
            Box::new(request.runner_id.clone()),
            Box::new(expires),
        ];
        let idents = identifier_clause(&request.identifiers, 6, &mut params);
        // Pick and lease in one statement; rows other claimers hold are skipped, not waited on.
        let sql = format!(
            "WITH picked AS (SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE t.state = 'queued' AND t.cluster = $1 AND t.pending_deps = 0 AND t.not_before <= $2 \
             AND NOT j.canceled AND NOT j.failed AND {idents} \
             ORDER BY t.job_id, t.path LIMIT $3 FOR UPDATE OF t SKIP LOCKED) \
             UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = lease + 1, lease_runner = $4, \
             lease_expires_at = $5, started_at = COALESCE(started_at, $2) FROM picked WHERE tasks.id = picked.id \
             RETURNING tasks.id, tasks.job_id, tasks.name, tasks.major, tasks.minor, tasks.input, tasks.attempt, \
             tasks.lease, COALESCE(tasks.display, tasks.name), tasks.path"
        );
        let mut picked = rows(&tx, &sql, &refs(&params)).await?;
        picked.sort_by(|a, b| {
            (a.get::<_, &str>(1), a.get::<_, &str>(9))
                .cmp(&(b.get::<_, &str>(1), b.get::<_, &str>(9)))
        });
        let ids: Vec<String> = picked.iter().map(|r| r.get(0)).collect();
        let jobs: Vec<String> = picked.iter().map(|r| r.get(1)).collect();
        let attempts: Vec<i64> = picked.iter().map(|r| r.get(6)).collect();
        let names: Vec<String> = picked.iter().map(|r| r.get(8)).collect();
        if !ids.is_empty() {
            exec(
                &tx,
                "INSERT INTO spans (job_id, task_id, attempt, runner_id, name, start, outcome) \
                 SELECT s.job, s.id, s.attempt, $5, s.name, $6, 'running' \
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[]) AS s(id, job, attempt, name)",
                &[&ids, &jobs, &attempts, &names, &request.runner_id, &i(now)],
            )
            .await?;
            let mut distinct = jobs.clone();
            distinct.dedup();
            exec(
                &tx,
                "UPDATE jobs SET started_at = COALESCE(started_at, $2) WHERE id = ANY($1)",
                &[&distinct, &i(now)],
            )
            .await?;
        }
        tx.commit().await?;
        let lease_ms = self.config.lease.as_millis() as u64;
        Ok(picked
            .iter()
            .map(|r| {
                let input: String = r.get(5);
                ClaimedTask {
                    task_id: r.get(0),
                    job_id: r.get(1),
                    identifier: TaskIdentifier {
                        name: r.get(2),
                        version: Version {
                            major: r.get::<_, i64>(3) as u32,
                            minor: r.get::<_, i64>(4) as u32,
                        },
                    },
                    input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
                    attempt: r.get::<_, i64>(6) as u32,
                    lease: u(r.get(7)),
                    lease_ms,
                }
            })
            .collect())
    }

    async fn report(
        &self,
        _runner_id: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Leaves that computed are the bulk of any fan-out: record them set-based.
        let is_leaf = |r: &TaskReport| matches!(&r.report, Report::Computed { subtasks, .. } if subtasks.is_empty());
        let leaves: Vec<&TaskReport> = reports.iter().filter(|r| is_leaf(r)).collect();
        let mut verdicts = computed_leaves(&tx, &leaves, now).await?;
        let mut results = Vec::with_capacity(reports.len());
        for r in reports {
            let verdict = if is_leaf(r) {
                verdicts.remove(&r.task_id).unwrap_or_else(|| {
                    Err(format!(
                        "task {} was reported twice in one batch",
                        r.task_id
                    ))
                })
            } else {
                record_report(&tx, &self.config, &r.task_id, r.lease, &r.report, now).await?
            };
            results.push(ReportResult {
                task_id: r.task_id.clone(),
                accepted: verdict.is_ok(),
                error: verdict.err(),
            });
        }
        if results.iter().any(|r| r.accepted) {
            notify(&tx).await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn extend(
        &self,
        _runner_id: &str,
        leases: &[LeaseRef],
        now: u64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        let client = self.client().await?;
        let expires = i(now + self.config.lease.as_nanos() as u64);
        let lease_ms = self.config.lease.as_millis() as u64;
        let ids: Vec<&str> = leases.iter().map(|l| l.task_id.as_str()).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| i(l.lease)).collect();
        // One statement for every lease the runner holds.
        let held: HashMap<String, bool> = rows(
            &client,
            "UPDATE tasks SET lease_expires_at = $3 FROM UNNEST($1::text[], $2::bigint[]) AS l(id, lease) \
             WHERE tasks.id = l.id AND tasks.state = 'running' AND tasks.lease = l.lease \
             AND tasks.lease_expires_at >= $4 \
             RETURNING tasks.id, (SELECT canceled FROM jobs WHERE jobs.id = tasks.job_id)",
            &[&ids, &tokens, &expires, &i(now)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        Ok(leases
            .iter()
            .map(|l| match held.get(&l.task_id) {
                Some(&canceled) => LeaseStatus {
                    task_id: l.task_id.clone(),
                    held: true,
                    canceled,
                    lease_ms,
                },
                None => LeaseStatus {
                    task_id: l.task_id.clone(),
                    held: false,
                    canceled: false,
                    lease_ms: 0,
                },
            })
            .collect())
    }

    async fn outlook(&self, request: &OutlookRequest) -> Result<Outlook, StoreError> {
        if request.identifiers.is_empty() {
            return Ok(Outlook::default());
        }
        let client = self.client().await?;
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(request.cluster.clone())];
        let idents = identifier_clause(&request.identifiers, 2, &mut params);
        let queued: i64 = one(&client,
                &format!(
                    "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.state = 'queued' \
                     AND t.cluster = $1 AND NOT j.canceled AND NOT j.failed AND {idents}"
                ),
                &refs(&params),
            )
            .await?
            .get(0);
        let running: i64 = one(
            &client,
            "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND cluster = $1",
            &[&request.cluster],
        )
        .await?
        .get(0);
        Ok(Outlook {
            queued: u(queued),
            running: u(running),
        })
    }

    async fn reap(&self, now: u64) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Row locks make this safe with many servers: a lease is requeued by one of them.
        let expired = rows(&tx,
                "UPDATE tasks SET state = CASE WHEN (SELECT canceled FROM jobs WHERE jobs.id = tasks.job_id) \
                 THEN 'canceled' ELSE 'queued' END, lease_runner = NULL, lease_expires_at = NULL \
                 WHERE state = 'running' AND lease_expires_at < $1 RETURNING id, attempt",
                &[&i(now)],
            )
            .await?;
        for r in &expired {
            let id: String = r.get(0);
            let attempt = r.get::<_, i64>(1) as u32;
            let why = Some("the runner's lease expired (runner gone or unreachable)");
            close_span(&tx, &id, attempt, SpanOutcome::Expired, why, None, now).await?;
        }
        if !expired.is_empty() {
            notify(&tx).await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    async fn add_logs(&self, logs: Vec<LogLine>) -> Result<u64, StoreError> {
        if logs.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let mut ids: Vec<String> = logs.iter().map(|l| l.task_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let jobs: HashMap<String, String> = rows(
            &client,
            "SELECT id, job_id FROM tasks WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        for line in &logs {
            let Some(job) = jobs.get(&line.task_id) else {
                return Err(StoreError::Invalid(format!(
                    "log line names task {:?}, which does not exist; nothing of this batch was stored",
                    line.task_id
                )));
            };
            if !line.job_id.is_empty() && &line.job_id != job {
                return Err(StoreError::Invalid(format!(
                    "log line names job {} but task {} belongs to job {job}; nothing of this batch was stored",
                    line.job_id, line.task_id
                )));
            }
        }
        let job_ids: Vec<&str> = logs.iter().map(|l| jobs[&l.task_id].as_str()).collect();
        let task_ids: Vec<&str> = logs.iter().map(|l| l.task_id.as_str()).collect();
        let runners: Vec<&str> = logs.iter().map(|l| l.runner_id.as_str()).collect();
        let attempts: Vec<i64> = logs.iter().map(|l| i64::from(l.attempt)).collect();
        let times: Vec<i64> = logs.iter().map(|l| i(l.time_unix_nano)).collect();
        let levels: Vec<i64> = logs.iter().map(|l| level_rank(l.level)).collect();
        let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        let fields: Vec<String> = logs
            .iter()
            .map(|l| serde_json::to_string(&l.fields).expect("JSON maps serialize"))
            .collect();
        exec(&client,
                "INSERT INTO logs (job_id, task_id, runner_id, attempt, time, level, message, fields) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::text[])",
                &[&job_ids, &task_ids, &runners, &attempts, &times, &levels, &messages, &fields],
            )
            .await?;
        Ok(logs.len() as u64)
    }

    async fn logs(&self, job: &str, query: &LogQuery) -> Result<LogPage, StoreError> {
        let limit = page_size(query.limit, 500, 5000)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        load_job(&tx, job).await?;
        let mut sql = String::from(
            "SELECT id, time, level, message, task_id, job_id, runner_id, attempt, fields FROM logs WHERE job_id = $1",
        );
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(job.to_string())];
        if let Some(task) = &query.task {
            params.push(Box::new(task.clone()));
            sql.push_str(&format!(" AND task_id = ${}", params.len()));
        }
        if let Some(level) = query.level {
            params.push(Box::new(level_rank(level)));
            sql.push_str(&format!(" AND level >= ${}", params.len()));
        }
        if let Some(cursor) = &query.cursor {
            let (time, id) = split_cursor(cursor)?;
            params.push(Box::new(i(time)));
            params.push(Box::new(id));
            let (a, b) = (params.len() - 1, params.len());
            sql.push_str(&format!(
                " AND (time > ${a} OR (time = ${a} AND id > ${b}))"
            ));
        }
        params.push(Box::new(i64::from(limit)));
        sql.push_str(&format!(" ORDER BY time, id LIMIT ${}", params.len()));
        let rows = rows(&tx, &sql, &refs(&params)).await?;
        let logs: Vec<(i64, LogLine)> = rows
            .iter()
            .map(|r| {
                let fields: String = r.get(8);
                (
                    r.get(0),
                    LogLine {
                        time_unix_nano: u(r.get(1)),
                        level: rank_level(r.get(2)),
                        message: r.get(3),
                        task_id: r.get(4),
                        job_id: r.get(5),
                        runner_id: r.get(6),
                        attempt: r.get::<_, i64>(7) as u32,
                        fields: serde_json::from_str(&fields).unwrap_or_default(),
                    },
                )
            })
            .collect();
        let next_cursor = logs
            .last()
            .map(|(id, l)| format!("{}:{id}", l.time_unix_nano))
            .or(query.cursor.clone());
        Ok(LogPage {
            logs: logs.into_iter().map(|(_, l)| l).collect(),
            next_cursor,
        })
    }

    async fn spans(&self, job: &str, query: &SpanQuery) -> Result<SpanPage, StoreError> {
        let limit = page_size(query.limit, 1000, 5000)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        load_job(&tx, job).await?;
        let mut sql = String::from(
            r#"SELECT id, name, task_id, job_id, runner_id, attempt, start, "end", outcome, error FROM spans WHERE job_id = $1"#,
        );
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(job.to_string())];
        if let Some(task) = &query.task {
            params.push(Box::new(task.clone()));
            sql.push_str(&format!(" AND task_id = ${}", params.len()));
        }
        if let Some(cursor) = &query.cursor {
            let (start, id) = split_cursor(cursor)?;
            params.push(Box::new(i(start)));
            params.push(Box::new(id));
            let (a, b) = (params.len() - 1, params.len());
            sql.push_str(&format!(
                " AND (start > ${a} OR (start = ${a} AND id > ${b}))"
            ));
        }
        params.push(Box::new(i64::from(limit) + 1));
        sql.push_str(&format!(" ORDER BY start, id LIMIT ${}", params.len()));
        let mut rows: Vec<(i64, Span)> = rows(&tx, &sql, &refs(&params))
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Span {
                        name: r.get(1),
                        task_id: r.get(2),
                        job_id: r.get(3),
                        runner_id: r.get(4),
                        attempt: r.get::<_, i64>(5) as u32,
                        start_time_unix_nano: u(r.get(6)),
                        end_time_unix_nano: r.get::<_, Option<i64>>(7).map(u),
                        outcome: outcome_of(r.get(8)),
                        error: r.get(9),
                    },
                )
            })
            .collect();
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
    }

    async fn next_retry_at(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = one(
            &client,
            "SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0",
            &[],
        )
        .await?;
        Ok(row.get::<_, Option<i64>>(0).map(u))
    }

    fn forward_wakeups(&self, wake: Wake) {
        let url = self.url.clone();
        tokio::spawn(listen_forever(url, wake));
    }
}

/// Turns `NOTIFY tessera_work` from any server into local wake-ups; reconnects on failure.
async fn listen_forever(url: String, wake: Wake) {
    use futures_util::StreamExt;
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    // Work may have appeared while we were not listening.
                    wake.notify();
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
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify(),
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
