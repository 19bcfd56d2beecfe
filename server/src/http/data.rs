//! Data between tasks: task outputs, dependencies and the job cache (reads; writes arrive
//! with reports).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tessera_api::{CacheKey, CachePage, CacheQuery, DependencyList, ErrorBody, OutputQuery};

use super::AppState;
use super::auth::{Caller, Data, check_reader};
use super::error::{ApiError, ApiPath, ApiQuery};

/// Bytes for a client: their type unknown to the server, never sniffed by a browser.
fn octets(bytes: Vec<u8>, task: Option<&str>) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response();
    if let Some(value) = task.and_then(|t| HeaderValue::from_str(t).ok()) {
        response.headers_mut().insert("x-tessera-task", value);
    }
    response
}

/// A task's output as it returned it (the job's root task's unless `task` names another).
/// 204 when the task computed without an output.
#[utoipa::path(get, path = "/v1/jobs/{id}/output", tag = "data",
    params(("id" = String, Path, description = "The job"), OutputQuery,
        ("tessera-lease" = Option<String>, Header, description = super::auth::LEASE_PARAM)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = super::RawBytes,
            headers(("x-tessera-task" = String, description = "The task whose output it is"))),
        (status = 204, description = "The task computed without an output"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The task has not computed")))]
pub async fn output(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiPath(job): ApiPath<String>,
    ApiQuery(query): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    check_reader(&state, &caller, &headers, Data::Job(&job)).await?;
    let found = state.store.output(&job, query.task.as_deref()).await?;
    Ok(match found.value {
        Some(bytes) => octets(bytes, Some(&found.task_id)),
        None => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&found.task_id) {
                r.headers_mut().insert("x-tessera-task", v);
            }
            r
        }
    })
}

/// The subtasks a task depends on, with their positions among their parent's subtasks (the
/// handles its parent got) and their outputs' sizes.
#[utoipa::path(get, path = "/v1/tasks/{id}/dependencies", tag = "data",
    params(("id" = String, Path, description = "The task"),
        ("tessera-lease" = Option<String>, Header, description = super::auth::LEASE_PARAM)),
    responses((status = 200, body = DependencyList), (status = 404, body = ErrorBody)))]
pub async fn dependencies(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiPath(task): ApiPath<String>,
) -> Result<Json<DependencyList>, ApiError> {
    check_reader(&state, &caller, &headers, Data::Task(&task)).await?;
    Ok(Json(state.store.dependencies(&task).await?))
}

/// A page of a job's cache keys, in byte order, with their values' sizes.
#[utoipa::path(get, path = "/v1/jobs/{id}/cache", tag = "data",
    params(("id" = String, Path, description = "The job"), CacheQuery,
        ("tessera-lease" = Option<String>, Header, description = super::auth::LEASE_PARAM)),
    responses((status = 200, body = CachePage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn cache(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiPath(job): ApiPath<String>,
    ApiQuery(query): ApiQuery<CacheQuery>,
) -> Result<Json<CachePage>, ApiError> {
    check_reader(&state, &caller, &headers, Data::Job(&job)).await?;
    Ok(Json(state.store.cache(&job, &query).await?))
}

/// One value of a job's cache, as the task stored it.
#[utoipa::path(get, path = "/v1/jobs/{id}/cache/value", tag = "data",
    params(("id" = String, Path, description = "The job"), CacheKey,
        ("tessera-lease" = Option<String>, Header, description = super::auth::LEASE_PARAM)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = super::RawBytes),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such job, or no value under the key")))]
pub async fn cache_value(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiPath(job): ApiPath<String>,
    ApiQuery(query): ApiQuery<CacheKey>,
) -> Result<Response, ApiError> {
    check_reader(&state, &caller, &headers, Data::Job(&job)).await?;
    tessera_api::limits::check_cache_key(&query.key).map_err(ApiError::bad_request)?;
    Ok(octets(
        state.store.cache_get(&job, &query.key, query.as_of).await?,
        None,
    ))
}
