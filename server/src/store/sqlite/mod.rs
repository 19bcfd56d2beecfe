//! The SQLite driver: the embedded default, one file in WAL mode.
//!
//! One writer connection serializes every change (each write transaction is `BEGIN
//! IMMEDIATE`); a few reader connections serve queries beside it. SQLite has no round trips, so
//! a set-based primitive runs one cached prepared statement per row of its set. Store
//! operations run on a blocking thread ([`Driver::run`]), never on the async workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params, params_from_iter};
use tessera_api::{
    Component, Job, JobFilter, LogLine, LogQuery, Outlook, OutlookRequest, ProgressUpdate,
    RunnerInfo, Span, Task, TaskCounts, TaskIdentifier, TaskQuery, TaskState, Version,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::core::Core;
use super::driver::{
    AddProgress, CacheSet, ClaimParams, ClaimedRow, CompletedRow, DependencyRow, Driver, ErrorText,
    HeldRow, JobGrowth, JobTally, Mode, NewJob, NewTask, Op, ParentRow, PutOutput, ReadyKind,
    SetState, TenantLoad, Tx, Which, state_index,
};
use super::encode::*;
use super::query::{self, Param};
use super::{KeyRecord, Owned, Reach, StoreConfig, StoreError, TenantId};

/// Migrations in order; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_lost.sql"),
    include_str!("migrations/0003_job_task_total.sql"),
    include_str!("migrations/0004_job_tallies.sql"),
    include_str!("migrations/0005_runners.sql"),
    include_str!("migrations/0006_drop_task_total.sql"),
    include_str!("migrations/0007_components.sql"),
    include_str!("migrations/0008_outputs_cache.sql"),
    include_str!("migrations/0009_span_digests.sql"),
    include_str!("migrations/0010_tenants.sql"),
    include_str!("migrations/0011_job_queued_index.sql"),
    include_str!("migrations/0012_span_runners.sql"),
    include_str!("migrations/0013_binary_ids.sql"),
    include_str!("migrations/0014_lease_runner_ref.sql"),
    include_str!("migrations/0015_spans_on_tasks.sql"),
    include_str!("migrations/0016_runner_wasmtime.sql"),
];

/// The SQLite job store.
pub type SqliteStore = Core<SqliteDriver>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => StoreError::Contention(Box::new(e)),
            _ => StoreError::Database(Box::new(e)),
        }
    }
}

/// A job or task id as SQLite keeps it: the 16 bytes of its UUID, a third of its text, in
/// every row and index that names it (migration 0013). Text that is not an id as the store
/// writes them (a UUID, hyphenated, lowercase) is bound as text, which no stored id equals: an
/// id a client made up is not found, as before, and no other spelling finds a row.
struct Id<'a>(&'a str);

impl ToSql for Id<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(id_sql(self.0))
    }
}

fn id_sql(id: &str) -> ToSqlOutput<'_> {
    match id_bytes(id) {
        Some(bytes) => ToSqlOutput::Owned(Value::Blob(bytes.to_vec())),
        None => ToSqlOutput::Borrowed(ValueRef::Text(id.as_bytes())),
    }
}

/// An id column read back: [`Id`]'s bytes as the id's text (text as it is).
struct IdText(String);

impl FromSql for IdText {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(b) => uuid::Uuid::from_slice(b)
                .map(|u| IdText(u.hyphenated().to_string()))
                .map_err(|e| FromSqlError::Other(Box::new(e))),
            ValueRef::Text(t) => String::from_utf8(t.to_vec())
                .map(IdText)
                .map_err(|e| FromSqlError::Other(Box::new(e))),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// The id in column `i` of `r`.
fn id_at(r: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    r.get::<_, IdText>(i).map(|id| id.0)
}

/// The id, if any, in column `i` of `r`.
fn opt_id_at(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    r.get::<_, Option<IdText>>(i).map(|id| id.map(|id| id.0))
}

impl Core<SqliteDriver> {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        Ok(Core::new(SqliteDriver::open(path)?, config))
    }
}

/// Connections to one SQLite file.
pub struct SqliteDriver {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

/// Each connection's page cache, in KiB. Kept small on purpose: when a write splits a b-tree
/// page, SQLite parks a page at the lock page's number (page 262,145 with 4 KiB pages) for a
/// moment, and the next commit then walks the connection's whole cache to drop pages past
/// the end of the database (`pcache1TruncateUnsafe`, 7-12 % of the server's CPU in `perf`
/// under load). A reader's cache is emptied whenever another connection has written, so it
/// gains little from size either. The million at 8 MB: 54.5 s on average and 110 MiB peak
/// RSS, against 58.7 s and 150-181 MiB at 32 MB (bench/README.md).
const CACHE_KIB: i64 = 8_000;

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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

/// `n` fresh span keys from the counter every span's key comes from (`spans`' AUTOINCREMENT
/// sequence, whether the span is on a task row or in `spans`); returns the first.
fn span_keys(conn: &Connection, n: usize) -> Result<i64, StoreError> {
    let n = i64::try_from(n).map_err(|_| StoreError::Internal("too many span keys".into()))?;
    let last: Option<i64> = conn
        .prepare_cached(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'spans' RETURNING seq",
        )?
        .query_row([n], |r| r.get(0))
        .optional()?;
    let last = match last {
        Some(last) => last,
        // The counter is made by migration 0015; a database that lost it gets it back past
        // every key in use.
        None => conn
            .prepare_cached(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'spans', COALESCE(MAX(k), 0) + ?1 \
                 FROM (SELECT MAX(id) AS k FROM spans UNION ALL SELECT MAX(span_key) FROM tasks) \
                 RETURNING seq",
            )?
            .query_row([n], |r| r.get(0))?,
    };
    Ok(last - n + 1)
}

/// Moves the span a task row keeps (its latest attempt's) into `spans`, as the claim that
/// starts its next attempt is about to reuse the row's columns.
fn archive_span(conn: &Connection, task: &str) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO spans (id, job_id, task_id, attempt, runner_ref, name, start, \"end\", \
         outcome, error, component_id) \
         SELECT span_key, job_id, id, attempt, COALESCE(span_runner_ref, 0), \
         COALESCE(display, name), started_at, span_end, {ROW_OUTCOME_SQL}, span_error, \
         span_component_id FROM tasks WHERE id = ?1 AND span_key IS NOT NULL"
    ))?
    .execute([Id(task)])?;
    Ok(())
}

impl SqliteDriver {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<SqliteDriver, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Internal(format!("could not create {}: {e}", dir.display()))
            })?;
        }
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(path).map_err(|e| {
                StoreError::Internal(format!("could not open {}: {e}", path.display()))
            })?;
            configure(&conn)?;
            Ok(conn)
        };
        let mut writer = open()?;
        migrate(&mut writer)?;
        let readers = (0..3)
            .map(|_| Ok(Arc::new(Mutex::new(open()?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(SqliteDriver {
            writer: Arc::new(Mutex::new(writer)),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Driver for SqliteDriver {
    type Tx = SqliteTx;

    async fn begin(&self, mode: Mode) -> Result<SqliteTx, StoreError> {
        let (conn, begin) = match mode {
            Mode::Write => (self.writer.clone(), "BEGIN IMMEDIATE"),
            Mode::Read => {
                let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                (self.readers[i].clone(), "BEGIN DEFERRED")
            }
        };
        let conn = conn.lock_owned().await;
        conn.execute_batch(begin)?;
        Ok(SqliteTx {
            conn,
            open: true,
            notified: Vec::new(),
        })
    }

    async fn run<R: Send + 'static>(&self, op: Op<R>) -> R {
        let handle = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || handle.block_on(op)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// One SQLite transaction on a connection it holds.
pub struct SqliteTx {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
    /// What this transaction announced ([`Tx::notify`]).
    notified: Vec<super::Scope>,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A task row as read, before its state, input and dependencies are decoded ([`with_state`]).
type RawTask = (Task, String, String, (String, String));

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<RawTask> {
    let name: String = r.get(4)?;
    let display: Option<String> = r.get(8)?;
    let task = Task {
        id: id_at(r, 0)?,
        job_id: id_at(r, 1)?,
        parent_id: opt_id_at(r, 2)?,
        depth: r.get(3)?,
        identifier: TaskIdentifier {
            name: name.clone(),
            version: Version {
                major: r.get(5)?,
                minor: r.get(6)?,
            },
        },
        display: display.unwrap_or(name),
        state: tessera_api::TaskState::Queued,
        input: serde_json::Value::Null,
        depends_on: Vec::new(),
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
        component: r.get(23)?,
    };
    Ok((task, r.get(9)?, r.get(22)?, (r.get(7)?, r.get(10)?)))
}

/// Decodes the state text of [`task_from_row`]'s rows.
fn with_state(
    (mut task, state, path, (input, depends_on)): RawTask,
) -> Result<(Task, String), StoreError> {
    task.state = state_of(&state)?;
    task.input = stored_input(&task.id, &input)?;
    task.depends_on = stored_depends_on(&task.id, &depends_on)?;
    Ok((task, path))
}

fn held_from_row(r: &Row<'_>) -> rusqlite::Result<(HeldRow, String)> {
    Ok((
        HeldRow {
            id: id_at(r, 0)?,
            job_id: id_at(r, 1)?,
            parent_id: opt_id_at(r, 16)?,
            tenant: r.get(15)?,
            cluster: r.get(2)?,
            path: r.get(3)?,
            depth: r.get(4)?,
            state: tessera_api::TaskState::Queued,
            lease: r.get(6)?,
            lease_expires_at: r.get(7)?,
            attempt: r.get(8)?,
            retries_used: r.get(9)?,
            max_retries: r.get(10)?,
            job_canceled: r.get(11)?,
            job_failed: r.get(13)?,
            runner: r.get(14)?,
            lost: r.get(12)?,
            span_start: r.get(17)?,
        },
        r.get(5)?,
    ))
}

/// A key row as read, before its role text is checked.
struct KeyRow(
    (String, Option<i64>, Option<String>, String),
    (String, String, i64, Option<i64>, Option<String>),
);

impl KeyRow {
    fn decode(self) -> Result<KeyRecord, StoreError> {
        let KeyRow((id, tenant, tenant_name, role), (name, hash, created, revoked, quotas)) = self;
        key_record(
            id,
            tenant,
            tenant_name,
            &role,
            name,
            hash,
            created,
            revoked,
            quotas.as_deref(),
        )
    }
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow(
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
        (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?),
    ))
}

type TenantRow = (TenantId, (String, i64, i64, String));

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
}

/// The number `runner_names` gives a runner id, adding it the first time.
fn intern_runner(conn: &Connection, runner: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO runner_names (name) VALUES (?1)")?
        .execute([runner])?;
    Ok(conn
        .prepare_cached("SELECT id FROM runner_names WHERE name = ?1")?
        .query_row([runner], |r| r.get(0))?)
}

fn held_rows(rows: Vec<(HeldRow, String)>) -> Result<Vec<HeldRow>, StoreError> {
    rows.into_iter()
        .map(|(mut row, state)| {
            row.state = state_of(&state)?;
            Ok(row)
        })
        .collect()
}

/// `[[name, major, minor], …]` for the identifiers a runner serves, matched by
/// [`IDENTIFIER_MATCH`] (one parameter however many identifiers there are).
fn identifiers_json(identifiers: &[TaskIdentifier]) -> String {
    let list: Vec<(&str, u32, u32)> = identifiers
        .iter()
        .map(|i| (i.name.as_str(), i.version.major, i.version.minor))
        .collect();
    serde_json::to_string(&list).expect("identifiers serialize")
}

const IDENTIFIER_MATCH: &str = "EXISTS (SELECT 1 FROM json_each(?) i WHERE t.name = i.value ->> 0 \
    AND t.major = i.value ->> 1 AND t.minor <= i.value ->> 2)";

fn load_job(tx: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    let Some(row) = tx
        .prepare_cached(
            "SELECT id, name, cluster, canceled, failed, submitted_at, started_at, completed_at, \
             tasks_queued, tasks_running, tasks_computed, tasks_failed, tasks_canceled, \
             task_time_ns, last_end, (SELECT name FROM tenants WHERE id = jobs.tenant_id) \
             FROM jobs WHERE id = ?1",
        )?
        .query_row([Id(id)], |r| {
            let count = |i: usize| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
            Ok((
                (id_at(r, 0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                (r.get::<_, bool>(3)?, r.get::<_, bool>(4)?),
                (
                    r.get::<_, u64>(5)?,
                    r.get::<_, Option<u64>>(6)?,
                    r.get::<_, Option<u64>>(7)?,
                ),
                TaskCounts {
                    queued: count(8)?,
                    running: count(9)?,
                    computed: count(10)?,
                    failed: count(11)?,
                    canceled: count(12)?,
                },
                (count(13)?, count(14)?),
                r.get::<_, Option<String>>(15)?,
            ))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let ((id, name, cluster), (canceled, failed), times, counts, (task_time, last_end), tenant) =
        row;
    let (submitted_at, started_at, completed_at) = times;
    let progress = tx
        .prepare_cached("SELECT label, done, total FROM progress WHERE job_id = ?1 ORDER BY label")?
        .query_map([Id(&id)], |r| {
            Ok(ProgressUpdate {
                label: r.get(0)?,
                done: r.get::<_, i64>(1)?.max(0) as u64,
                total: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let state = derive_state(
        canceled,
        failed,
        completed_at.is_some(),
        started_at.is_some(),
    );
    Ok(Some(Job {
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
            Some(last_end).filter(|&t| t > 0).or(completed_at)
        } else {
            None
        },
        task_time_ns: task_time,
        tenant: tenant.unwrap_or_default(),
    }))
}

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::Id(id) => id_sql(id),
            Param::Int(n) => ToSqlOutput::Owned(Value::Integer(*n)),
        })
    }
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }

    async fn rollback(mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::warn!("could not roll back a SQLite transaction: {e}");
        }
        self.open = false;
    }

    async fn load_job(&mut self, id: &str) -> Result<Option<Job>, StoreError> {
        load_job(&self.conn, id)
    }

    async fn job_ids(
        &mut self,
        reach: Reach,
        filter: &JobFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let q = query::job_ids(reach, filter, limit, "instr(name, ?) > 0");
        let mut stmt = self.conn.prepare_cached(&q.sql)?;
        let ids = stmt
            .query_map(params_from_iter(&q.params), |r| id_at(r, 0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    async fn owner(&mut self, of: Owned<'_>) -> Result<Option<TenantId>, StoreError> {
        let (sql, id) = match of {
            Owned::Job(id) => ("SELECT tenant_id FROM jobs WHERE id = ?1", id),
            Owned::Task(id) => ("SELECT tenant_id FROM tasks WHERE id = ?1", id),
        };
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([Id(id)], |r| r.get(0))
            .optional()?)
    }

    async fn tasks(
        &mut self,
        job: &str,
        query: &TaskQuery,
        limit: u32,
    ) -> Result<Vec<(Task, String)>, StoreError> {
        let q = query::tasks(job, query, limit);
        let mut stmt = self.conn.prepare_cached(&q.sql)?;
        let rows = stmt
            .query_map(params_from_iter(&q.params), task_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(with_state).collect()
    }

    async fn task(&mut self, id: &str) -> Result<Option<Task>, StoreError> {
        let row = self
            .conn
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
            .query_row([Id(id)], task_from_row)
            .optional()?;
        Ok(row.map(with_state).transpose()?.map(|(t, _)| t))
    }

    async fn logs(
        &mut self,
        job: &str,
        query: &LogQuery,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        let q = query::logs(job, query, limit)?;
        let mut stmt = self.conn.prepare_cached(&q.sql)?;
        let rows = stmt
            .query_map(params_from_iter(&q.params), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    LogLine {
                        time_unix_nano: 0,
                        level: tessera_api::Level::Info,
                        message: r.get(3)?,
                        task_id: id_at(r, 4)?,
                        job_id: id_at(r, 5)?,
                        runner_id: r.get(6)?,
                        attempt: r.get(7)?,
                        fields: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, time, level, mut line)| {
                line.time_unix_nano = time.max(0) as u64;
                line.level = rank_level(level)?;
                Ok((id, line))
            })
            .collect()
    }

    async fn spans(&mut self, q: &query::Query) -> Result<Vec<(i64, Span)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&q.sql)?;
        let rows = stmt
            .query_map(params_from_iter(&q.params), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(8)?,
                    Span {
                        name: r.get(1)?,
                        task_id: id_at(r, 2)?,
                        job_id: id_at(r, 3)?,
                        runner_id: r.get(4)?,
                        attempt: r.get(5)?,
                        start_time_unix_nano: r.get::<_, i64>(6)?.max(0) as u64,
                        end_time_unix_nano: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
                        outcome: tessera_api::SpanOutcome::Running,
                        error: r.get(9)?,
                        component: r.get(10)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, outcome, mut span)| {
                span.outcome = outcome_of(&outcome)?;
                Ok((id, span))
            })
            .collect()
    }

    async fn outlook(
        &mut self,
        tenant: TenantId,
        request: &OutlookRequest,
    ) -> Result<Outlook, StoreError> {
        let serves = if request.deployed {
            "t.component IS NOT NULL AND ? IS NULL"
        } else {
            IDENTIFIER_MATCH
        };
        let identifiers = (!request.deployed).then(|| identifiers_json(&request.identifiers));
        let queued: u64 = self
            .conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id \
                 WHERE t.state = 'queued' AND t.tenant_id = ? AND t.cluster = ? \
                 AND j.canceled = 0 AND j.failed = 0 AND {serves}"
            ))?
            .query_row(params![tenant, request.cluster, identifiers], |r| r.get(0))?;
        let running: u64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND tenant_id = ?1 \
                 AND cluster = ?2",
            )?
            .query_row(params![tenant, &request.cluster], |r| r.get(0))?;
        Ok(Outlook { queued, running })
    }

    async fn next_retry_at(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND not_before > 0",
            )?
            .query_row([], |r| r.get::<_, Option<u64>>(0))?)
    }

    async fn attempt_runners(
        &mut self,
        attempts: &[(String, u32)],
    ) -> Result<HashMap<(String, u32), String>, StoreError> {
        // The task's latest attempt is on its row, an earlier one in `spans`.
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.name FROM tasks t JOIN runner_names r ON r.id = t.span_runner_ref \
             WHERE t.id = ?1 AND t.attempt = ?2 AND t.span_key IS NOT NULL \
             UNION ALL SELECT r.name FROM spans s JOIN runner_names r ON r.id = s.runner_ref \
             WHERE s.task_id = ?1 AND s.attempt = ?2",
        )?;
        let mut runners = HashMap::with_capacity(attempts.len());
        for (task, attempt) in attempts {
            if let Some(runner) = stmt
                .query_row(params![Id(task), attempt], |r| r.get::<_, String>(0))
                .optional()?
            {
                runners.insert((task.clone(), *attempt), runner);
            }
        }
        Ok(runners)
    }

    async fn jobs_of_tasks(&mut self, ids: &[&str]) -> Result<HashMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT job_id FROM tasks WHERE id = ?1")?;
        let mut jobs = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = stmt.query_row([Id(id)], |r| id_at(r, 0)).optional()? {
                jobs.insert(id.to_string(), job);
            }
        }
        Ok(jobs)
    }

    async fn ready_kinds(&mut self, job: &str, now: u64) -> Result<Vec<ReadyKind>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT cluster, name, major, minor, component IS NOT NULL, COUNT(*) FROM tasks \
                 WHERE job_id = ?1 AND state = 'queued' AND pending_deps = 0 AND not_before <= ?2 \
                 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 LIMIT 100",
            )?
            .query_map(params![Id(job), i(now)], |r| {
                Ok(ReadyKind {
                    cluster: r.get(0)?,
                    task: TaskIdentifier {
                        name: r.get(1)?,
                        version: Version {
                            major: r.get(2)?,
                            minor: r.get(3)?,
                        },
                    },
                    pinned: r.get(4)?,
                    queued: r.get::<_, i64>(5)?.max(0) as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    async fn runners(&mut self, reach: Reach, since: u64) -> Result<Vec<RunnerInfo>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, cluster, identifiers, first_seen, last_seen, deployed, host, \
                 concurrency, wasmtime FROM runners \
                 WHERE last_seen >= ?1 AND ({} OR tenant_id IS NULL) \
                 ORDER BY last_seen DESC, id LIMIT 1000",
                reach_sql(reach, "tenant_id")
            ))?
            .query_map([i(since)], |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ),
                    (
                        r.get::<_, bool>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<u32>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(
                    (id, cluster, identifiers, first, last),
                    (deployed, host, concurrency, wasmtime),
                )| {
                    Ok(RunnerInfo {
                        deployed,
                        host,
                        concurrency,
                        wasmtime,
                        ..runner_info(id, cluster, &identifiers, first, last)?
                    })
                },
            )
            .collect()
    }

    async fn record_runner(
        &mut self,
        runner: &RunnerInfo,
        tenant: Option<TenantId>,
        forget_before: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO runners (id, cluster, identifiers, first_seen, last_seen, deployed, \
                 host, concurrency, tenant_id, wasmtime) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (id) DO UPDATE SET \
                 cluster = excluded.cluster, identifiers = excluded.identifiers, \
                 last_seen = excluded.last_seen, deployed = excluded.deployed, \
                 host = excluded.host, concurrency = excluded.concurrency, \
                 tenant_id = excluded.tenant_id, wasmtime = excluded.wasmtime",
            )?
            .execute(params![
                runner.id,
                runner.cluster,
                serde_json::to_string(&runner.identifiers).expect("identifiers serialize"),
                i(runner.last_seen),
                runner.deployed,
                runner.host,
                runner.concurrency,
                tenant,
                runner.wasmtime
            ])?;
        self.conn
            .prepare_cached("DELETE FROM runners WHERE last_seen < ?1")?
            .execute([i(forget_before)])?;
        Ok(())
    }

    async fn lock_job(&mut self, id: &str) -> Result<bool, StoreError> {
        // The write transaction holds SQLite's only write lock already.
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
            .exists([Id(id)])?)
    }

    async fn lock_job_totals(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, JobGrowth>, StoreError> {
        // The write transaction holds SQLite's only write lock already.
        let mut stmt = self.conn.prepare_cached(
            "SELECT tasks_queued + tasks_running + tasks_computed + tasks_failed + \
                 tasks_canceled, pins FROM jobs WHERE id = ?1",
        )?;
        let mut totals = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some((n, pins)) = stmt
                .query_row([Id(id)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
            {
                let total = n.max(0) as u64;
                totals.insert(id.to_string(), JobGrowth { total, pins });
            }
        }
        Ok(totals)
    }

    async fn components(
        &mut self,
        reach: Reach,
        which: &Which<'_>,
    ) -> Result<Vec<Component>, StoreError> {
        let (condition, param) = which_sql(which);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COMPONENT_COLUMNS} FROM components WHERE {condition} AND {} \
             ORDER BY deployed_at DESC, digest LIMIT 1000",
            reach_sql(reach, "tenant_id")
        ))?;
        let read = |r: &Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        };
        let rows = if param.is_empty() {
            stmt.query_map([], read)?.collect::<Result<Vec<_>, _>>()?
        } else {
            stmt.query_map([param], read)?
                .collect::<Result<Vec<_>, _>>()?
        };
        rows.into_iter()
            .map(|(d, n, size, types, by, at, un)| component(d, n, size, &types, by, at, un))
            .collect()
    }

    async fn insert_component(
        &mut self,
        tenant: TenantId,
        component: &Component,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO components (digest, name, size, task_types, deployed_by, \
                 deployed_at, bytes, tenant_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                component.digest,
                component.name,
                i(component.size),
                serde_json::to_string(&component.task_types).expect("identifiers serialize"),
                component.deployed_by,
                i(component.deployed_at),
                bytes,
                tenant
            ])?;
        Ok(())
    }

    async fn set_deployed(
        &mut self,
        tenant: TenantId,
        digests: &[String],
        deployed: Result<u64, u64>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE components SET deployed_at = COALESCE(?2, deployed_at), undeployed_at = ?3 \
             WHERE digest = ?1 AND tenant_id = ?4",
        )?;
        let (at, un) = match deployed {
            Ok(at) => (Some(i(at)), None),
            Err(un) => (None, Some(i(un))),
        };
        for d in digests {
            stmt.execute(params![d, at, un, tenant])?;
        }
        Ok(())
    }

    async fn component_bytes(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT bytes FROM components WHERE digest = ?1 AND {} LIMIT 1",
                reach_sql(reach, "tenant_id")
            ))?
            // A blob, or text if someone edited the file by hand: its bytes either way (the
            // runner checks them against their digest).
            .query_row([digest], |r| Ok(r.get_ref(0)?.as_bytes()?.to_vec()))
            .optional()?)
    }

    async fn running_by_runner(
        &mut self,
        reach: Reach,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&running_by_runner_sql(reach))?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(r, n)| (r, n.max(0) as u64))
            .collect())
    }

    async fn add_job_tallies(&mut self, tallies: &[JobTally]) -> Result<(), StoreError> {
        // Saturating: a sum past i64::MAX would turn the column into REAL.
        let mut stmt = self.conn.prepare_cached(
            "UPDATE jobs SET tasks_queued = tasks_queued + ?2, tasks_running = tasks_running + ?3, \
             tasks_computed = tasks_computed + ?4, tasks_failed = tasks_failed + ?5, \
             tasks_canceled = tasks_canceled + ?6, \
             task_time_ns = CASE WHEN task_time_ns > 9223372036854775807 - ?7 \
                            THEN 9223372036854775807 ELSE task_time_ns + ?7 END, \
             last_end = MAX(last_end, ?8), started_at = COALESCE(started_at, ?9) WHERE id = ?1",
        )?;
        for t in tallies {
            let [q, r, c, f, x] = t.states;
            stmt.execute(params![
                Id(&t.job_id),
                q,
                r,
                c,
                f,
                x,
                i(t.task_time_ns),
                i(t.last_end),
                t.started_at.map(i),
            ])?;
        }
        Ok(())
    }

    async fn count_job(&mut self, id: &str) -> Result<Option<JobTally>, StoreError> {
        if !self
            .conn
            .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
            .exists([Id(id)])?
        {
            return Ok(None);
        }
        let mut tally = JobTally {
            job_id: id.to_string(),
            ..JobTally::default()
        };
        let rows = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM tasks WHERE job_id = ?1 GROUP BY state")?
            .query_map([Id(id)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (state, n) in rows {
            tally.states[state_index(state_of(&state)?)] = n;
        }
        let (time, last): (Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT SUM(n), MAX(e) FROM (SELECT span_end - started_at AS n, span_end AS e \
                 FROM tasks WHERE job_id = ?1 AND span_key IS NOT NULL AND span_end IS NOT NULL \
                 UNION ALL SELECT \"end\" - start, \"end\" FROM spans \
                 WHERE job_id = ?1 AND \"end\" IS NOT NULL)",
            )?
            .query_row([Id(id)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        tally.task_time_ns = time.unwrap_or(0).max(0) as u64;
        tally.last_end = last.unwrap_or(0).max(0) as u64;
        Ok(Some(tally))
    }

    async fn insert_job(&mut self, job: &NewJob) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO jobs (id, name, cluster, root_id, submitted_at, pins, tenant_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                Id(&job.id),
                job.name,
                job.cluster,
                Id(&job.root_id),
                job.submitted_at,
                job.pins,
                job.tenant
            ])?;
        Ok(())
    }

    async fn set_job_flags(
        &mut self,
        id: &str,
        canceled: Option<bool>,
        failed: Option<bool>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET canceled = COALESCE(?2, canceled), failed = COALESCE(?3, failed) \
                 WHERE id = ?1",
            )?
            .execute(params![Id(id), canceled, failed])?;
        Ok(())
    }

    async fn fail_jobs(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE jobs SET failed = 1 WHERE id = ?1")?;
        for id in ids {
            stmt.execute([Id(id)])?;
        }
        Ok(())
    }

    async fn complete_jobs(&mut self, ids: &[String], now: u64) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE jobs SET completed_at = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![Id(id), now])?;
        }
        Ok(())
    }

    async fn delete_job(&mut self, id: &str) -> Result<(), StoreError> {
        // Children before parents: outputs and edges name the job's tasks.
        for sql in [
            "DELETE FROM outputs WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?1)",
            "DELETE FROM task_deps WHERE depends_on IN (SELECT id FROM tasks WHERE job_id = ?1)",
            "DELETE FROM cache_entries WHERE job_id = ?1",
            "DELETE FROM logs WHERE job_id = ?1",
            "DELETE FROM spans WHERE job_id = ?1",
            "DELETE FROM progress WHERE job_id = ?1",
            "DELETE FROM tasks WHERE job_id = ?1",
            "DELETE FROM jobs WHERE id = ?1",
        ] {
            self.conn.prepare_cached(sql)?.execute([Id(id)])?;
        }
        Ok(())
    }

    async fn cancel_queued(&mut self, job: &str, now: u64, why: &str) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET state = 'canceled', finished_at = ?2, error = ?3 \
                 WHERE job_id = ?1 AND state = 'queued'",
            )?
            .execute(params![Id(job), now, why])?;
        Ok(n as u64)
    }

    async fn requeue(&mut self, job: &str, from: TaskState) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET state = 'queued', retries_used = 0, not_before = 0, lost = 0, \
                 finished_at = NULL, error = NULL WHERE job_id = ?1 AND state = ?2",
            )?
            .execute(params![Id(job), from.as_str()])?;
        Ok(n as u64)
    }

    async fn insert_tasks(&mut self, tasks: &[NewTask]) -> Result<(), StoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO tasks (id, job_id, parent_id, depth, path, name, major, minor, input, \
             display, cluster, state, depends_on, pending_deps, max_retries, created_at, finished_at, \
             component, tenant_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?;
        let mut dep = self
            .conn
            .prepare_cached("INSERT INTO task_deps (depends_on, task_id) VALUES (?1, ?2)")?;
        for t in tasks {
            insert.execute(params![
                Id(&t.id),
                Id(&t.job_id),
                t.parent_id.as_deref().map(Id),
                t.depth,
                t.path,
                t.identifier.name,
                t.identifier.version.major,
                t.identifier.version.minor,
                t.input,
                t.display,
                t.cluster,
                t.state.as_str(),
                serde_json::to_string(&t.depends_on).expect("strings serialize"),
                t.depends_on.len() as i64,
                t.max_retries,
                t.created_at,
                t.finished_at,
                t.component,
                t.tenant,
            ])?;
            for d in &t.depends_on {
                dep.execute(params![Id(d), Id(&t.id)])?;
            }
        }
        Ok(())
    }

    async fn lock_tasks(&mut self, ids: &[&str]) -> Result<Vec<HeldRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{HELD_SELECT} WHERE t.id = ?1"))?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = stmt.query_row([Id(id)], held_from_row).optional()? {
                rows.push(row);
            }
        }
        held_rows(rows)
    }

    async fn lock_expired(&mut self, now: u64) -> Result<Vec<HeldRow>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "{HELD_SELECT} WHERE t.state = 'running' AND t.lease_expires_at < ?1"
            ))?
            .query_map([now], held_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        held_rows(rows)
    }

    async fn set_states(&mut self, states: &[SetState]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE tasks SET state = ?2, error = CASE WHEN ?3 THEN ?4 ELSE error END, \
             display = COALESCE(?5, display), children = COALESCE(?6, children), \
             open_children = COALESCE(?6, open_children), retries_used = retries_used + ?7, \
             not_before = COALESCE(?8, not_before), finished_at = ?9, lost = ?10, \
             completed = CASE WHEN ?11 THEN 1 ELSE completed END, \
             lease_runner_ref = NULL, lease_expires_at = NULL, span_end = COALESCE(?12, span_end), \
             span_outcome = COALESCE(?13, span_outcome), \
             span_error = CASE WHEN ?12 IS NULL THEN span_error ELSE ?14 END WHERE id = ?1",
        )?;
        for s in states {
            let (set_error, error) = match &s.error {
                ErrorText::Keep => (false, None),
                ErrorText::Clear => (true, None),
                ErrorText::Set(e) => (true, Some(e.as_str())),
            };
            stmt.execute(params![
                Id(&s.id),
                s.state.as_str(),
                set_error,
                error,
                s.display,
                s.children.map(i),
                i64::from(s.spend_retry),
                s.not_before.map(i),
                s.finished_at.map(i),
                s.lost,
                s.complete,
                s.span.as_ref().map(|e| i(e.at)),
                s.span.as_ref().map(|e| outcome_code(e.outcome)),
                s.span.as_ref().and_then(|e| e.error.as_deref()),
            ])?;
        }
        Ok(())
    }

    async fn extend_leases(&mut self, ids: &[&str], expires: u64) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![Id(id), i(expires)])?;
        }
        Ok(())
    }

    async fn claim_eligible(
        &mut self,
        claim: &ClaimParams<'_>,
    ) -> Result<Vec<ClaimedRow>, StoreError> {
        let serves = if claim.deployed {
            // `? IS NULL` keeps one parameter list for both statements.
            "t.component IS NOT NULL AND ? IS NULL"
        } else {
            IDENTIFIER_MATCH
        };
        let identifiers = (!claim.deployed).then(|| identifiers_json(claim.identifiers));
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT t.id, t.job_id, t.name, t.major, t.minor, t.input, t.attempt, t.lease, \
                 t.display, t.component, j.cache_seq \
                 FROM tasks t JOIN jobs j ON j.id = t.job_id \
                 WHERE t.state = 'queued' AND t.tenant_id = ? AND t.cluster = ? \
                 AND t.pending_deps = 0 AND t.not_before <= ? AND j.canceled = 0 \
                 AND j.failed = 0 AND {serves} \
                 ORDER BY t.job_id, t.path LIMIT ?"
            ))?
            .query_map(
                params![
                    claim.tenant,
                    claim.cluster,
                    i(claim.now),
                    identifiers,
                    i64::from(claim.max)
                ],
                |r| {
                    Ok(ClaimedRow {
                        task_id: id_at(r, 0)?,
                        job_id: id_at(r, 1)?,
                        identifier: TaskIdentifier {
                            name: r.get(2)?,
                            version: Version {
                                major: r.get(3)?,
                                minor: r.get(4)?,
                            },
                        },
                        display: r.get(8)?,
                        input: r.get(5)?,
                        attempt: r.get::<_, u32>(6)? + 1,
                        lease: new_lease(),
                        component: r.get(9)?,
                        cache_seq: r.get::<_, i64>(10)?.max(0) as u64,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        // An empty claim (a long poll finding nothing) writes nothing.
        if rows.is_empty() {
            return Ok(rows);
        }
        // The attempt's span is opened on the row, with everything it needs from the pick.
        let mut lease = self.conn.prepare_cached(
            "UPDATE tasks SET state = 'running', attempt = ?2, lease = ?3, lease_runner_ref = ?4, \
             lease_expires_at = ?5, started_at = ?6, span_key = ?7, span_end = NULL, \
             span_outcome = 0, span_error = NULL, span_runner_ref = ?4, \
             span_component_id = (SELECT id FROM digests WHERE digest = ?8) WHERE id = ?1",
        )?;
        // Each component that runs them is named once, in `digests`.
        let mut digests: Vec<String> = rows.iter().filter_map(|r| claim.ran(r)).collect();
        digests.sort_unstable();
        digests.dedup();
        let mut intern = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO digests (digest) VALUES (?1)")?;
        for d in &digests {
            intern.execute([d])?;
        }
        // And the runner, once, in `runner_names`.
        let runner = intern_runner(&self.conn, claim.runner_id)?;
        let first_key = span_keys(&self.conn, rows.len())?;
        for (r, key) in rows.iter().zip(first_key..) {
            if r.attempt > 1 {
                archive_span(&self.conn, &r.task_id)?;
            }
            lease.execute(params![
                Id(&r.task_id),
                r.attempt,
                i(r.lease),
                runner,
                i(claim.expires),
                i(claim.now),
                key,
                claim.ran(r),
            ])?;
        }
        Ok(rows)
    }

    async fn set_completed(&mut self, ids: &[String]) -> Result<Vec<CompletedRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE tasks SET completed = 1 WHERE id = ?1 RETURNING id, parent_id, job_id",
        )?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            rows.push(stmt.query_row([Id(id)], |r| {
                Ok(CompletedRow {
                    id: id_at(r, 0)?,
                    parent_id: opt_id_at(r, 1)?,
                    job_id: id_at(r, 2)?,
                })
            })?);
        }
        Ok(rows)
    }

    async fn release_dependents(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE tasks SET pending_deps = pending_deps - 1 \
             WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ?1)",
        )?;
        for id in ids {
            stmt.execute([Id(id)])?;
        }
        Ok(())
    }

    async fn close_children(
        &mut self,
        counts: &[(String, u64)],
    ) -> Result<Vec<ParentRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE tasks SET open_children = open_children - ?2 WHERE id = ?1 \
             RETURNING id, state, open_children",
        )?;
        let mut rows = Vec::with_capacity(counts.len());
        for (id, n) in counts {
            let (id, state, open) = stmt.query_row(params![Id(id), i(*n)], |r| {
                Ok((id_at(r, 0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })?;
            rows.push(ParentRow {
                id,
                state: state_of(&state)?,
                open_children: open,
            });
        }
        Ok(rows)
    }

    async fn add_progress(&mut self, progress: &[AddProgress]) -> Result<(), StoreError> {
        // Saturating at i64::MAX: an overflowing sum must never turn the column into REAL.
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO progress (job_id, label, done, total) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (job_id, label) DO UPDATE SET \
             done = CASE WHEN done > 9223372036854775807 - excluded.done \
                    THEN 9223372036854775807 ELSE done + excluded.done END, \
             total = CASE WHEN total > 9223372036854775807 - excluded.total \
                    THEN 9223372036854775807 ELSE total + excluded.total END",
        )?;
        for p in progress {
            stmt.execute(params![Id(&p.job_id), p.label, i(p.done), i(p.total)])?;
        }
        Ok(())
    }

    async fn put_outputs(&mut self, outputs: &[PutOutput]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO outputs (task_id, value, source) VALUES (?1, ?2, ?3)",
        )?;
        for o in outputs {
            stmt.execute(params![Id(&o.task_id), o.value, o.source])?;
        }
        Ok(())
    }

    async fn next_cache_seqs(&mut self, jobs: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE jobs SET cache_seq = cache_seq + 1 WHERE id = ?1 RETURNING cache_seq",
        )?;
        let mut seqs = HashMap::with_capacity(jobs.len());
        for job in jobs {
            let seq: i64 = stmt.query_row([Id(job)], |r| r.get(0))?;
            seqs.insert(job.to_string(), seq.max(0) as u64);
        }
        Ok(seqs)
    }

    async fn write_cache(&mut self, writes: &[CacheSet]) -> Result<(), StoreError> {
        let mut put = self.conn.prepare_cached(
            "INSERT INTO cache_entries (job_id, key, seq, value) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (job_id, key, seq) DO UPDATE SET value = excluded.value",
        )?;
        for w in writes {
            put.execute(params![Id(&w.job_id), w.key, i(w.seq), w.value])?;
        }
        Ok(())
    }

    async fn compact_cache(&mut self, jobs: &[String]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM cache_entries AS c WHERE c.job_id = ?1 AND (c.value IS NULL OR c.seq < \
             (SELECT max(seq) FROM cache_entries l WHERE l.job_id = c.job_id AND l.key = c.key))",
        )?;
        for job in jobs {
            stmt.execute([Id(job)])?;
        }
        Ok(())
    }

    async fn output(&mut self, task: &str) -> Result<Option<PutOutput>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value, source FROM outputs WHERE task_id = ?1")?
            .query_row([Id(task)], |r| {
                Ok(PutOutput {
                    task_id: task.to_string(),
                    value: r.get_ref(0)?.as_bytes_or_null()?.map(<[u8]>::to_vec),
                    source: r.get(1)?,
                })
            })
            .optional()?)
    }

    async fn dependencies(&mut self, task: &str) -> Result<Vec<DependencyRow>, StoreError> {
        // `depends_on` lists the ids as JSON text; each is looked up as the bytes it is stored as.
        let Some(listed) = self
            .conn
            .prepare_cached("SELECT depends_on FROM tasks WHERE id = ?1")?
            .query_row([Id(task)], |r| r.get::<_, String>(0))
            .optional()?
        else {
            return Ok(Vec::new());
        };
        let ids: Vec<String> = serde_json::from_str(&listed)
            .map_err(|e| StoreError::Corrupt(format!("dependencies {listed:?} ({e})")))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.path, t.state, length(o.value) FROM tasks t \
             LEFT JOIN outputs o ON o.task_id = t.id WHERE t.id = ?1",
        )?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let row = stmt
                .query_row([Id(&id)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .optional()?;
            if let Some((path, state, len)) = row {
                rows.push((id, path, state, len));
            }
        }
        rows.into_iter()
            .map(|(task_id, path, state, len)| {
                Ok(DependencyRow {
                    task_id,
                    path,
                    state: state_of(&state)?,
                    output_bytes: len.map(|n| n.max(0) as u64),
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
        let found = self
            .conn
            .prepare_cached(
                "SELECT value FROM cache_entries WHERE job_id = ?1 AND key = ?2 AND seq <= ?3 \
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![Id(job), key, i(as_of)], |r| {
                Ok(r.get_ref(0)?.as_bytes_or_null()?.map(<[u8]>::to_vec))
            })
            .optional()?;
        Ok(found.flatten())
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
            .conn
            .prepare_cached(
                "SELECT c.key, length(c.value) FROM cache_entries c \
                 WHERE c.job_id = ?1 AND (c.key > ?2 OR (?3 AND c.key = ?2)) \
                 AND (?4 IS NULL OR c.key < ?4) AND c.value IS NOT NULL \
                 AND c.seq = (SELECT max(l.seq) FROM cache_entries l \
                     WHERE l.job_id = c.job_id AND l.key = c.key AND l.seq <= ?6) \
                 ORDER BY c.key LIMIT ?5",
            )?
            .query_map(
                params![
                    Id(job),
                    range.start,
                    range.inclusive,
                    range.end,
                    limit,
                    i(as_of)
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    async fn insert_logs(&mut self, lines: &[LogLine]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO logs (job_id, task_id, runner_id, attempt, time, level, message, fields) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for line in lines {
            stmt.execute(params![
                Id(&line.job_id),
                Id(&line.task_id),
                line.runner_id,
                line.attempt,
                i(line.time_unix_nano),
                level_rank(line.level),
                line.message,
                serde_json::to_string(&line.fields).expect("JSON maps serialize"),
            ])?;
        }
        Ok(())
    }

    #[cfg(feature = "testing")]
    async fn plant_tasks(&mut self, tasks: &[super::plant::PlantedTask]) -> Result<(), StoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO tasks (id, job_id, parent_id, depth, path, name, major, minor, input, \
             display, cluster, state, depends_on, pending_deps, children, open_children, \
             completed, retries_used, max_retries, attempt, lease, lease_runner_ref, \
             lease_expires_at, not_before, error, created_at, started_at, finished_at, lost) \
             SELECT ?1, root.job_id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
             ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28 \
             FROM (SELECT id AS job_id FROM jobs WHERE root_id = ?29) AS root",
        )?;
        let mut dep = self
            .conn
            .prepare_cached("INSERT INTO task_deps (depends_on, task_id) VALUES (?1, ?2)")?;
        let mut span = self.conn.prepare_cached(
            "UPDATE tasks SET span_key = ?2, span_outcome = 0, span_runner_ref = lease_runner_ref \
             WHERE id = ?1 AND started_at IS NOT NULL",
        )?;
        let root = tasks.first().map(|t| t.id.as_str()).unwrap_or_default();
        for t in tasks {
            let runner = match &t.runner {
                Some(runner) => Some(intern_runner(&self.conn, runner)?),
                None => None,
            };
            insert.execute(params![
                Id(&t.id),
                t.parent_id.as_deref().map(Id),
                t.depth,
                t.path,
                t.identifier.name,
                t.identifier.version.major,
                t.identifier.version.minor,
                t.input.to_string(),
                t.display,
                t.cluster,
                t.state.as_str(),
                serde_json::to_string(&t.depends_on).expect("strings serialize"),
                t.pending_deps,
                i(t.children),
                i(t.open_children),
                t.completed,
                t.retries_used,
                t.max_retries,
                t.attempt,
                i(t.lease),
                runner,
                t.lease_expires_at.map(i),
                i(t.not_before),
                t.error,
                i(t.created_at),
                t.started_at.map(i),
                t.finished_at.map(i),
                t.lost,
                Id(root),
            ])?;
            for d in &t.depends_on {
                dep.execute(params![Id(d), Id(&t.id)])?;
            }
            if t.state == TaskState::Running {
                span.execute(params![Id(&t.id), span_keys(&self.conn, 1)?])?;
            }
        }
        Ok(())
    }

    async fn component_tenants(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Vec<TenantId>, StoreError> {
        let tenants = self
            .conn
            .prepare_cached(&format!(
                "SELECT tenant_id FROM components WHERE digest = ?1 AND {} ORDER BY tenant_id",
                reach_sql(reach, "tenant_id")
            ))?
            .query_map([digest], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(tenants)
    }

    async fn insert_tenant(
        &mut self,
        tenant: &tessera_api::Tenant,
    ) -> Result<TenantId, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "INSERT INTO tenants (name, weight, created_at) VALUES (?1, ?2, ?3) RETURNING id",
            )?
            .query_row(
                params![tenant.name, tenant.weight, i(tenant.created_at)],
                |r| r.get(0),
            )?)
    }

    async fn tenants(
        &mut self,
        reach: Reach,
    ) -> Result<Vec<(TenantId, tessera_api::Tenant)>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, name, weight, created_at, quotas FROM tenants WHERE {} ORDER BY name",
                reach_sql(reach, "id")
            ))?
            .query_map([], tenant_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, (name, weight, created, quotas))| {
                Ok((id, tenant(name, weight, created, &quotas)?))
            })
            .collect()
    }

    async fn tenant_named(
        &mut self,
        name: &str,
    ) -> Result<Option<(TenantId, tessera_api::Tenant)>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, name, weight, created_at, quotas FROM tenants WHERE name = ?1",
            )?
            .query_row([name], tenant_row)
            .optional()?;
        row.map(|(id, (name, weight, created, quotas))| {
            Ok((id, tenant(name, weight, created, &quotas)?))
        })
        .transpose()
    }

    async fn set_tenant(
        &mut self,
        id: TenantId,
        weight: u32,
        quotas: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE tenants SET weight = ?2, quotas = ?3 WHERE id = ?1")?
            .execute(params![id, weight, quotas])?;
        Ok(())
    }

    async fn tenant_usage(&mut self, reach: Reach) -> Result<Vec<TenantLoad>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT tenant_id, SUM(tasks_queued), SUM(tasks_running) FROM jobs \
                 WHERE completed_at IS NULL AND {} GROUP BY tenant_id \
                 HAVING SUM(tasks_queued) > 0 OR SUM(tasks_running) > 0",
                reach_sql(reach, "tenant_id")
            ))?
            .query_map([], |r| {
                Ok(TenantLoad {
                    tenant: r.get(0)?,
                    queued: r.get::<_, i64>(1)?.max(0) as u64,
                    running: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    async fn component_bytes_of(&mut self, tenant: TenantId) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM components WHERE tenant_id = ?1")?
            .query_row([tenant], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    async fn job_log_bytes(
        &mut self,
        jobs: &[&str],
    ) -> Result<HashMap<String, (TenantId, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT tenant_id, log_bytes FROM jobs WHERE id = ?1")?;
        let mut found = HashMap::with_capacity(jobs.len());
        for job in jobs {
            if let Some((tenant, bytes)) = stmt
                .query_row([Id(job)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?
            {
                found.insert(job.to_string(), (tenant, bytes.max(0) as u64));
            }
        }
        Ok(found)
    }

    async fn add_log_bytes(&mut self, added: &[(String, u64)]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE jobs SET log_bytes = log_bytes + ?2 WHERE id = ?1")?;
        for (job, bytes) in added {
            stmt.execute(params![Id(job), i(*bytes)])?;
        }
        Ok(())
    }

    async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO api_keys (id, tenant_id, role, name, hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                key.id,
                key.tenant,
                key.role.as_str(),
                key.name,
                key.hash,
                i(key.created_at)
            ])?;
        Ok(())
    }

    async fn keys(&mut self, reach: Reach) -> Result<Vec<KeyRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE {} ORDER BY k.created_at DESC, k.id LIMIT 1000",
            reach_sql(reach, "k.tenant_id")
        ))?;
        let rows = stmt
            .query_map([], key_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|r| r.decode()).collect()
    }

    async fn key(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
                 WHERE k.id = ?1"
            ))?
            .query_row([id], key_row)
            .optional()?;
        row.map(KeyRow::decode).transpose()
    }

    async fn revoke_key(&mut self, id: &str, now: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            )?
            .execute(params![id, i(now)])?;
        Ok(())
    }

    async fn lease_of(&mut self, task: &str) -> Result<Option<super::LeaseOf>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("{LEASE_SELECT} WHERE t.id = ?1"))?
            .query_row([Id(task)], |r| {
                Ok(super::LeaseOf {
                    job_id: id_at(r, 0)?,
                    running: r.get(1)?,
                    lease: r.get(2)?,
                    expires_at: r.get(3)?,
                    runner: r.get(4)?,
                    component: r.get(5)?,
                })
            })
            .optional()?)
    }

    async fn lock_key(&mut self, id: &str) -> Result<bool, StoreError> {
        // The write transaction holds SQLite's only write lock: no revocation commits meanwhile.
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1 AND revoked_at IS NULL")?
            .exists([id])?)
    }

    async fn keys_created(&mut self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM api_keys")?
            .query_row([], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    async fn notify(&mut self, scope: &super::Scope) -> Result<(), StoreError> {
        // One server per SQLite file: its own wake-ups are all there is.
        self.notified.push(scope.clone());
        Ok(())
    }

    fn notified(&mut self) -> Vec<super::Scope> {
        std::mem::take(&mut self.notified)
    }
}
