//! Job endpoints: submit, list, get, tasks, cancel, retry, delete.

use axum::extract::State;
use axum::{Extension, Json};
use tessera_api::{ErrorBody, Job, JobFilter, JobPage, SubmitJob, Task, TaskPage, TaskQuery};

use super::AppState;
use super::auth::{Caller, check_owner};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::now_unix_nano;
use crate::store::{Owned, Reach};

/// [`SubmitJob`] as it arrives: the input kept as text until its size is checked, so that a
/// huge input costs its bytes, not a tree of JSON values many times larger.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    name: String,
    root: RootBody,
    #[serde(default)]
    cluster: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    identifier: tessera_api::TaskIdentifier,
    #[serde(default)]
    input: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, deserialize_with = "tessera_api::num::whole")]
    max_retries: u32,
    #[serde(default)]
    display: Option<String>,
}

/// Submits a job: its root task is queued.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJob,
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<Json<Job>, ApiError> {
    let input = match body.root.input {
        None => serde_json::Value::Null,
        Some(raw) => {
            // Measured as stored, as the host measures a subtask's (never by the text sent),
            // while it streams by: an input far past the limit costs no memory to refuse.
            let bad =
                |e: serde_json::Error| ApiError::bad_request(format!("the root task's input: {e}"));
            let len = tessera_api::limits::stored_len_of(raw.get()).map_err(bad)?;
            if let Err(why) = tessera_api::limits::check_stored_len(len, state.max_input) {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "input_too_large",
                    format!("the root task: {why} (this server's --max-input-kib)"),
                ));
            }
            serde_json::from_str(raw.get()).map_err(bad)?
        }
    };
    let job = SubmitJob {
        name: body.name,
        root: tessera_api::RootTask {
            identifier: body.root.identifier,
            input,
            max_retries: body.root.max_retries,
            display: body.root.display,
        },
        cluster: body.cluster,
    };
    // The store wakes the claims of the job's cluster once it is committed.
    let job = state
        .store
        .submit(caller.home(), &job, now_unix_nano())
        .await?;
    Ok(Json(job))
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobFilter),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "An operator named a tenant that does not exist")))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(filter): ApiQuery<JobFilter>,
) -> Result<Json<JobPage>, ApiError> {
    let reach = match (&filter.tenant, caller.tenant) {
        (None, _) => caller.reach(),
        // Another tenant's jobs are none of a tenant's business: an empty page, as for a
        // tenant that does not exist.
        (Some(name), Some(own)) if Some(name) == caller.tenant_name.as_ref() => Reach::Tenant(own),
        (Some(_), Some(_)) => {
            return Ok(Json(JobPage {
                jobs: Vec::new(),
                next_cursor: None,
            }));
        }
        (Some(name), None) => match state.store.tenant_named(name).await? {
            Some((id, _)) => Reach::Tenant(id),
            None => {
                return Err(crate::store::StoreError::NotFound {
                    what: "tenant",
                    id: name.clone(),
                }
                .into());
            }
        },
    };
    Ok(Json(state.store.jobs(reach, &filter).await?))
}

/// How long a watch may wait, and how long it lets a burst of changes settle.
const MAX_WATCH: std::time::Duration = std::time::Duration::from_secs(60);
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Asking to be told when a job changes.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// With `If-None-Match`: wait up to this long (ms, at most 60000) for the job to differ
    /// from that version before answering 304.
    #[serde(default, deserialize_with = "tessera_api::num::opt_whole")]
    #[param(minimum = 0, maximum = 60000)]
    wait_ms: Option<u64>,
}

/// A job's version: changes whenever anything its answer shows changes.
fn etag(job: &Job) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(job)
        .expect("jobs serialize")
        .hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// One job: state, task counts, progress, times. Its `ETag` names this version; with
/// `If-None-Match` and `wait_ms` the request waits until the job differs (a long poll, as the
/// console uses to stay live), else answers 304.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path), Watch),
    responses((status = 200, body = Job), (status = 304, description = "Unchanged since If-None-Match"),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(watch): ApiQuery<Watch>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let wait = std::time::Duration::from_millis(watch.wait_ms.unwrap_or(0));
    if wait > MAX_WATCH {
        return Err(ApiError::bad_request(
            "wait_ms must be at most 60000 (a minute); ask again to wait longer",
        ));
    }
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    // Watched across the whole wait, so that no revocation slips between two rounds.
    let revoked = state.keys.until_revoked(&*state.store, &caller);
    tokio::pin!(revoked);
    loop {
        let mut woken = state.wake.watch();
        let job = state.store.job(&id).await?;
        let tag = etag(&job);
        let with_tag = |status: StatusCode, body: Option<Job>| {
            let mut r = match body {
                Some(job) => (status, Json(job)).into_response(),
                None => status.into_response(),
            };
            if let Ok(v) = header::HeaderValue::from_str(&tag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        };
        if known.as_deref() != Some(tag.as_str()) {
            return Ok(with_tag(StatusCode::OK, Some(job)));
        }
        if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            return Ok(with_tag(StatusCode::NOT_MODIFIED, None));
        }
        tokio::select! {
            _ = woken.changed() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
            revoked = &mut revoked => return Err(revoked),
        }
    }
}

/// A job's tasks, depth-first from the root, one page (or one parent's children).
#[utoipa::path(get, path = "/v1/jobs/{id}/tasks", tag = "jobs", params(("id" = String, Path), TaskQuery),
    responses((status = 200, body = TaskPage), (status = 404, body = ErrorBody)))]
pub async fn tasks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> Result<Json<TaskPage>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    Ok(Json(state.store.tasks(&id, &query).await?))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Task>, ApiError> {
    check_owner(&state, &caller, Owned::Task(&id)).await?;
    Ok(Json(state.store.task(&id).await?))
}

/// Cancels a job: queued tasks are canceled; running attempts stop at their next lease extension.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    let job = state.store.cancel(&id, now_unix_nano()).await?;
    Ok(Json(job))
}

/// Deletes a job that is over (completed, failed or canceled, with no attempt still running)
/// and everything of it: tasks, logs, spans, progress, outputs and cache. Answers the job as it
/// was.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job is not over, or attempts of it still run")))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    let job = state.store.delete_job(&id).await?;
    Ok(Json(job))
}

/// Requeues a job's failed and canceled tasks with fresh retries.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    let job = state.store.retry(&id, now_unix_nano()).await?;
    Ok(Json(job))
}

/// A job's ready queued tasks that no runner seen in the last five minutes could run (wrong
/// version, a cluster nobody serves, a task type no component exports), by kind, with why.
#[utoipa::path(get, path = "/v1/jobs/{id}/unserved", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = tessera_api::UnservedList), (status = 404, body = ErrorBody)))]
pub async fn unserved(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<tessera_api::UnservedList>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    Ok(Json(state.store.unserved(&id, now_unix_nano()).await?))
}
