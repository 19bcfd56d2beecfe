//! The runner protocol: claim (long-poll), report (+ claim), extend, outlook.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::{Extension, Json};
use tessera_api::{
    ClaimRequest, ClaimResponse, ClaimedTask, ErrorBody, ExtendRequest, ExtendResponse, Outlook,
    OutlookRequest, ReportRequest, ReportResponse,
};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::now_unix_nano;
use crate::store::check_name;
use tessera_api::limits;

/// Longest long-poll a claim may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a woken claim lets further wake-ups gather before it claims.
const DEBOUNCE: Duration = Duration::from_millis(2);

fn check_runner(runner_id: &str) -> Result<(), ApiError> {
    if runner_id.is_empty() || runner_id.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "runner_id must be 1 to 200 characters (a UUID is typical)",
        ));
    }
    Ok(())
}

fn check_claim(c: &ClaimRequest) -> Result<(), ApiError> {
    check_runner(&c.runner_id)?;
    check_name("cluster", &c.cluster).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if c.identifiers.len() > limits::MAX_IDENTIFIERS {
        return Err(ApiError::bad_request(format!(
            "a runner may serve at most {} task identifiers",
            limits::MAX_IDENTIFIERS
        )));
    }
    if let Some(host) = &c.host
        && (host.chars().count() > 200 || host.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "host must be at most 200 characters, none of them control characters",
        ));
    }
    if c.wasmtime
        .as_deref()
        .is_some_and(|v| !tessera_api::is_version_text(v))
    {
        return Err(ApiError::bad_request(
            "wasmtime must be a version: 1 to 50 digits, letters, '.', '+' or '-'",
        ));
    }
    if c.concurrency
        .is_some_and(|n| n == 0 || n > limits::MAX_CONCURRENCY)
    {
        return Err(ApiError::bad_request(format!(
            "concurrency must be between 1 and {}",
            limits::MAX_CONCURRENCY
        )));
    }
    if c.max == 0 || c.max > limits::MAX_CLAIM {
        return Err(ApiError::bad_request(format!(
            "max must be between 1 and {}",
            limits::MAX_CLAIM
        )));
    }
    if c.wait_ms > MAX_WAIT.as_millis() as u64 {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {} (a minute); claim again to wait longer",
            MAX_WAIT.as_millis()
        )));
    }
    Ok(())
}

/// Claims, waiting until work appears or the wait runs out (never a fixed-interval poll:
/// submissions, reports, retries and expired leases wake the wait).
async fn claim_waiting(
    state: &AppState,
    caller: &Caller,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedTask>, ApiError> {
    let reach = caller.claims(request.deployed);
    let mut request = request.clone();
    request.runner_id = caller.runner_id(&request.runner_id);
    let request = &request;
    // A runner that serves nothing can never be handed anything: no reason to wait.
    let wait = if request.identifiers.is_empty() && !request.deployed {
        Duration::ZERO
    } else {
        Duration::from_millis(request.wait_ms).min(MAX_WAIT)
    };
    let deadline = Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    // Watched across the whole wait, so that no revocation slips between two rounds.
    let revoked = state.keys.until_revoked(&*state.store, caller);
    tokio::pin!(revoked);
    loop {
        let mut woken = state.wake.subscribe(&match reach {
            crate::store::Reach::Tenant(t) => crate::store::scope::key(t, &request.cluster),
            crate::store::Reach::All => crate::store::scope::fleet_key(&request.cluster),
        });
        // The store checks the key again in the transaction that leases: a key revoked while
        // the claim waited is handed nothing.
        let tasks = state
            .store
            .claim(reach, caller.key.as_deref(), request, now_unix_nano())
            .await?;
        let now = Instant::now();
        if !tasks.is_empty() || now >= deadline || *shutdown.borrow() {
            return Ok(tasks);
        }
        if request.return_when_idle {
            let outlook = OutlookRequest {
                cluster: request.cluster.clone(),
                identifiers: request.identifiers.clone(),
                deployed: request.deployed,
            };
            if !state.store.outlook(reach, &outlook).await?.has_work() {
                return Ok(tasks);
            }
        }
        // A task waiting out a retry backoff becomes claimable without any event.
        let mut until = deadline;
        if let Some(at) = state.store.next_retry_at().await? {
            let wall = now_unix_nano();
            let delay = Duration::from_nanos(at.saturating_sub(wall)).max(Duration::from_millis(5));
            until = until.min(now + delay);
        }
        tokio::select! {
            // A burst of wake-ups (many reports at once) costs one claim, not one each.
            _ = woken.changed() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = shutdown.changed() => {}
            revoked = &mut revoked => return Err(revoked),
        }
    }
}

/// Claims up to `max` tasks, long-polling up to `wait_ms`.
#[utoipa::path(post, path = "/v1/runner/claim", tag = "runner", request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse), (status = 400, body = ErrorBody)))]
pub async fn claim(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    check_claim(&request)?;
    let tasks = claim_waiting(&state, &caller, &request).await?;
    Ok(Json(ClaimResponse { tasks }))
}

/// Reports attempts (computed, failed, abandoned, canceled) and optionally claims more.
///
/// Each report is accepted or refused on its own: a report on a lease that expired or was
/// taken over is refused (fencing), and answered with `accepted: false`. If every report was
/// refused the answer is 409.
#[utoipa::path(post, path = "/v1/runner/report", tag = "runner", request_body = ReportRequest,
    responses((status = 200, body = ReportResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    budget: Option<axum::Extension<super::budget::BodyPermit>>,
    ApiJson(request): ApiJson<ReportRequest>,
) -> Result<Json<ReportResponse>, ApiError> {
    check_runner(&request.runner_id)?;
    if let Some(c) = &request.claim {
        check_claim(c)?;
    }
    let ReportRequest {
        runner_id,
        reports,
        claim,
    } = request;
    // The store wakes what the reports made claimable, once they are committed.
    let results = state
        .store
        .report(
            caller.claims(true),
            &caller.runner_id(&runner_id),
            &reports,
            now_unix_nano(),
        )
        .await?;
    // The reports are recorded: free their memory and their share of the body budget before
    // the claim riding on them waits for work.
    drop(reports);
    if let Some(axum::Extension(permit)) = budget {
        permit.release();
    }
    if !results.is_empty() && results.iter().all(|r| !r.accepted) && claim.is_none() {
        let why = results[0].error.clone().unwrap_or_default();
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "lease_lost",
            why,
        ));
    }
    // The reports are committed: whatever happens to the claim, the answer says so.
    let tasks = match &claim {
        Some(c) => match claim_waiting(&state, &caller, c).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!("the claim riding on a report failed (the reports stand): {e:?}");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Ok(Json(ReportResponse { results, tasks }))
}

/// Extends the leases a runner holds; tells it which it lost and which jobs were canceled.
#[utoipa::path(post, path = "/v1/runner/extend", tag = "runner", request_body = ExtendRequest,
    responses((status = 200, body = ExtendResponse), (status = 400, body = ErrorBody)))]
pub async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<ExtendRequest>,
) -> Result<Json<ExtendResponse>, ApiError> {
    check_runner(&request.runner_id)?;
    let runner = caller.runner_id(&request.runner_id);
    let leases = state
        .store
        .extend(
            caller.claims(true),
            &runner,
            &request.leases,
            now_unix_nano(),
        )
        .await?;
    Ok(Json(ExtendResponse { leases }))
}

/// Whether anything a runner could serve is queued, or anything in its cluster is running.
#[utoipa::path(post, path = "/v1/runner/outlook", tag = "runner", request_body = OutlookRequest,
    responses((status = 200, body = Outlook), (status = 400, body = ErrorBody)))]
pub async fn outlook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<OutlookRequest>,
) -> Result<Json<Outlook>, ApiError> {
    check_name("cluster", &request.cluster).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reach = caller.claims(request.deployed);
    Ok(Json(state.store.outlook(reach, &request).await?))
}

/// The runners seen in the last five minutes (each recorded by its claims, at most every 10 s),
/// with what they serve; most recent first.
#[utoipa::path(get, path = "/v1/runners", tag = "runner",
    responses((status = 200, body = tessera_api::RunnerList)))]
pub async fn runners(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<tessera_api::RunnerList>, ApiError> {
    Ok(Json(
        state.store.runners(caller.reach(), now_unix_nano()).await?,
    ))
}
