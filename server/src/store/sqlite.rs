//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection serializes every change (each method is one `BEGIN IMMEDIATE`
//! transaction); a few reader connections serve queries beside it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tessera_api::{
    ClaimRequest, ClaimedTask, Job, JobFilter, JobPage, JobState, LeaseRef, LeaseStatus, LogLine,
    LogPage, LogQuery, Outlook, OutlookRequest, ProgressUpdate, Report, ReportResult, Span,
    SpanOutcome, SpanPage, SpanQuery, SubmitJob, SubtaskSpec, Task, TaskCounts, TaskIdentifier,
    TaskPage, TaskQuery, TaskReport, TaskState, Version,
};

use super::common::*;
use super::schema::MIGRATIONS;
use super::{Store, StoreConfig, StoreError, check_name, page_size};

/// The SQLite job store.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    config: StoreConfig,
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database has schema version {applied}, newer than this tessera ({}); \
             upgrade tessera or use another database file",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Internal(format!("could not create {}: {e}", dir.display()))
            })?;
        }
        let open = || {
            Connection::open(path).map_err(|e| {
                StoreError::Internal(format!("could not open {}: {e}", path.display()))
            })
        };
        let mut writer = open()?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let readers = (0..3)
            .map(|_| {
                let c = open()?;
                configure(&c)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            config,
        })
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &StoreConfig) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let writer = self.writer.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let result = f(&tx, &config)?;
            tx.commit()?;
            Ok(result)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let mut conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&tx)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<(Task, String)> {
    let name: String = r.get(4)?;
    let input: String = r.get(7)?;
    let display: Option<String> = r.get(8)?;
    let depends_on: String = r.get(10)?;
    let task = Task {
        id: r.get(0)?,
        job_id: r.get(1)?,
        parent_id: r.get(2)?,
        depth: r.get(3)?,
        identifier: TaskIdentifier {
            name: name.clone(),
            version: Version {
                major: r.get(5)?,
                minor: r.get(6)?,
            },
        },
        display: display.unwrap_or(name),
        state: state_of(&r.get::<_, String>(9)?),
        input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
        depends_on: serde_json::from_str(&depends_on).unwrap_or_default(),
        attempts: r.get(11)?,
        retries_used: r.get(12)?,
        max_retries: r.get(13)?,
        cluster: r.get(14)?,
        runner_id: r.get(15)?,
        error: r.get(16)?,
        children: r.get(17)?,
        completed: r.get(18)?,
        created_at: r.get(19)?,
        started_at: r.get(20)?,
        finished_at: r.get(21)?,
    };
    Ok((task, r.get(22)?))
}

/// Reads a job with its counts, progress and span times.
fn load_job(tx: &Connection, id: &str) -> Result<Job, StoreError> {
    let row = tx
        .prepare_cached(
            "SELECT id, name, cluster, canceled, failed, submitted_at, started_at, completed_at \
             FROM jobs WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, u64>(5)?,
                r.get::<_, Option<u64>>(6)?,
                r.get::<_, Option<u64>>(7)?,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "job",
            id: id.to_string(),
        })?;
    let (id, name, cluster, canceled, failed, submitted_at, started_at, completed_at) = row;
    let mut counts = TaskCounts::default();
    let mut stmt =
        tx.prepare_cached("SELECT state, COUNT(*) FROM tasks WHERE job_id = ?1 GROUP BY state")?;
    let rows = stmt.query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        counts.add(state_of(&state), n);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT label, done, total FROM progress WHERE job_id = ?1 ORDER BY label",
    )?;
    let progress = stmt
        .query_map([&id], |r| {
            Ok(ProgressUpdate {
                label: r.get(0)?,
                done: r.get(1)?,
                total: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (last_stop, task_time): (Option<u64>, Option<u64>) = tx
        .prepare_cached(
            "SELECT MAX(end), SUM(end - start) FROM spans WHERE job_id = ?1 AND end IS NOT NULL",
        )?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let state = derive_state(
        canceled,
        failed,
        completed_at.is_some(),
        started_at.is_some(),
    );
    Ok(Job {
        id,
        name,
        cluster,
        state,
        canceled,
        task_counts: counts,
        progress,
        submitted_at,
        started_at,
        finished_at: if state.is_finished() {
            last_stop.or(completed_at)
        } else {
            None
        },
        task_time_ns: task_time.unwrap_or(0),
    })
}

fn insert_task(
    tx: &Connection,
    job_id: &str,
    parent: Option<(&str, &str, u32)>,
    position: usize,
    spec: &SubtaskSpec,
    cluster: &str,
    depends_on: &[String],
    state: TaskState,
    now: u64,
) -> Result<String, StoreError> {
    let id = new_id();
    let (parent_id, path, depth) = match parent {
        Some((pid, ppath, pdepth)) => (
            Some(pid),
            format!("{ppath}{}", path_segment(position)),
            pdepth + 1,
        ),
        None => (None, String::new(), 0),
    };
    let input = serde_json::to_string(&spec.input).expect("JSON values serialize");
    tx.prepare_cached(
        "INSERT INTO tasks (id, job_id, parent_id, depth, path, name, major, minor, input, \
         display, cluster, state, depends_on, pending_deps, max_retries, created_at, finished_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        id,
        job_id,
        parent_id,
        depth,
        path,
        spec.identifier.name,
        spec.identifier.version.major,
        spec.identifier.version.minor,
        input,
        spec.display,
        cluster,
        state.as_str(),
        serde_json::to_string(depends_on).expect("strings serialize"),
        depends_on.len() as i64,
        spec.max_retries,
        now,
        if state == TaskState::Canceled {
            Some(now)
        } else {
            None
        },
    ])?;
    for dep in depends_on {
        tx.prepare_cached("INSERT INTO task_deps (depends_on, task_id) VALUES (?1, ?2)")?
            .execute(params![dep, id])?;
    }
    Ok(id)
}

/// Marks a task completed (it and its subtree computed) and walks up the tree.
fn mark_completed(tx: &Connection, task_id: &str, now: u64) -> Result<(), StoreError> {
    let mut current = task_id.to_string();
    loop {
        let (parent, job): (Option<String>, String) = tx
            .prepare_cached(
                "UPDATE tasks SET completed = 1 WHERE id = ?1 RETURNING parent_id, job_id",
            )?
            .query_row([&current], |r| Ok((r.get(0)?, r.get(1)?)))?;
        tx.prepare_cached(
            "UPDATE tasks SET pending_deps = pending_deps - 1 \
             WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ?1)",
        )?
        .execute([&current])?;
        let Some(parent) = parent else {
            tx.prepare_cached("UPDATE jobs SET completed_at = ?2 WHERE id = ?1")?
                .execute(params![job, now])?;
            return Ok(());
        };
        let (state, open): (String, i64) = tx
            .prepare_cached(
                "UPDATE tasks SET open_children = open_children - 1 WHERE id = ?1 \
                 RETURNING state, open_children",
            )?
            .query_row([&parent], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if state != "computed" || open > 0 {
            return Ok(());
        }
        current = parent;
    }
}

fn close_span(
    tx: &Connection,
    task_id: &str,
    attempt: u32,
    outcome: SpanOutcome,
    error: Option<&str>,
    display: Option<&str>,
    now: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE spans SET end = ?3, outcome = ?4, error = ?5, name = COALESCE(?6, name) \
         WHERE task_id = ?1 AND attempt = ?2 AND end IS NULL",
    )?
    .execute(params![
        task_id,
        attempt,
        now,
        outcome_str(outcome),
        error,
        display
    ])?;
    Ok(())
}

/// The task if `lease` still holds it at `now`, else why not.
fn held(
    tx: &Connection,
    task_id: &str,
    lease: u64,
    now: u64,
) -> Result<Result<Held, String>, StoreError> {
    let row = tx
        .prepare_cached(
            "SELECT t.state, t.lease, t.lease_expires_at, t.job_id, t.cluster, t.path, t.depth, \
             t.attempt, t.retries_used, t.max_retries, j.canceled \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?1",
        )?
        .query_row([task_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Option<u64>>(2)?,
                Held {
                    job_id: r.get(3)?,
                    cluster: r.get(4)?,
                    path: r.get(5)?,
                    depth: r.get(6)?,
                    attempt: r.get(7)?,
                    retries_used: r.get(8)?,
                    max_retries: r.get(9)?,
                    job_canceled: r.get(10)?,
                },
            ))
        })
        .optional()?;
    let Some((state, current, expires, held)) = row else {
        return Ok(Err(format!("task {task_id} does not exist")));
    };
    Ok(check_lease(task_id, lease, now, &state, current, expires).map(|()| held))
}

fn record_report(
    tx: &Connection,
    config: &StoreConfig,
    task_id: &str,
    lease: u64,
    report: &Report,
    now: u64,
) -> Result<Result<(), String>, StoreError> {
    let h = match held(tx, task_id, lease, now)? {
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
                return fail_task(tx, config, task_id, &h, &reason, display.as_deref(), now)
                    .map(Ok);
            }
            let state = if h.job_canceled {
                TaskState::Canceled
            } else {
                TaskState::Queued
            };
            let mut ids: Vec<String> = Vec::with_capacity(subtasks.len());
            for (i, spec) in subtasks.iter().enumerate() {
                let deps: Vec<String> = spec
                    .depends_on
                    .iter()
                    .map(|&d| ids[d as usize].clone())
                    .collect();
                let cluster = spec.cluster.as_deref().unwrap_or(&h.cluster);
                let id = insert_task(
                    tx,
                    &h.job_id,
                    Some((task_id, &h.path, h.depth)),
                    i,
                    spec,
                    cluster,
                    &deps,
                    state,
                    now,
                )?;
                ids.push(id);
            }
            tx.prepare_cached(
                "UPDATE tasks SET state = 'computed', display = COALESCE(?2, display), \
                 children = ?3, open_children = ?3, lease_runner = NULL, lease_expires_at = NULL, \
                 error = NULL, finished_at = ?4 WHERE id = ?1",
            )?
            .execute(params![task_id, display, subtasks.len() as i64, now])?;
            for p in progress {
                tx.prepare_cached(
                    "INSERT INTO progress (job_id, label, done, total) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (job_id, label) DO UPDATE SET done = done + excluded.done, \
                     total = total + excluded.total",
                )?
                .execute(params![h.job_id, p.label, p.done, p.total])?;
            }
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Computed,
                None,
                display.as_deref(),
                now,
            )?;
            if subtasks.is_empty() {
                mark_completed(tx, task_id, now)?;
            }
        }
        Report::Failed { reason, display } => {
            fail_task(tx, config, task_id, &h, reason, display.as_deref(), now)?;
        }
        Report::Abandoned => {
            let state = if h.job_canceled { "canceled" } else { "queued" };
            tx.prepare_cached(
                "UPDATE tasks SET state = ?2, lease_runner = NULL, lease_expires_at = NULL \
                 WHERE id = ?1",
            )?
            .execute(params![task_id, state])?;
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Abandoned,
                None,
                None,
                now,
            )?;
        }
        Report::Canceled => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'canceled', lease_runner = NULL, lease_expires_at = NULL, \
                 finished_at = ?2 WHERE id = ?1",
            )?
            .execute(params![task_id, now])?;
            close_span(
                tx,
                task_id,
                h.attempt,
                SpanOutcome::Canceled,
                None,
                None,
                now,
            )?;
        }
    }
    Ok(Ok(()))
}

fn fail_task(
    tx: &Connection,
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
    )?;
    match h.after_failure(config, now) {
        AfterFailure::Canceled => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'canceled', error = ?2, display = COALESCE(?3, display), \
             lease_runner = NULL, lease_expires_at = NULL, finished_at = ?4 WHERE id = ?1",
            )?
            .execute(params![task_id, reason, display, now])?;
        }
        AfterFailure::Retry { not_before } => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', retries_used = retries_used + 1, error = ?2, \
             display = COALESCE(?3, display), lease_runner = NULL, lease_expires_at = NULL, \
             not_before = ?4 WHERE id = ?1",
            )?
            .execute(params![task_id, reason, display, not_before])?;
        }
        AfterFailure::Failed => {
            tx.prepare_cached(
                "UPDATE tasks SET state = 'failed', error = ?2, display = COALESCE(?3, display), \
             lease_runner = NULL, lease_expires_at = NULL, finished_at = ?4 WHERE id = ?1",
            )?
            .execute(params![task_id, reason, display, now])?;
            tx.prepare_cached("UPDATE jobs SET failed = 1 WHERE id = ?1")?
                .execute([&h.job_id])?;
        }
    }
    Ok(())
}

/// `(name = ? AND major = ? AND minor <= ?) OR …` for the identifiers a runner serves.
fn identifier_clause(identifiers: &[TaskIdentifier], params: &mut Vec<Value>) -> String {
    let mut clause = String::from("(");
    for (i, id) in identifiers.iter().enumerate() {
        if i > 0 {
            clause.push_str(" OR ");
        }
        clause.push_str("(t.name = ? AND t.major = ? AND t.minor <= ?)");
        params.push(Value::Text(id.name.clone()));
        params.push(Value::Integer(id.version.major.into()));
        params.push(Value::Integer(id.version.minor.into()));
    }
    clause.push(')');
    clause
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, job: &SubmitJob, now: u64) -> Result<Job, StoreError> {
        check_name("job name", &job.name)?;
        let cluster = job.cluster.clone().unwrap_or_else(|| "default".into());
        check_name("cluster", &cluster)?;
        let job = job.clone();
        self.write(move |tx, _| {
            let id = new_id();
            let spec = SubtaskSpec {
                identifier: job.root.identifier.clone(),
                input: job.root.input.clone(),
                display: job.root.display.clone(),
                depends_on: vec![],
                max_retries: job.root.max_retries,
                cluster: None,
            };
            let root = insert_task(tx, &id, None, 0, &spec, &cluster, &[], TaskState::Queued, now)?;
            tx.prepare_cached(
                "INSERT INTO jobs (id, name, cluster, root_id, submitted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, job.name, cluster, root, now])?;
            load_job(tx, &id)
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Job, StoreError> {
        let id = id.to_string();
        self.read(move |tx| load_job(tx, &id)).await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let filter = filter.clone();
        let limit = page_size(filter.limit, 50, 500)?;
        self.read(move |tx| {
            let mut sql = String::from("SELECT id FROM jobs WHERE 1 = 1");
            let mut params: Vec<Value> = Vec::new();
            if let Some(state) = filter.state {
                sql.push_str(&format!(" AND {JOB_STATE_SQL} = ?"));
                params.push(Value::Text(state.as_str().into()));
            }
            if let Some(name) = &filter.name {
                sql.push_str(" AND instr(name, ?) > 0");
                params.push(Value::Text(name.clone()));
            }
            if let Some(since) = filter.since {
                sql.push_str(" AND submitted_at >= ?");
                params.push(Value::Integer(since as i64));
            }
            if let Some(until) = filter.until {
                sql.push_str(" AND submitted_at < ?");
                params.push(Value::Integer(until as i64));
            }
            if let Some(cursor) = &filter.cursor {
                sql.push_str(" AND id < ?");
                params.push(Value::Text(cursor.clone()));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            params.push(Value::Integer(i64::from(limit) + 1));
            let mut stmt = tx.prepare(&sql)?;
            let mut ids = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let more = ids.len() > limit as usize;
            ids.truncate(limit as usize);
            let jobs = ids
                .iter()
                .map(|id| load_job(tx, id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(JobPage {
                next_cursor: if more { ids.last().cloned() } else { None },
                jobs,
            })
        })
        .await
    }

    async fn tasks(&self, job: &str, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let (job, query) = (job.to_string(), query.clone());
        let limit = page_size(query.limit, 100, 1000)?;
        self.read(move |tx| {
            load_job(tx, &job)?;
            let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ?");
            let mut params: Vec<Value> = vec![Value::Text(job.clone())];
            if let Some(parent) = &query.parent {
                sql.push_str(" AND parent_id = ?");
                params.push(Value::Text(parent.clone()));
            }
            if let Some(state) = query.state {
                sql.push_str(" AND state = ?");
                params.push(Value::Text(state.as_str().into()));
            }
            if let Some(cursor) = &query.cursor {
                sql.push_str(" AND path > ?");
                params.push(Value::Text(cursor.clone()));
            }
            sql.push_str(" ORDER BY path LIMIT ?");
            params.push(Value::Integer(i64::from(limit) + 1));
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(params), task_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
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
        .await
    }

    async fn task(&self, id: &str) -> Result<Task, StoreError> {
        let id = id.to_string();
        self.read(move |tx| {
            tx.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
                .query_row([&id], task_from_row)
                .optional()?
                .map(|(t, _)| t)
                .ok_or(StoreError::NotFound { what: "task", id })
        })
        .await
    }

    async fn cancel(&self, job: &str, now: u64) -> Result<Job, StoreError> {
        let job = job.to_string();
        self.write(move |tx, _| {
            let current = load_job(tx, &job)?;
            if matches!(current.state, JobState::Completed) {
                return Err(StoreError::Invalid(format!(
                    "job {job} already completed; there is nothing left to cancel"
                )));
            }
            tx.prepare_cached("UPDATE jobs SET canceled = 1 WHERE id = ?1")?
                .execute([&job])?;
            tx.prepare_cached(
                "UPDATE tasks SET state = 'canceled', finished_at = ?2 \
                 WHERE job_id = ?1 AND state = 'queued'",
            )?
            .execute(params![job, now])?;
            load_job(tx, &job)
        })
        .await
    }

    async fn retry(&self, job: &str, _now: u64) -> Result<Job, StoreError> {
        let job = job.to_string();
        self.write(move |tx, _| {
            let current = load_job(tx, &job)?;
            if current.task_counts.failed == 0
                && current.task_counts.canceled == 0
                && !current.canceled
            {
                return Err(StoreError::Invalid(format!(
                    "job {job} has no failed or canceled tasks to retry (it is {})",
                    current.state
                )));
            }
            tx.prepare_cached("UPDATE jobs SET canceled = 0, failed = 0 WHERE id = ?1")?
                .execute([&job])?;
            tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', retries_used = 0, not_before = 0, \
                 finished_at = NULL WHERE job_id = ?1 AND state IN ('failed', 'canceled')",
            )?
            .execute([&job])?;
            load_job(tx, &job)
        })
        .await
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        if request.identifiers.is_empty() || request.max == 0 {
            return Ok(Vec::new());
        }
        let request = request.clone();
        self.write(move |tx, config| {
            let mut params: Vec<Value> = vec![
                Value::Text(request.cluster.clone()),
                Value::Integer(now as i64),
            ];
            let idents = identifier_clause(&request.identifiers, &mut params);
            params.push(Value::Integer(i64::from(request.max)));
            let sql = format!(
                "SELECT t.id, t.job_id, t.name, t.major, t.minor, t.input, t.attempt, t.lease \
                 FROM tasks t JOIN jobs j ON j.id = t.job_id \
                 WHERE t.state = 'queued' AND t.cluster = ? AND t.pending_deps = 0 \
                 AND t.not_before <= ? AND j.canceled = 0 AND j.failed = 0 AND {idents} \
                 ORDER BY t.job_id, t.path LIMIT ?"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, u32>(6)?,
                        r.get::<_, u64>(7)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let expires = now + nanos(config.lease);
            let mut jobs: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            jobs.dedup();
            for job_id in jobs {
                tx.prepare_cached(
                    "UPDATE jobs SET started_at = COALESCE(started_at, ?2) WHERE id = ?1",
                )?
                .execute(params![job_id, now])?;
            }
            let mut claimed = Vec::with_capacity(rows.len());
            for (id, job_id, name, major, minor, input, attempt, lease) in rows {
                let (attempt, lease) = (attempt + 1, lease + 1);
                tx.prepare_cached(
                    "UPDATE tasks SET state = 'running', attempt = ?2, lease = ?3, lease_runner = ?4, \
                     lease_expires_at = ?5, started_at = COALESCE(started_at, ?6) WHERE id = ?1",
                )?
                .execute(params![id, attempt, lease, request.runner_id, expires, now])?;
                tx.prepare_cached(
                    "INSERT INTO spans (job_id, task_id, attempt, runner_id, name, start, outcome) \
                     SELECT job_id, id, ?2, ?3, COALESCE(display, name), ?4, 'running' \
                     FROM tasks WHERE id = ?1",
                )?
                .execute(params![id, attempt, request.runner_id, now])?;
                claimed.push(ClaimedTask {
                    task_id: id,
                    job_id,
                    identifier: TaskIdentifier {
                        name,
                        version: Version { major, minor },
                    },
                    input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
                    attempt,
                    lease,
                    lease_ms: lease_ms(config),
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn report(
        &self,
        _runner_id: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError> {
        let reports = reports.to_vec();
        self.write(move |tx, config| {
            let mut results = Vec::with_capacity(reports.len());
            for r in &reports {
                let verdict = record_report(tx, config, &r.task_id, r.lease, &r.report, now)?;
                results.push(ReportResult {
                    task_id: r.task_id.clone(),
                    accepted: verdict.is_ok(),
                    error: verdict.err(),
                });
            }
            Ok(results)
        })
        .await
    }

    async fn extend(
        &self,
        _runner_id: &str,
        leases: &[LeaseRef],
        now: u64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        let leases = leases.to_vec();
        self.write(move |tx, config| {
            let expires = now + nanos(config.lease);
            let mut out = Vec::with_capacity(leases.len());
            for l in &leases {
                let status = match held(tx, &l.task_id, l.lease, now)? {
                    Ok(h) => {
                        tx.prepare_cached("UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1")?
                            .execute(params![l.task_id, expires])?;
                        LeaseStatus {
                            task_id: l.task_id.clone(),
                            held: true,
                            canceled: h.job_canceled,
                            lease_ms: lease_ms(config),
                        }
                    }
                    Err(_) => LeaseStatus {
                        task_id: l.task_id.clone(),
                        held: false,
                        canceled: false,
                        lease_ms: 0,
                    },
                };
                out.push(status);
            }
            Ok(out)
        })
        .await
    }

    async fn outlook(&self, request: &OutlookRequest) -> Result<Outlook, StoreError> {
        if request.identifiers.is_empty() {
            return Ok(Outlook::default());
        }
        let request = request.clone();
        self.read(move |tx| {
            let mut params: Vec<Value> = vec![Value::Text(request.cluster.clone())];
            let idents = identifier_clause(&request.identifiers, &mut params);
            let queued: u64 = tx.query_row(
                &format!(
                    "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'queued' AND t.cluster = ? AND j.canceled = 0 AND j.failed = 0 \
                     AND {idents}"
                ),
                rusqlite::params_from_iter(params),
                |r| r.get(0),
            )?;
            let running: u64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND cluster = ?1",
                )?
                .query_row([&request.cluster], |r| r.get(0))?;
            Ok(Outlook { queued, running })
        })
        .await
    }

    async fn reap(&self, now: u64) -> Result<u64, StoreError> {
        self.write(move |tx, _| {
            let expired = tx
                .prepare_cached(
                    "SELECT t.id, t.attempt, j.canceled FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'running' AND t.lease_expires_at < ?1",
                )?
                .query_map([now], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, bool>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (id, attempt, canceled) in &expired {
                let state = if *canceled { "canceled" } else { "queued" };
                tx.prepare_cached(
                    "UPDATE tasks SET state = ?2, lease_runner = NULL, lease_expires_at = NULL \
                     WHERE id = ?1",
                )?
                .execute(params![id, state])?;
                close_span(
                    tx,
                    id,
                    *attempt,
                    SpanOutcome::Expired,
                    Some("the runner's lease expired (runner gone or unreachable)"),
                    None,
                    now,
                )?;
            }
            Ok(expired.len() as u64)
        })
        .await
    }

    async fn add_logs(&self, logs: Vec<LogLine>) -> Result<u64, StoreError> {
        self.write(move |tx, _| {
            let mut jobs: std::collections::HashMap<String, String> = Default::default();
            for line in &logs {
                if jobs.contains_key(&line.task_id) {
                    continue;
                }
                let job: Option<String> = tx
                    .prepare_cached("SELECT job_id FROM tasks WHERE id = ?1")?
                    .query_row([&line.task_id], |r| r.get(0))
                    .optional()?;
                let Some(job) = job else {
                    return Err(StoreError::Invalid(format!(
                        "log line names task {:?}, which does not exist; nothing of this batch was stored",
                        line.task_id
                    )));
                };
                if !line.job_id.is_empty() && line.job_id != job {
                    return Err(StoreError::Invalid(format!(
                        "log line names job {} but task {} belongs to job {job}; nothing of this batch was stored",
                        line.job_id, line.task_id
                    )));
                }
                jobs.insert(line.task_id.clone(), job);
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO logs (job_id, task_id, runner_id, attempt, time, level, message, fields) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for line in &logs {
                stmt.execute(params![
                    jobs[&line.task_id],
                    line.task_id,
                    line.runner_id,
                    line.attempt,
                    line.time_unix_nano as i64,
                    level_rank(line.level),
                    line.message,
                    serde_json::to_string(&line.fields).expect("JSON maps serialize"),
                ])?;
            }
            Ok(logs.len() as u64)
        })
        .await
    }

    async fn logs(&self, job: &str, query: &LogQuery) -> Result<LogPage, StoreError> {
        let (job, query) = (job.to_string(), query.clone());
        let limit = page_size(query.limit, 500, 5000)?;
        self.read(move |tx| {
            load_job(tx, &job)?;
            let mut sql = String::from(
                "SELECT id, time, level, message, task_id, job_id, runner_id, attempt, fields \
                 FROM logs WHERE job_id = ?",
            );
            let mut params: Vec<Value> = vec![Value::Text(job.clone())];
            if let Some(task) = &query.task {
                sql.push_str(" AND task_id = ?");
                params.push(Value::Text(task.clone()));
            }
            if let Some(level) = query.level {
                sql.push_str(" AND level >= ?");
                params.push(Value::Integer(level_rank(level)));
            }
            if let Some(cursor) = &query.cursor {
                let (time, id) = split_cursor(cursor)?;
                sql.push_str(" AND (time > ? OR (time = ? AND id > ?))");
                params.push(Value::Integer(time as i64));
                params.push(Value::Integer(time as i64));
                params.push(Value::Integer(id));
            }
            sql.push_str(" ORDER BY time, id LIMIT ?");
            params.push(Value::Integer(i64::from(limit)));
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    let fields: String = r.get(8)?;
                    Ok((
                        r.get::<_, i64>(0)?,
                        LogLine {
                            time_unix_nano: r.get::<_, i64>(1)? as u64,
                            level: rank_level(r.get(2)?),
                            message: r.get(3)?,
                            task_id: r.get(4)?,
                            job_id: r.get(5)?,
                            runner_id: r.get(6)?,
                            attempt: r.get(7)?,
                            fields: serde_json::from_str(&fields).unwrap_or_default(),
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let next_cursor = rows
                .last()
                .map(|(id, l)| format!("{}:{id}", l.time_unix_nano))
                .or(query.cursor.clone());
            Ok(LogPage {
                logs: rows.into_iter().map(|(_, l)| l).collect(),
                next_cursor,
            })
        })
        .await
    }

    async fn spans(&self, job: &str, query: &SpanQuery) -> Result<SpanPage, StoreError> {
        let (job, query) = (job.to_string(), query.clone());
        let limit = page_size(query.limit, 1000, 5000)?;
        self.read(move |tx| {
            load_job(tx, &job)?;
            let mut sql = String::from(
                "SELECT id, name, task_id, job_id, runner_id, attempt, start, end, outcome, error \
                 FROM spans WHERE job_id = ?",
            );
            let mut params: Vec<Value> = vec![Value::Text(job.clone())];
            if let Some(task) = &query.task {
                sql.push_str(" AND task_id = ?");
                params.push(Value::Text(task.clone()));
            }
            if let Some(cursor) = &query.cursor {
                let (start, id) = split_cursor(cursor)?;
                sql.push_str(" AND (start > ? OR (start = ? AND id > ?))");
                params.push(Value::Integer(start as i64));
                params.push(Value::Integer(start as i64));
                params.push(Value::Integer(id));
            }
            sql.push_str(" ORDER BY start, id LIMIT ?");
            params.push(Value::Integer(i64::from(limit) + 1));
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Span {
                            name: r.get(1)?,
                            task_id: r.get(2)?,
                            job_id: r.get(3)?,
                            runner_id: r.get(4)?,
                            attempt: r.get(5)?,
                            start_time_unix_nano: r.get::<_, i64>(6)? as u64,
                            end_time_unix_nano: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                            outcome: outcome_of(&r.get::<_, String>(8)?),
                            error: r.get(9)?,
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
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
        .await
    }

    async fn next_retry_at(&self) -> Result<Option<u64>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0",
                )?
                .query_row([], |r| r.get::<_, Option<u64>>(0))?)
        })
        .await
    }
}
