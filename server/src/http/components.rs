//! Deployed components: upload (checked, content-addressed), list, show, download by digest,
//! undeploy.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use tessera_api::component::is_digest;
use tessera_api::{
    Component, ComponentList, ComponentQuery, DeployQuery, Deployed, ErrorBody, TaskIdentifier,
};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiPath, ApiQuery};
use crate::now_unix_nano;
use crate::store::check_name;

/// Most task types one component may export.
const MAX_TASK_TYPES: usize = 1000;

/// The task types a deploy names (`A@v1.0,B@v0.2`).
fn task_types(list: &str) -> Result<Vec<TaskIdentifier>, ApiError> {
    let mut types: Vec<TaskIdentifier> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, version) = item.split_once('@').ok_or_else(|| {
            ApiError::bad_request(format!(
                "task type {:?} is not NAME@vMAJOR.MINOR",
                tessera_api::limits::elide(item, 100)
            ))
        })?;
        let id = TaskIdentifier::parse(name, version)
            .map_err(|e| ApiError::bad_request(format!("task type {item:?}: {e}")))?;
        if !types.contains(&id) {
            types.push(id);
        }
    }
    if types.is_empty() {
        return Err(ApiError::bad_request(
            "task_types is empty: name the task types the component exports (tessera deploy \
             reads them from the component)",
        ));
    }
    if types.len() > MAX_TASK_TYPES {
        return Err(ApiError::bad_request(format!(
            "a component may export at most {MAX_TASK_TYPES} task types"
        )));
    }
    Ok(types)
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "component_too_large",
        format!(
            "the component is larger than this server's limit of {} MiB (tessera server \
             --max-component-mib)",
            max >> 20
        ),
    )
}

/// Reads a body of at most `max` bytes.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut stream = body.into_data_stream();
    while let Some(data) = stream.next().await {
        let data = data.map_err(|e| {
            ApiError::bad_request(format!("the upload was cut off before its end: {e}"))
        })?;
        if bytes.len().saturating_add(data.len()) > max {
            return Err(too_large(max));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes)
}

/// Deploys a component: the body is its bytes.
#[utoipa::path(post, path = "/v1/components", tag = "components", params(DeployQuery),
    request_body(content = super::RawBytes, content_type = "application/wasm",
        description = "The component's bytes"),
    responses(
        (status = 201, body = Deployed, description = "Deployed"),
        (status = 200, body = Deployed, description = "These bytes were deployed already"),
        (status = 400, body = ErrorBody, description = "Not a task component this server runs, or its digest does not match"),
        (status = 409, body = ErrorBody, description = "The deployed components would export too many task types"),
        (status = 413, body = ErrorBody, description = "Larger than --max-component-mib")))]
pub async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<DeployQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    check_name("component name", &query.name).map_err(ApiError::from)?;
    if !is_digest(&query.digest) {
        return Err(ApiError::bad_request(
            "digest must be sha256: and 64 lowercase hex digits (the SHA-256 of the bytes)",
        ));
    }
    let types = task_types(&query.task_types)?;
    let by = query
        .by
        .as_deref()
        .map(|b| tessera_api::limits::cut(b.trim(), 200))
        .filter(|b| !b.is_empty() && !b.chars().any(char::is_control))
        .unwrap_or_else(|| "unknown".into());
    let bytes = read_body(&headers, body, state.max_component).await?;
    let (digest, checked) = tokio::task::spawn_blocking(move || {
        let digest = crate::component::digest(&bytes);
        let checked = crate::component::check(&bytes);
        (digest, checked.map(|()| bytes))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("checking the component failed: {e}"),
        )
    })?;
    if digest != query.digest {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "digest_mismatch",
            format!(
                "the bytes received have digest {digest}, not the {} given: the upload was \
                 damaged or the digest is wrong; deploy again",
                query.digest
            ),
        ));
    }
    let bytes = checked.map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_component",
            format!(
                "{} is not a task component this server runs: {why}",
                query.name
            ),
        )
    })?;
    let component = Component {
        digest,
        name: query.name,
        size: bytes.len() as u64,
        task_types: types,
        deployed_by: by,
        deployed_at: now_unix_nano(),
        undeployed_at: None,
    };
    let deployed = state
        .store
        .deploy(caller.home(), &component, bytes.into())
        .await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)))
}

/// Deployed components, most recently deployed first.
#[utoipa::path(get, path = "/v1/components", tag = "components", params(ComponentQuery),
    responses((status = 200, body = ComponentList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ComponentQuery>,
) -> Result<Json<ComponentList>, ApiError> {
    Ok(Json(
        state.store.components(caller.reach(), query.all).await?,
    ))
}

/// One component, by digest or by name (the latest deployed under it).
#[utoipa::path(get, path = "/v1/components/{id}/info", tag = "components",
    params(("id" = String, Path, description = "A digest (sha256:…) or a name")),
    responses((status = 200, body = Component), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(reference): ApiPath<String>,
) -> Result<Json<Component>, ApiError> {
    Ok(Json(
        state.store.component(caller.reach(), &reference).await?,
    ))
}

/// A component's bytes, by digest (what fleet runners fetch).
#[utoipa::path(get, path = "/v1/components/{id}", tag = "components",
    params(("id" = String, Path, pattern = r"^sha256:[0-9a-f]{64}$",
        description = "The component's digest (sha256:…)"),
        ("tessera-lease" = Option<String>, Header, description = super::auth::LEASE_PARAM)),
    responses(
        (status = 200, content_type = "application/wasm", body = super::RawBytes),
        (status = 404, body = ErrorBody)))]
pub async fn bytes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    ApiPath(digest): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !is_digest(&digest) {
        return Err(ApiError::bad_request(
            "fetch a component by its digest (sha256: and 64 hex digits); \
             GET /v1/components/{name}/info finds it by name",
        ));
    }
    // A fleet runner fetches only the component of a task it holds.
    super::auth::check_reader(
        &state,
        &caller,
        &headers,
        super::auth::Data::Component(&digest),
    )
    .await?;
    let bytes = state.store.component_bytes(caller.reach(), &digest).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Undeploys a component by digest, or every component deployed under a name. Jobs that
/// pinned it keep running it.
#[utoipa::path(delete, path = "/v1/components/{id}", tag = "components",
    params(("id" = String, Path, description = "A digest (sha256:…) or a name")),
    responses(
        (status = 200, body = ComponentList, description = "The components undeployed"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not deployed now")))]
pub async fn undeploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(reference): ApiPath<String>,
) -> Result<Json<ComponentList>, ApiError> {
    Ok(Json(
        state
            .store
            .undeploy(caller.reach(), &reference, now_unix_nano())
            .await?,
    ))
}
