//! Logs and spans: batched ingestion from runners, paginated queries by job.

use axum::Json;
use axum::extract::State;
use tessera_api::{ErrorBody, LogBatch, LogPage, LogQuery, SpanPage, SpanQuery};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Stores a batch of log lines; a line naming an unknown task refuses the whole batch.
#[utoipa::path(post, path = "/v1/logs", tag = "telemetry", request_body = LogBatch,
    responses((status = 200, body = Object, description = "`{\"stored\": N}`"), (status = 400, body = ErrorBody)))]
pub async fn ingest(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<LogBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stored = state.store.add_logs(batch.logs).await?;
    Ok(Json(serde_json::json!({ "stored": stored })))
}

/// A job's log lines in time order, optionally one task's or from a level up.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "telemetry", params(("id" = String, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    Ok(Json(state.store.logs(&id, &query).await?))
}

/// A job's spans (one per task attempt) in start order.
#[utoipa::path(get, path = "/v1/jobs/{id}/spans", tag = "telemetry", params(("id" = String, Path), SpanQuery),
    responses((status = 200, body = SpanPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn spans(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<SpanQuery>,
) -> Result<Json<SpanPage>, ApiError> {
    Ok(Json(state.store.spans(&id, &query).await?))
}
