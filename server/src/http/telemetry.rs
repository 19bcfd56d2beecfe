//! Logs and spans: batched ingestion from runners, paginated queries by job.

use axum::extract::State;
use axum::{Extension, Json};
use tessera_api::{ErrorBody, LogBatch, LogPage, LogQuery, SpanPage, SpanQuery};

use super::AppState;
use super::auth::{Caller, check_owner};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::store::Owned;

/// Stores a batch of log lines; a line naming an unknown task refuses the whole batch.
#[utoipa::path(post, path = "/v1/logs", tag = "telemetry", request_body = LogBatch,
    responses((status = 200, body = Object, description = "`{\"stored\": N}`"), (status = 400, body = ErrorBody)))]
pub async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(batch): ApiJson<LogBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut logs = batch.logs;
    // Lines are the runner's as its key names it: a runner with another key cannot write
    // into attempts it did not run by choosing the same id.
    for line in &mut logs {
        line.runner_id = caller.runner_id(&line.runner_id);
    }
    let stored = state.store.add_logs(logs).await?;
    Ok(Json(serde_json::json!({ "stored": stored })))
}

/// A job's log lines in time order, optionally one task's or from a level up.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "telemetry", params(("id" = String, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    Ok(Json(state.store.logs(&id, &query).await?))
}

/// A job's spans (one per task attempt) in start order.
#[utoipa::path(get, path = "/v1/jobs/{id}/spans", tag = "telemetry", params(("id" = String, Path), SpanQuery),
    responses((status = 200, body = SpanPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn spans(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<SpanQuery>,
) -> Result<Json<SpanPage>, ApiError> {
    check_owner(&state, &caller, Owned::Job(&id)).await?;
    Ok(Json(state.store.spans(&id, &query).await?))
}
