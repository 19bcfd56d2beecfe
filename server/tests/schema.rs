//! Schema parity: after their migrations, the SQLite and PostgreSQL databases have the same
//! tables, columns and indexes (names and indexed columns; types differ by dialect).

use std::collections::BTreeSet;

use tessera_server::store::testing::AsDefault;
use tessera_server::{PostgresStore, SqliteStore, StoreConfig};

/// `table`, `table.column` and `table index(columns)` entries of one schema.
type Schema = BTreeSet<String>;

fn sqlite_schema() -> Schema {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    drop(SqliteStore::open(&path, StoreConfig::default()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut schema = Schema::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        schema.insert(table.clone());
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for c in columns {
            schema.insert(format!("{table}.{c}"));
        }
        // Secondary indexes only: 'c' = made by CREATE INDEX (not a primary key or UNIQUE).
        let indexes: Vec<(String, bool)> = conn
            .prepare(&format!(
                "SELECT name, \"unique\" FROM pragma_index_list('{table}') WHERE origin = 'c'"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (index, unique) in indexes {
            let columns: Vec<String> = conn
                .prepare(&format!(
                    "SELECT name FROM pragma_index_info('{index}') ORDER BY seqno"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let kind = if unique { "unique index" } else { "index" };
            schema.insert(format!("{table} {kind} {index}({})", columns.join(", ")));
        }
    }
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    drop(
        PostgresStore::connect(url, StoreConfig::default())
            .await
            .unwrap(),
    );
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut schema = Schema::new();
    for r in client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'tessera_schema'",
            &[],
        )
        .await
        .unwrap()
    {
        let (table, column): (String, String) = (r.get(0), r.get(1));
        schema.insert(table.clone());
        schema.insert(format!("{table}.{column}"));
    }
    for r in client
        .query(
            "SELECT t.relname::text, i.relname::text, x.indisunique, \
             array_agg(a.attname::text ORDER BY k.n) \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace s ON s.oid = t.relnamespace \
             CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE s.nspname = current_schema() AND NOT x.indisprimary \
             GROUP BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap()
    {
        let (table, index, unique, columns): (String, String, bool, Vec<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let kind = if unique { "unique index" } else { "index" };
        schema.insert(format!("{table} {kind} {index}({})", columns.join(", ")));
    }
    schema
}

#[tokio::test]
async fn sqlite_and_postgres_schemas_have_the_same_tables_columns_and_indexes() {
    let sqlite = sqlite_schema();
    assert!(sqlite.contains("tasks.lease_expires_at"), "{sqlite:#?}");
    assert!(
        sqlite.contains("logs index logs_task_time(task_id, time, id)"),
        "{sqlite:#?}"
    );
    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let postgres = postgres_schema(&url).await;
    let only_sqlite: Vec<&String> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<&String> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the schemas drifted apart:\n  only in SQLite: {only_sqlite:#?}\n  only in PostgreSQL: {only_postgres:#?}"
    );
}

/// When the jobs these tests make start.
const T0: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

/// Submits a job named `name` whose root is a `Root`.
async fn submit_root(store: &dyn tessera_server::Store, name: &str, at: u64) -> tessera_api::Job {
    let job = tessera_api::SubmitJob {
        name: name.into(),
        root: tessera_api::RootTask {
            identifier: identifier("Root"),
            input: serde_json::json!({}),
            max_retries: 0,
            display: None,
        },
        cluster: None,
    };
    AsDefault(store).submit(&job, at).await.unwrap()
}

fn identifier(name: &str) -> tessera_api::TaskIdentifier {
    tessera_api::TaskIdentifier::parse(name, "v0.0").unwrap()
}

/// A claim of runner `r` for up to `max` tasks of the `types` (at v0.0), the component file
/// serving each named by `digests`.
fn claim_by_r(types: &[&str], max: u32, digests: &[String]) -> tessera_api::ClaimRequest {
    tessera_api::ClaimRequest {
        runner_id: "r".into(),
        cluster: "default".into(),
        identifiers: types.iter().map(|t| identifier(t)).collect(),
        max,
        wait_ms: 0,
        return_when_idle: false,
        digests: digests.to_vec(),
        deployed: false,
        host: None,
        concurrency: None,
        wasmtime: None,
    }
}

/// `n` `Leaf` subtasks, each with `max_retries`.
fn leaves(n: usize, max_retries: u32) -> Vec<tessera_api::SubtaskSpec> {
    (0..n)
        .map(|_| tessera_api::SubtaskSpec {
            identifier: identifier("Leaf"),
            input: serde_json::json!({}),
            display: None,
            depends_on: vec![],
            max_retries,
            cluster: None,
        })
        .collect()
}

fn computed(subtasks: Vec<tessera_api::SubtaskSpec>) -> tessera_api::Report {
    tessera_api::Report::computed(subtasks)
}

fn failed(display: Option<&str>) -> tessera_api::Report {
    tessera_api::Report::Failed {
        permanent: false,
        reason: "boom".into(),
        display: display.map(Into::into),
    }
}

/// Reports each `(attempt, report)` at `at` as runner `r`.
async fn report(
    store: &dyn tessera_server::Store,
    batch: Vec<(&tessera_api::ClaimedTask, tessera_api::Report)>,
    at: u64,
) -> Vec<tessera_api::ReportResult> {
    let batch: Vec<tessera_api::TaskReport> = batch
        .into_iter()
        .map(|(task, report)| tessera_api::TaskReport {
            task_id: task.task_id.clone(),
            lease: task.lease,
            report,
        })
        .collect();
    AsDefault(store).report("r", &batch, at).await.unwrap()
}

/// A job with tasks in several states: a computed root, a computed leaf, a failed leaf and a
/// canceled one (not run: its job failed), with three ended attempts. Returns the job's id.
async fn job_in_several_states(store: &dyn tessera_server::Store) -> String {
    let job = submit_root(store, "old", T0).await;
    let types = ["Root", "Leaf"];
    let got = AsDefault(store)
        .claim(&claim_by_r(&types, 1, &[]), T0 + 1)
        .await
        .unwrap();
    report(store, vec![(&got[0], computed(leaves(3, 0)))], T0 + 10).await;
    let got = AsDefault(store)
        .claim(&claim_by_r(&types, 2, &[]), T0 + 11)
        .await
        .unwrap();
    let batch = vec![(&got[0], computed(vec![])), (&got[1], failed(None))];
    report(store, batch, T0 + 20).await;
    job.id
}

/// Undoes migrations 0016 and 0015 (either dialect): runners without their wasmtime version;
/// each task's latest attempt back into `spans` under its key, and the task's `started_at`
/// back to its first attempt's start.
const UNDO_TO_VERSION_14: &str = "ALTER TABLE runners DROP COLUMN wasmtime; \
    INSERT INTO spans (id, job_id, task_id, attempt, runner_ref, \
    name, start, \"end\", outcome, error, component_id) \
    SELECT span_key, job_id, id, attempt, COALESCE(span_runner_ref, 0), COALESCE(display, name), \
    started_at, span_end, CASE span_outcome WHEN 0 THEN 'running' WHEN 1 THEN 'computed' \
    WHEN 2 THEN 'failed' WHEN 3 THEN 'abandoned' WHEN 4 THEN 'expired' ELSE 'canceled' END, \
    span_error, span_component_id FROM tasks WHERE span_key IS NOT NULL; \
    UPDATE tasks SET started_at = COALESCE((SELECT MIN(start) FROM spans \
    WHERE spans.task_id = tasks.id), started_at); \
    DROP INDEX tasks_job_span; ALTER TABLE tasks DROP COLUMN span_key; \
    ALTER TABLE tasks DROP COLUMN span_end; ALTER TABLE tasks DROP COLUMN span_outcome; \
    ALTER TABLE tasks DROP COLUMN span_error; ALTER TABLE tasks DROP COLUMN span_runner_ref; \
    ALTER TABLE tasks DROP COLUMN span_component_id;";

/// Undoes SQLite migration 0014: a running task names its lease's runner by its id again.
const UNDO_LEASE_RUNNER_REF: &str = "ALTER TABLE tasks ADD COLUMN lease_runner TEXT; \
    UPDATE tasks SET lease_runner = (SELECT name FROM runner_names WHERE id = lease_runner_ref); \
    ALTER TABLE tasks DROP COLUMN lease_runner_ref;";

/// The columns holding job and task ids, which SQLite migration 0013 turned into bytes.
const ID_COLUMNS: &[(&str, &[&str])] = &[
    ("jobs", &["id", "root_id"]),
    ("tasks", &["id", "job_id", "parent_id"]),
    ("task_deps", &["depends_on", "task_id"]),
    ("progress", &["job_id"]),
    ("logs", &["job_id", "task_id"]),
    ("spans", &["job_id", "task_id"]),
    ("outputs", &["task_id"]),
    ("cache_entries", &["job_id"]),
];

/// Undoes SQLite migration 0013: every id back to its hyphenated text.
fn undo_binary_ids() -> String {
    let text = |c: &str| {
        let part = |from: u32, len: u32| format!("substr(hex({c}), {from}, {len})");
        format!(
            "lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {})",
            part(1, 8),
            part(9, 4),
            part(13, 4),
            part(17, 4),
            part(21, 12)
        )
    };
    ID_COLUMNS
        .iter()
        .flat_map(|(table, columns)| {
            columns.iter().map(move |c| {
                format!(
                    "UPDATE {table} SET {c} = {} WHERE typeof({c}) = 'blob';",
                    text(c)
                )
            })
        })
        .collect()
}

/// How many stored ids, in every id column, are of SQLite type `kind` ('text', 'blob').
fn ids_of_type(conn: &rusqlite::Connection, kind: &str) -> i64 {
    ID_COLUMNS
        .iter()
        .flat_map(|(table, columns)| columns.iter().map(move |c| (table, c)))
        .map(|(table, c)| {
            conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE typeof({c}) = ?1"),
                [kind],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
        })
        .sum()
}

/// A database from before binary ids (schema version 12 on SQLite) keeps every job, task and
/// span when its text ids become bytes, and finds them by the same ids.
#[tokio::test]
async fn upgrading_turns_text_ids_into_bytes_and_finds_everything() {
    use tessera_api::{SpanQuery, TaskQuery};
    use tessera_server::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let id = job_in_several_states(&store).await;
    let all = TaskQuery {
        limit: Some(100),
        ..Default::default()
    };
    let before = (
        store.job(&id).await.unwrap(),
        store.tasks(&id, &all).await.unwrap().tasks,
        store.spans(&id, &SpanQuery::default()).await.unwrap().spans,
    );
    assert_eq!(before.1.len(), 4, "{:?}", before.1);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored = ids_of_type(&conn, "blob");
    // Back to each attempt in `spans`, as at version 12 (two more ids for each moved span).
    conn.execute_batch(UNDO_TO_VERSION_14).unwrap();
    let blobs = ids_of_type(&conn, "blob");
    assert!(blobs > 10, "ids are stored as bytes: {blobs}");
    conn.execute_batch(UNDO_LEASE_RUNNER_REF).unwrap();
    conn.execute_batch(&undo_binary_ids()).unwrap();
    assert_eq!(ids_of_type(&conn, "blob"), 0);
    assert_eq!(
        ids_of_type(&conn, "text"),
        blobs,
        "every id rewound to text"
    );
    conn.pragma_update(None, "user_version", 12).unwrap();
    drop(conn);

    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let after = (
        store.job(&id).await.unwrap(),
        store.tasks(&id, &all).await.unwrap().tasks,
        store.spans(&id, &SpanQuery::default()).await.unwrap().spans,
    );
    assert_eq!(format!("{after:?}"), format!("{before:?}"));
    assert_eq!(store.audit(&id).await.unwrap(), Vec::<String>::new());
    let root = &after.1[0];
    assert_eq!(store.task(&root.id).await.unwrap().id, root.id);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(ids_of_type(&conn, "text"), 0, "no text id is left");
    assert_eq!(ids_of_type(&conn, "blob"), stored);
}

/// Undoes SQLite migrations 0011 (queued-task index) and 0012 (runner names), so that a test
/// can rewind a database to before them.
const UNDO_INDEX_AND_RUNNERS: &str = "DROP INDEX tasks_job_queued; \
    CREATE INDEX tasks_job_state ON tasks(job_id, state); \
    ALTER TABLE spans ADD COLUMN runner_id TEXT NOT NULL DEFAULT ''; \
    UPDATE spans SET runner_id = (SELECT name FROM runner_names WHERE id = runner_ref); \
    ALTER TABLE spans DROP COLUMN runner_ref; DROP TABLE runner_names;";

/// Undoes SQLite migration 0010 (tenants), so that a test can rewind a database to before it.
const UNDO_TENANTS: &str = "DROP TABLE tenants; DROP TABLE api_keys; DROP INDEX jobs_tenant; \
    DROP INDEX jobs_active; ALTER TABLE jobs DROP COLUMN log_bytes; \
    ALTER TABLE jobs DROP COLUMN tenant_id; DROP INDEX tasks_queued; \
    ALTER TABLE tasks DROP COLUMN tenant_id; \
    CREATE INDEX tasks_queued ON tasks(cluster, job_id, path) WHERE state = 'queued'; \
    ALTER TABLE runners DROP COLUMN tenant_id; \
    CREATE TABLE old_components (digest TEXT PRIMARY KEY, name TEXT NOT NULL, \
    size INTEGER NOT NULL, task_types TEXT NOT NULL, deployed_by TEXT NOT NULL, \
    deployed_at INTEGER NOT NULL, undeployed_at INTEGER, bytes BLOB NOT NULL); \
    INSERT INTO old_components SELECT digest, name, size, task_types, deployed_by, deployed_at, \
    undeployed_at, bytes FROM components; DROP TABLE components; \
    ALTER TABLE old_components RENAME TO components; \
    CREATE INDEX components_name ON components(name, deployed_at);";

/// A database from before the kept job counts (schema version 3 on SQLite, 4 on PostgreSQL)
/// gets them from its rows when it is opened by this version.
#[tokio::test]
async fn upgrading_fills_in_the_kept_job_counts() {
    const TALLY_COLUMNS: &str = "tasks_queued, tasks_running, tasks_computed, tasks_failed, \
        tasks_canceled, task_time_ns, last_end";
    let check = |job: tessera_api::Job| {
        let c = &job.task_counts;
        assert_eq!(
            (c.queued, c.computed, c.failed, c.canceled),
            (0, 2, 1, 1),
            "{job:?}"
        );
        assert_eq!(job.task_time_ns, 9 + 9 + 9, "three attempts of 9 ns each");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let id = job_in_several_states(&store).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(UNDO_TO_VERSION_14).unwrap();
    conn.execute_batch(UNDO_LEASE_RUNNER_REF).unwrap();
    conn.execute_batch(&undo_binary_ids()).unwrap();
    conn.execute_batch(UNDO_INDEX_AND_RUNNERS).unwrap();
    conn.execute_batch(UNDO_TENANTS).unwrap();
    for column in TALLY_COLUMNS.split(", ") {
        conn.execute_batch(&format!("ALTER TABLE jobs DROP COLUMN {column}"))
            .unwrap();
    }
    // Version 3 had the task total as a column of its own (dropped by 0006).
    conn.execute_batch("ALTER TABLE jobs ADD COLUMN task_total INTEGER NOT NULL DEFAULT 4")
        .unwrap();
    // And none of what 0007 (deployed components), 0008 (outputs, the job cache) and 0009
    // (span digests) added.
    conn.execute_batch(
        "DROP TABLE components; ALTER TABLE jobs DROP COLUMN pins; \
         ALTER TABLE tasks DROP COLUMN component; ALTER TABLE spans DROP COLUMN component_id; \
         DROP TABLE digests; \
         ALTER TABLE runners DROP COLUMN deployed; ALTER TABLE runners DROP COLUMN host; \
         ALTER TABLE runners DROP COLUMN concurrency; \
         DROP TABLE outputs; DROP TABLE cache_entries; ALTER TABLE jobs DROP COLUMN cache_seq;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    use tessera_server::Store;
    assert_eq!(store.audit(&id).await.unwrap(), Vec::<String>::new());
    check(store.job(&id).await.unwrap());

    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    let id = job_in_several_states(&store).await;
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let drops: Vec<String> = TALLY_COLUMNS
        .split(", ")
        .map(|c| format!("DROP COLUMN {c}"))
        .collect();
    client
        .batch_execute(&format!(
            "{UNDO_TO_VERSION_14} ALTER TABLE jobs {}, \
             ADD COLUMN task_total BIGINT NOT NULL DEFAULT 4; UPDATE tessera_schema SET version = 4",
            drops.join(", ")
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(store.audit(&id).await.unwrap(), Vec::<String>::new());
    check(store.job(&id).await.unwrap());
}

/// Submits a job and claims its root as a runner whose file has `digest`; returns the job.
async fn claim_one(store: &dyn tessera_server::Store, digest: &str) -> String {
    let job = submit_root(store, "named", 1).await;
    let claim = claim_by_r(&["Root"], 1, &[digest.to_string()]);
    assert_eq!(AsDefault(store).claim(&claim, 2).await.unwrap().len(), 1);
    job.id
}

/// The component the first span of `job` names (and that span's runner is still `r`).
async fn span_component(store: &dyn tessera_server::Store, job: &str) -> Option<String> {
    let query = tessera_api::SpanQuery::default();
    let span = store.spans(job, &query).await.unwrap().spans.remove(0);
    assert_eq!(span.runner_id, "r", "the span keeps its runner");
    span.component
}

/// A database from before span digests were interned (schema version 8 on SQLite, 9 on
/// PostgreSQL) keeps every span's component when it is opened by this version.
#[tokio::test]
async fn upgrading_keeps_the_component_each_span_named() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let job = claim_one(&store, &digest).await;
    assert_eq!(span_component(&store, &job).await, Some(digest.clone()));
    drop(store);
    // Back to version 8: the digest in the span row, no digests table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(UNDO_TO_VERSION_14).unwrap();
    conn.execute_batch(UNDO_LEASE_RUNNER_REF).unwrap();
    conn.execute_batch(&undo_binary_ids()).unwrap();
    conn.execute_batch(UNDO_INDEX_AND_RUNNERS).unwrap();
    conn.execute_batch(UNDO_TENANTS).unwrap();
    conn.execute_batch(
        "ALTER TABLE spans ADD COLUMN component TEXT; \
         UPDATE spans SET component = (SELECT digest FROM digests WHERE id = component_id); \
         ALTER TABLE spans DROP COLUMN component_id; DROP TABLE digests;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 8).unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(span_component(&store, &job).await, Some(digest.clone()));
    assert_eq!(lease_runner(&store, &job).await.as_deref(), Some("r"));
    in_the_default_tenant(&store, &job).await;

    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    let job = claim_one(&store, &digest).await;
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(UNDO_TO_VERSION_14).await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE spans ADD COLUMN component TEXT; \
             UPDATE spans SET component = d.digest FROM digests d WHERE d.id = spans.component_id; \
             ALTER TABLE spans DROP COLUMN component_id; DROP TABLE digests; \
             ALTER TABLE tasks ADD COLUMN lease_runner TEXT; \
             UPDATE tasks SET lease_runner = r.name FROM runner_names r \
             WHERE r.id = tasks.lease_runner_ref; \
             ALTER TABLE tasks DROP COLUMN lease_runner_ref; \
             UPDATE tessera_schema SET version = 9",
        )
        .await
        .unwrap();
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(span_component(&store, &job).await, Some(digest));
    assert_eq!(lease_runner(&store, &job).await.as_deref(), Some("r"));
    in_the_default_tenant(&store, &job).await;
}

/// The runner holding the lease of `job`'s root task.
async fn lease_runner(store: &dyn tessera_server::Store, job: &str) -> Option<String> {
    let page = store.tasks(job, &Default::default()).await.unwrap();
    page.tasks[0].runner_id.clone()
}

/// What a database held before tenants is the default tenant's after the upgrade.
async fn in_the_default_tenant(store: &dyn tessera_server::Store, job: &str) {
    use tessera_server::store::{DEFAULT_TENANT, Owned, Reach};
    assert_eq!(
        store.owner(Owned::Job(job)).await.unwrap(),
        Some(DEFAULT_TENANT)
    );
    let page = store
        .jobs(Reach::Tenant(DEFAULT_TENANT), &Default::default())
        .await
        .unwrap();
    assert!(page.jobs.iter().any(|j| j.id == job));
    let tenants = store.tenants(Reach::All).await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].1.name, "default");
}

/// A job whose leaf `A` failed once and is running its second attempt, beside a leaf still in
/// its first, all claimed by runner `r` with a component file for each type. Returns the job
/// and `A`'s running attempt.
async fn job_with_a_retried_task(
    store: &dyn tessera_server::Store,
) -> (String, tessera_api::ClaimedTask) {
    let job = submit_root(store, "retried", T0).await;
    let files = [
        format!("sha256:{}", "a1".repeat(32)),
        format!("sha256:{}", "b2".repeat(32)),
    ];
    let claim = |max| claim_by_r(&["Root", "Leaf"], max, &files);
    let got = AsDefault(store).claim(&claim(1), T0 + SEC).await.unwrap();
    report(store, vec![(&got[0], computed(leaves(2, 1)))], T0 + 2 * SEC).await;
    let got = AsDefault(store)
        .claim(&claim(2), T0 + 3 * SEC)
        .await
        .unwrap();
    report(
        store,
        vec![(&got[0], failed(Some("A, first try")))],
        T0 + 4 * SEC,
    )
    .await;
    // Past the retry's backoff.
    let again = AsDefault(store)
        .claim(&claim(1), T0 + 60 * SEC)
        .await
        .unwrap();
    assert_eq!(again[0].task_id, got[0].task_id);
    assert_eq!(again[0].attempt, 2);
    (job.id, again.into_iter().next().unwrap())
}

/// What a reader sees of `job`: the job, its tasks, and its spans read a page of one at a time.
async fn seen(store: &dyn tessera_server::Store, job: &str) -> String {
    let tasks = tessera_api::TaskQuery {
        limit: Some(100),
        ..Default::default()
    };
    let mut query = tessera_api::SpanQuery {
        limit: Some(1),
        ..Default::default()
    };
    let mut spans = Vec::new();
    loop {
        let page = store.spans(job, &query).await.unwrap();
        spans.extend(page.spans);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(spans.len(), 4, "the root's, A's two and B's: {spans:?}");
    assert!(
        spans
            .iter()
            .all(|s| s.runner_id == "r" && s.component.is_some())
    );
    let job = store.job(job).await.unwrap();
    format!(
        "{job:?}\n{:?}\n{spans:?}",
        store.tasks(&job.id, &tasks).await.unwrap()
    )
}

/// Reports `task` computed a second after its claim; whether it was accepted.
async fn finish(store: &dyn tessera_server::Store, task: &tessera_api::ClaimedTask) -> bool {
    report(store, vec![(task, computed(vec![]))], T0 + 61 * SEC).await[0].accepted
}

/// A database from before each task's latest attempt moved onto its row (schema version 14)
/// keeps every span, with its runner, component and page order, and each task's first start;
/// an attempt running across the upgrade reports as usual.
#[tokio::test]
async fn upgrading_moves_each_tasks_latest_attempt_onto_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let (job, running) = job_with_a_retried_task(&store).await;
    let before = seen(&store, &job).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(UNDO_TO_VERSION_14).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4, "every attempt back in spans");
    conn.pragma_update(None, "user_version", 14).unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(seen(&store, &job).await, before);
    use tessera_server::Store;
    assert_eq!(store.audit(&job).await.unwrap(), Vec::<String>::new());
    assert!(finish(&store, &running).await);
    assert_eq!(store.audit(&job).await.unwrap(), Vec::<String>::new());
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "only A's first attempt is not its task's latest");

    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    let (job, running) = job_with_a_retried_task(&store).await;
    let before = seen(&store, &job).await;
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "{UNDO_TO_VERSION_14} UPDATE tessera_schema SET version = 14"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(&url, StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(seen(&store, &job).await, before);
    assert_eq!(store.audit(&job).await.unwrap(), Vec::<String>::new());
    assert!(finish(&store, &running).await);
    assert_eq!(store.audit(&job).await.unwrap(), Vec::<String>::new());
}

/// A stored input or dependency list that cannot be read is a corrupt store, said so — never a
/// silent `null` or `[]` — and a claim leaves such a task out, handing out the rest of its
/// batch. Both dialects store them as text.
#[tokio::test]
async fn an_unreadable_stored_input_is_corrupt_and_spoils_no_claim() {
    use tessera_server::{Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let bad = submit_root(&store, "bad", T0).await;
    let good = submit_root(&store, "good", T0 + 1).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE tasks SET input = '{not json' WHERE id = (SELECT root_id FROM jobs WHERE name = 'bad')",
        [],
    )
    .unwrap();
    let bad_root = store
        .tasks(&bad.id, &Default::default())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&bad_root, StoreError::Corrupt(what) if what.contains("input")),
        "{bad_root:?}"
    );
    let claimed = AsDefault(&store)
        .claim(&claim_by_r(&["Root"], 10, &[]), T0 + 2)
        .await
        .unwrap();
    let jobs: Vec<&str> = claimed.iter().map(|t| t.job_id.as_str()).collect();
    assert_eq!(
        jobs,
        [good.id.as_str()],
        "the good job's root is handed out"
    );
    conn.execute(
        "UPDATE tasks SET depends_on = '[1,' WHERE id = (SELECT root_id FROM jobs WHERE name = 'good')",
        [],
    )
    .unwrap();
    let e = store
        .tasks(&good.id, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt(what) if what.contains("dependencies")),
        "{e:?}"
    );
}
