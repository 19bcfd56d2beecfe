//! The filtered read queries, written once for both dialects: SQL text with `?` placeholders and
//! its parameters. Each driver binds them its own way ([`Query::numbered`] for PostgreSQL).

use tessera_api::{JobFilter, LogQuery, SpanQuery, TaskQuery};

use super::encode::{JOB_STATE_SQL, ROW_OUTCOME_SQL, TASK_COLUMNS, level_rank, split_cursor};
use super::{Reach, StoreError};

/// A parameter of a [`Query`].
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A text value.
    Text(String),
    /// An integer value.
    Int(i64),
    /// A job or task id (text on PostgreSQL, its UUID's bytes on SQLite).
    Id(String),
}

fn int(v: u64) -> Param {
    Param::Int(v.min(i64::MAX as u64) as i64)
}

/// One statement: text with `?` placeholders, and the values they stand for in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The statement, with `?` for each parameter.
    pub sql: String,
    /// The parameters, in placeholder order.
    pub params: Vec<Param>,
}

impl Query {
    fn new(sql: String, params: Vec<Param>) -> Query {
        Query { sql, params }
    }

    /// Appends `clause` and the parameters its placeholders stand for.
    fn and(&mut self, clause: &str, params: impl IntoIterator<Item = Param>) {
        self.sql.push_str(clause);
        self.params.extend(params);
    }

    /// The statement with PostgreSQL's numbered placeholders (`$1`, `$2`, …).
    pub fn numbered(&self) -> String {
        let mut out = String::with_capacity(self.sql.len() + 16);
        let mut n = 0;
        for c in self.sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Ids of the jobs `filter` selects, newest first; `contains` is the dialect's test that
/// `name` contains the parameter (`instr(name, ?) > 0`, `strpos(name, ?) > 0`).
pub fn job_ids(reach: Reach, filter: &JobFilter, limit: u32, contains: &str) -> Query {
    let mut q = Query::new("SELECT id FROM jobs WHERE 1 = 1".into(), vec![]);
    if let Reach::Tenant(tenant) = reach {
        q.and(" AND tenant_id = ?", [Param::Int(tenant)]);
    }
    if let Some(state) = filter.state {
        let clause = format!(" AND {JOB_STATE_SQL} = ?");
        q.and(&clause, [Param::Text(state.as_str().into())]);
    }
    if let Some(name) = &filter.name {
        q.and(&format!(" AND {contains}"), [Param::Text(name.clone())]);
    }
    if let Some(since) = filter.since {
        q.and(" AND submitted_at >= ?", [int(since)]);
    }
    if let Some(until) = filter.until {
        q.and(" AND submitted_at < ?", [int(until)]);
    }
    if let Some(cursor) = filter.cursor.as_ref().filter(|c| !c.is_empty()) {
        q.and(" AND id < ?", [Param::Id(cursor.clone())]);
    }
    q.and(" ORDER BY id DESC LIMIT ?", [int(limit.into())]);
    q
}

/// A job's tasks in tree order ([`TASK_COLUMNS`]), after the cursor's path.
pub fn tasks(job: &str, query: &TaskQuery, limit: u32) -> Query {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ?");
    let mut q = Query::new(sql, vec![Param::Id(job.into())]);
    if let Some(parent) = &query.parent {
        q.and(" AND parent_id = ?", [Param::Id(parent.clone())]);
    }
    if let Some(state) = query.state {
        q.and(" AND state = ?", [Param::Text(state.as_str().into())]);
    }
    if let Some(cursor) = query.cursor.as_ref().filter(|c| !c.is_empty()) {
        q.and(" AND path > ?", [Param::Text(cursor.clone())]);
    }
    q.and(" ORDER BY path LIMIT ?", [int(limit.into())]);
    q
}

/// A job's log lines in time order: id, time, level, message, task_id, job_id, runner_id,
/// attempt, fields.
pub fn logs(job: &str, query: &LogQuery, limit: u32) -> Result<Query, StoreError> {
    let sql = "SELECT id, time, level, message, task_id, job_id, runner_id, attempt, fields \
               FROM logs WHERE job_id = ?";
    let mut q = Query::new(sql.into(), vec![Param::Id(job.into())]);
    if let Some(task) = &query.task {
        q.and(" AND task_id = ?", [Param::Id(task.clone())]);
    }
    if let Some(level) = query.level {
        q.and(" AND level >= ?", [Param::Int(level_rank(level))]);
    }
    if let Some(cursor) = query.cursor.as_ref().filter(|c| !c.is_empty()) {
        let (time, id) = split_cursor(cursor)?;
        let clause = " AND (time > ? OR (time = ? AND id > ?))";
        q.and(clause, [int(time), int(time), Param::Int(id)]);
    }
    q.and(" ORDER BY time, id LIMIT ?", [int(limit.into())]);
    Ok(q)
}

/// A job's spans that task rows keep (each task's latest attempt), in (start, key) order:
/// key, name, task_id, job_id, runner_id, attempt, start, end, outcome, error, component.
pub fn spans_on_tasks(job: &str, query: &SpanQuery, limit: u32) -> Result<Query, StoreError> {
    let sql = format!(
        r#"SELECT span_key, COALESCE(display, name), id, job_id,
           (SELECT name FROM runner_names WHERE runner_names.id = tasks.span_runner_ref),
           attempt, started_at, span_end, {ROW_OUTCOME_SQL}, span_error,
           (SELECT digest FROM digests WHERE digests.id = tasks.span_component_id)
           FROM tasks WHERE job_id = ? AND span_key IS NOT NULL"#
    );
    let mut q = Query::new(sql, vec![Param::Id(job.into())]);
    if let Some(task) = &query.task {
        q.and(" AND id = ?", [Param::Id(task.clone())]);
    }
    page_after(&mut q, query, "started_at", "span_key")?;
    q.and(
        " ORDER BY started_at, span_key LIMIT ?",
        [int(limit.into())],
    );
    Ok(q)
}

/// A job's spans of attempts that were not their task's latest, in `spans`, in (start, key)
/// order, with the columns of [`spans_on_tasks`].
pub fn spans_archived(job: &str, query: &SpanQuery, limit: u32) -> Result<Query, StoreError> {
    let sql = r#"SELECT id, name, task_id, job_id,
                 (SELECT name FROM runner_names WHERE runner_names.id = spans.runner_ref),
                 attempt, start, "end", outcome, error,
                 (SELECT digest FROM digests WHERE digests.id = spans.component_id)
                 FROM spans WHERE job_id = ?"#;
    let mut q = Query::new(sql.into(), vec![Param::Id(job.into())]);
    if let Some(task) = &query.task {
        q.and(" AND task_id = ?", [Param::Id(task.clone())]);
    }
    page_after(&mut q, query, "start", "id")?;
    q.and(" ORDER BY start, id LIMIT ?", [int(limit.into())]);
    Ok(q)
}

/// Only spans after the query's `START:KEY` cursor. The `start >= ?` term lets the index seek
/// to the cursor instead of walking the job's earlier spans.
fn page_after(q: &mut Query, query: &SpanQuery, start: &str, key: &str) -> Result<(), StoreError> {
    if let Some(cursor) = query.cursor.as_ref().filter(|c| !c.is_empty()) {
        let (at, after) = split_cursor(cursor)?;
        let clause = format!(" AND {start} >= ? AND ({start} > ? OR {key} > ?)");
        q.and(&clause, [int(at), int(at), Param::Int(after)]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let filter = JobFilter {
            name: Some("x".into()),
            since: Some(u64::MAX),
            ..JobFilter::default()
        };
        let q = job_ids(Reach::Tenant(7), &filter, 10, "strpos(name, ?) > 0");
        assert_eq!(
            q.numbered(),
            "SELECT id FROM jobs WHERE 1 = 1 AND tenant_id = $1 AND strpos(name, $2) > 0 \
             AND submitted_at >= $3 ORDER BY id DESC LIMIT $4"
        );
        assert_eq!(
            q.params,
            [
                Param::Int(7),
                Param::Text("x".into()),
                Param::Int(i64::MAX),
                Param::Int(10)
            ]
        );
        let every = job_ids(Reach::All, &filter, 10, "strpos(name, ?) > 0");
        assert!(!every.sql.contains("tenant_id"), "{}", every.sql);
    }

    #[test]
    fn a_bad_cursor_is_a_clear_error() {
        let query = LogQuery {
            cursor: Some("nope".into()),
            ..LogQuery::default()
        };
        let e = logs("j", &query, 5).unwrap_err();
        assert!(e.to_string().contains("next_cursor"), "{e}");
    }
}
