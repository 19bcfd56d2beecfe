//! How values are stored: ids, enum encodings (unknown text is an error), cursors, paths.

use tessera_api::{JobState, Level, SpanOutcome, TaskState};

use super::{StoreConfig, StoreError};

/// A new UUIDv7, time-ordered.
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The UUID bytes of `id`, if it is spelled as [`new_id`] spells ids (hyphenated, lowercase):
/// how SQLite stores it. Any other text names no job or task.
pub(super) fn id_bytes(id: &str) -> Option<[u8; 16]> {
    let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
    canonical
        .then(|| uuid::Uuid::try_parse(id).ok())
        .flatten()
        .map(|u| u.into_bytes())
}

/// A fresh lease token: random, from 1 to 2^53 − 1 (exact in every JSON reader), so that no
/// one can present the token of an attempt they did not claim.
pub(super) fn new_lease() -> u64 {
    (rand::random::<u64>() >> 11).max(1)
}

/// A claim's secret for PostgreSQL to derive each task's lease token from (its `md5` with the
/// task id): 128 random bits in hex.
pub(super) fn lease_secret() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A level as a number that orders by severity.
pub(super) fn level_rank(level: Level) -> i64 {
    level as i64
}

/// The level of a stored number.
pub(super) fn rank_level(rank: i64) -> Result<Level, StoreError> {
    Ok(match rank {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        _ => return Err(StoreError::Corrupt(format!("log level {rank}"))),
    })
}

/// A task state from its stored text.
pub(super) fn state_of(text: &str) -> Result<TaskState, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("task state {text:?}")))
}

/// A span outcome as a task row keeps its latest attempt's (`span_outcome`; `spans` keeps text).
pub(super) fn outcome_code(o: SpanOutcome) -> i64 {
    match o {
        SpanOutcome::Running => 0,
        SpanOutcome::Computed => 1,
        SpanOutcome::Failed => 2,
        SpanOutcome::Abandoned => 3,
        SpanOutcome::Expired => 4,
        SpanOutcome::Canceled => 5,
    }
}

/// SQL turning a task row's `span_outcome` into the text [`outcome_of`] reads (an unknown code
/// into text it refuses).
pub(super) const ROW_OUTCOME_SQL: &str = "CASE span_outcome WHEN 0 THEN 'running' \
    WHEN 1 THEN 'computed' WHEN 2 THEN 'failed' WHEN 3 THEN 'abandoned' WHEN 4 THEN 'expired' \
    WHEN 5 THEN 'canceled' ELSE 'code ' || span_outcome END";

/// A span outcome from its stored text.
pub(super) fn outcome_of(text: &str) -> Result<SpanOutcome, StoreError> {
    Ok(match text {
        "running" => SpanOutcome::Running,
        "computed" => SpanOutcome::Computed,
        "failed" => SpanOutcome::Failed,
        "abandoned" => SpanOutcome::Abandoned,
        "expired" => SpanOutcome::Expired,
        "canceled" => SpanOutcome::Canceled,
        _ => return Err(StoreError::Corrupt(format!("span outcome {text:?}"))),
    })
}

/// The lease length in ms, as runners are told.
pub(super) fn lease_ms(config: &StoreConfig) -> u64 {
    config.lease.as_millis() as u64
}

/// A duration in ns.
pub(super) fn nanos(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The task columns [`super::sqlite`] reads, in its row order. A row's `started_at` is its
/// latest attempt's start; a task's is its first attempt's, the earliest in `spans` if it ran
/// more than once.
pub(super) const TASK_COLUMNS: &str = "id, job_id, parent_id, depth, name, major, minor, input, display, \
    state, depends_on, attempt, retries_used, max_retries, cluster, \
    (SELECT name FROM runner_names WHERE runner_names.id = tasks.lease_runner_ref), error, \
    children, completed, created_at, \
    CASE WHEN attempt > 1 THEN COALESCE((SELECT MIN(s.start) FROM spans s \
    WHERE s.task_id = tasks.id), started_at) ELSE started_at END, finished_at, path, component";

/// The columns of a locked task row both drivers read into a `HeldRow`, in their decoders'
/// order; the last is the start of the attempt's span on the row while it is open.
pub(super) const HELD_SELECT: &str = "SELECT t.id, t.job_id, t.cluster, t.path, t.depth, t.state, t.lease, \
    t.lease_expires_at, t.attempt, t.retries_used, t.max_retries, j.canceled, t.lost, j.failed, \
    (SELECT name FROM runner_names WHERE id = t.lease_runner_ref), t.tenant_id, t.parent_id, \
    CASE WHEN t.span_key IS NOT NULL AND t.span_end IS NULL THEN t.started_at END \
    FROM tasks t JOIN jobs j ON j.id = t.job_id";

/// The columns of [`super::LeaseOf`] for one task (both dialects; each appends its `WHERE`).
pub(super) const LEASE_SELECT: &str = "SELECT t.job_id, t.state = 'running', t.lease, \
    t.lease_expires_at, (SELECT name FROM runner_names WHERE id = t.lease_runner_ref), \
    t.component FROM tasks t";

/// A task's stored input, read back. Unreadable text is a [`StoreError::Corrupt`], never a
/// silent `null`: a task must not run, or be shown, with an input it was not given.
pub(super) fn stored_input(task: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("task {task}'s input ({e})")))
}

/// A task's stored `depends_on` (the ids of the tasks it waits for), read back; unreadable text
/// is a [`StoreError::Corrupt`], as for [`stored_input`].
pub(super) fn stored_depends_on(task: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("task {task}'s dependencies ({e})")))
}

/// Reads a `TIME:ID` page cursor.
pub(super) fn split_cursor(cursor: &str) -> Result<(u64, i64), StoreError> {
    // Digits only; a number past the stored range is past every row (saturate, not refuse).
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    cursor
        .split_once(':')
        .and_then(|(a, b)| Some((number(a)?, number(b)?.min(i64::MAX as u64) as i64)))
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "cursor {cursor:?} is not valid: pass the next_cursor of the previous page"
            ))
        })
}

/// A job's state from its flags, as [`JOB_STATE_SQL`] derives it in SQL.
pub(super) fn derive_state(
    canceled: bool,
    failed: bool,
    completed: bool,
    started: bool,
) -> JobState {
    if canceled {
        JobState::Canceled
    } else if failed {
        JobState::Failed
    } else if completed {
        JobState::Completed
    } else if started {
        JobState::Running
    } else {
        JobState::Queued
    }
}

/// The first text after every text that begins with `prefix`, in byte order (UTF-8 byte order
/// is code point order): the end of a prefix's key range. `None` when nothing ends the range.
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The cache keys a listing covers, in byte order: from `start` (itself too when `inclusive`)
/// up to `end`, exclusive (none: to the last key).
pub(super) struct KeyRange<'a> {
    pub start: &'a str,
    pub inclusive: bool,
    pub end: Option<String>,
}

/// The keys that begin with `prefix`, after `after` if it is given.
pub(super) fn key_range<'a>(prefix: &'a str, after: Option<&'a str>) -> KeyRange<'a> {
    let (start, inclusive) = match after {
        Some(a) if a >= prefix => (a, false),
        _ => (prefix, true),
    };
    KeyRange {
        start,
        inclusive,
        end: prefix_end(prefix),
    }
}

/// A child's position among its parent's subtasks, from the last segment of its path.
pub(super) fn path_index(path: &str) -> Option<u32> {
    let body = path.strip_suffix('.')?;
    let segment = &body[body.rfind('.').map_or(0, |i| i + 1)..];
    u32::from_str_radix(segment, 16).ok()
}

/// The path segment of the `i`-th child: fixed width so that text order is tree order.
pub(super) fn path_segment(i: usize) -> String {
    format!("{i:08x}.")
}

/// SQL for the derived job state, matching [`derive_state`].
pub(super) const JOB_STATE_SQL: &str = "CASE WHEN canceled THEN 'canceled' WHEN failed THEN 'failed' \
    WHEN completed_at IS NOT NULL THEN 'completed' WHEN started_at IS NOT NULL THEN 'running' \
    ELSE 'queued' END";

/// A runner row as the API shows it; `identifiers` is the JSON the store wrote.
pub(super) fn runner_info(
    id: String,
    cluster: String,
    identifiers: &str,
    first_seen: i64,
    last_seen: i64,
) -> Result<tessera_api::RunnerInfo, StoreError> {
    let identifiers = serde_json::from_str(identifiers).map_err(|e| {
        StoreError::Internal(format!("runner {id} has unreadable identifiers: {e}"))
    })?;
    Ok(tessera_api::RunnerInfo {
        id,
        cluster,
        identifiers,
        first_seen: first_seen.max(0) as u64,
        last_seen: last_seen.max(0) as u64,
        deployed: false,
        host: None,
        concurrency: None,
        wasmtime: None,
        running: 0,
    })
}

/// The columns of a component row that [`component`] reads, in order.
pub(super) const COMPONENT_COLUMNS: &str =
    "digest, name, size, task_types, deployed_by, deployed_at, undeployed_at";

/// A component from its stored columns.
pub(super) fn component(
    digest: String,
    name: String,
    size: i64,
    task_types: &str,
    deployed_by: String,
    deployed_at: i64,
    undeployed_at: Option<i64>,
) -> Result<tessera_api::Component, StoreError> {
    let task_types = serde_json::from_str(task_types)
        .map_err(|e| StoreError::Corrupt(format!("component {digest}'s task types ({e})")))?;
    Ok(tessera_api::Component {
        digest,
        name,
        size: size.max(0) as u64,
        task_types,
        deployed_by,
        deployed_at: deployed_at.max(0) as u64,
        undeployed_at: undeployed_at.map(|t| t.max(0) as u64),
    })
}

/// The condition that keeps rows within reach, on `column` (a tenant number is ours, never a
/// client's text, so it is written into the statement).
pub(super) fn reach_sql(reach: super::Reach, column: &str) -> String {
    match reach {
        super::Reach::Tenant(t) => format!("{column} = {t}"),
        super::Reach::All => "TRUE".into(),
    }
}

/// How many running tasks of tenants within `reach` each runner holds, by the runner's name
/// (both dialects).
pub(super) fn running_by_runner_sql(reach: super::Reach) -> String {
    format!(
        "SELECT r.name, COUNT(*) FROM tasks t JOIN runner_names r ON r.id = t.lease_runner_ref \
         WHERE t.state = 'running' AND {} GROUP BY r.name",
        reach_sql(reach, "t.tenant_id")
    )
}

/// The SQL condition and order of [`super::driver::Which`] over the components table, with
/// its one text parameter (empty when unused).
pub(super) fn which_sql<'a>(which: &super::driver::Which<'a>) -> (&'static str, &'a str) {
    use super::driver::Which;
    match which {
        Which::Deployed => ("undeployed_at IS NULL", ""),
        Which::All => ("TRUE", ""),
        Which::Digest(d) => ("digest = $1", d),
        Which::Name(n) => ("name = $1", n),
    }
}

/// The columns [`key_record`] reads, in its order (`t` is the tenants table, left-joined).
pub(super) const KEY_COLUMNS: &str =
    "k.id, k.tenant_id, t.name, k.role, k.name, k.hash, k.created_at, k.revoked_at, t.quotas";

/// A key as stored.
#[allow(clippy::too_many_arguments)]
pub(super) fn key_record(
    id: String,
    tenant: Option<i64>,
    tenant_name: Option<String>,
    role: &str,
    name: String,
    hash: String,
    created_at: i64,
    revoked_at: Option<i64>,
    quotas: Option<&str>,
) -> Result<super::KeyRecord, StoreError> {
    let role = role
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("key {id}'s role ({e})")))?;
    let requests_per_second = match quotas {
        Some(q) => Some(
            self::tenant(String::new(), 1, 0, q)?
                .quotas
                .requests_per_second,
        ),
        None => None,
    };
    Ok(super::KeyRecord {
        requests_per_second,
        id,
        tenant,
        tenant_name,
        role,
        name,
        hash,
        created_at: created_at.max(0) as u64,
        revoked_at: revoked_at.map(|t| t.max(0) as u64),
    })
}

/// A tenant as stored, its quotas in effect (what its operator set over the defaults).
pub(super) fn tenant(
    name: String,
    weight: i64,
    created_at: i64,
    quotas: &str,
) -> Result<tessera_api::Tenant, StoreError> {
    let set: tessera_api::TenantUpdate = serde_json::from_str(quotas)
        .map_err(|e| StoreError::Corrupt(format!("tenant {name}'s quotas ({e})")))?;
    Ok(tessera_api::Tenant {
        weight: weight.clamp(1, u32::MAX.into()) as u32,
        created_at: created_at.max(0) as u64,
        quotas: super::decide::quotas(&set),
        usage: None,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_id_spelled_as_the_store_spells_it_has_bytes() {
        let id = new_id();
        let bytes = id_bytes(&id).expect("a new id");
        assert_eq!(uuid::Uuid::from_bytes(bytes).to_string(), id);
        for other in [
            id.to_uppercase(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            format!("{id} "),
            "not-an-id".into(),
            String::new(),
            "0".repeat(36),
        ] {
            assert_eq!(id_bytes(&other), None, "{other:?}");
        }
    }

    #[test]
    fn unknown_stored_text_is_an_error_not_a_guess() {
        assert!(matches!(state_of("exploded"), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            outcome_of("exploded"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(rank_level(9), Err(StoreError::Corrupt(_))));
        assert_eq!(state_of("computed").unwrap(), TaskState::Computed);
        assert_eq!(rank_level(level_rank(Level::Warn)).unwrap(), Level::Warn);
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    /// What [`ROW_OUTCOME_SQL`] makes of a stored code, evaluated by SQLite.
    fn row_outcome(code: i64) -> Result<SpanOutcome, StoreError> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let text: String = conn
            .query_row(
                &format!("SELECT {ROW_OUTCOME_SQL} FROM (SELECT ?1 AS span_outcome)"),
                [code],
                |r| r.get(0),
            )
            .unwrap();
        outcome_of(&text)
    }

    #[test]
    fn a_task_rows_outcome_code_reads_back_as_its_outcome() {
        use SpanOutcome::*;
        for o in [Running, Computed, Failed, Abandoned, Expired, Canceled] {
            assert_eq!(row_outcome(outcome_code(o)).unwrap(), o);
        }
        assert!(matches!(row_outcome(9), Err(StoreError::Corrupt(_))));
    }
}

#[cfg(test)]
mod data_tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("\u{10ffff}"), None);
        assert_eq!(prefix_end("b\u{10ffff}").as_deref(), Some("c"));
        assert_eq!(
            prefix_end("\u{d7ff}").as_deref(),
            Some("\u{e000}"),
            "skips surrogates"
        );
        let end = prefix_end("k").unwrap();
        assert!("k\u{10ffff}zz" < end.as_str() && "l" >= end.as_str());
    }

    #[test]
    fn a_listing_starts_at_its_prefix_or_after_the_last_key_seen() {
        let r = key_range("a/", None);
        assert_eq!(
            (r.start, r.inclusive, r.end.as_deref()),
            ("a/", true, Some("a0"))
        );
        let r = key_range("a/", Some("a/5"));
        assert_eq!((r.start, r.inclusive), ("a/5", false));
        let r = key_range("a/", Some("A"));
        assert_eq!(
            (r.start, r.inclusive),
            ("a/", true),
            "a cursor before the prefix"
        );
    }

    #[test]
    fn a_childs_index_is_the_last_segment_of_its_path() {
        let parent = path_segment(3);
        assert_eq!(
            path_index(&format!("{parent}{}", path_segment(41))),
            Some(41)
        );
        assert_eq!(path_index(&path_segment(0)), Some(0));
        assert_eq!(path_index(""), None);
    }
}
