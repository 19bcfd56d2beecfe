//! The HTTP/JSON API under `/v1`, its OpenAPI description and the token check.

pub mod budget;
mod components;
mod data;
pub mod error;
mod jobs;
mod runner;
pub mod serve;
mod telemetry;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;
use utoipa::OpenApi;

use crate::store::Store;
use crate::wake::Wake;
use error::ApiError;
use tessera_api::ErrorBody;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// Wakes long-polling claims.
    pub wake: Wake,
    /// Turns true when the server shuts down (ends long polls).
    pub shutdown: watch::Receiver<bool>,
    /// The bearer token every request must carry, if set.
    pub token: Option<Arc<str>>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// The largest root task input accepted, in bytes.
    pub max_input: usize,
    /// The largest deployed component accepted, in bytes.
    pub max_component: usize,
    /// The largest task output or cache value kept, in bytes (the store's limit).
    pub max_value: usize,
    /// Request-body bytes held at once.
    pub body_budget: budget::BodyBudget,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Workflow orchestration for sandboxed WebAssembly tasks."
    ),
    paths(
        health,
        ready,
        jobs::submit,
        jobs::list,
        jobs::get,
        jobs::tasks,
        jobs::task,
        jobs::cancel,
        jobs::retry,
        jobs::delete,
        jobs::unserved,
        runner::claim,
        runner::report,
        runner::extend,
        runner::outlook,
        runner::runners,
        components::deploy,
        components::list,
        components::info,
        components::bytes,
        components::undeploy,
        telemetry::ingest,
        telemetry::logs,
        telemetry::spans,
        data::output,
        data::dependencies,
        data::cache,
        data::cache_value,
    ),
    components(schemas(tessera_api::ErrorBody, tessera_api::Report, tessera_api::TaskReport)),
    modifiers(&Conventions)
)]
struct ApiDoc;

/// What every route shares, stated once: the bearer scheme, and the errors any route can
/// answer (a missing token, an oversized or non-JSON body, a busy or broken database).
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{Ref, ResponseBuilder};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        // Types read with deny_unknown_fields whose derive does not say so (a checked
        // identifier, the variants of a tagged enum).
        if let Some(components) = doc.components.as_mut() {
            use utoipa::openapi::RefOr;
            use utoipa::openapi::schema::{AdditionalProperties, Schema};
            let closed = |schema: &mut RefOr<Schema>| {
                if let RefOr::T(Schema::Object(o)) = schema {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            };
            for name in ["TaskIdentifier", "Report"] {
                match components.schemas.get_mut(name) {
                    Some(RefOr::T(Schema::OneOf(one))) => one.items.iter_mut().for_each(closed),
                    Some(schema) => closed(schema),
                    None => {}
                }
            }
        }
        let error = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let names_one = path.contains("{id}") || path == "/v1/logs";
            let changes_state =
                path.ends_with("/cancel") || path.ends_with("/retry") || path == "/v1/logs";
            let posts = item.post.iter_mut().map(|op| (op, true));
            let gets = item.get.iter_mut().map(|op| (op, false));
            let deletes = item.delete.iter_mut().map(|op| (op, false));
            for (op, post) in posts.chain(gets).chain(deletes) {
                // The public routes say so with an empty security requirement.
                let public = op.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                });
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, why: &str| {
                    responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(why).into());
                };
                if !public {
                    add("401", "No bearer token, or the wrong one");
                    add("400", "The request is not valid; the message says why");
                    add("414", "The request target is longer than 8 KiB");
                    add("500", "The server failed; nothing was changed");
                }
                add("503", "The database is busy or unreachable; try again");
                if names_one {
                    add("404", "The job or task named does not exist");
                }
                if changes_state {
                    add(
                        "409",
                        "The job's state does not allow it; the message says why",
                    );
                }
                if post {
                    add("413", "The body is larger than the server accepts");
                    add("415", "The body is not sent as application/json");
                }
            }
        }
    }
}

/// The OpenAPI description of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Answers 200 while the server runs, with the limits clients must respect; needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "meta", security(()),
    responses((status = 200, body = tessera_api::Health)))]
async fn health(State(state): State<AppState>) -> Json<tessera_api::Health> {
    Json(tessera_api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        max_body_bytes: state.max_body as u64,
        max_value_bytes: state.max_value as u64,
    })
}

/// Answers 200 when the server can reach its database, 503 otherwise; needs no token.
#[utoipa::path(get, path = "/v1/ready", tag = "meta", security(()),
    responses((status = 200, body = Object), (status = 503, body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(serde_json::json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the database does not answer: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database did not answer within 5 s",
        )),
    }
}

/// Longest request target (path and query) answered; longer ones get a JSON 414.
const MAX_URI: usize = 8 * 1024;

async fn limit_uri(request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if len > MAX_URI {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {len} bytes; at most {MAX_URI} are accepted (send large \
                 data in a body)"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

async fn openapi_json() -> impl IntoResponse {
    Json(openapi())
}

/// The credentials of an `Authorization: Bearer …` header (the scheme in any case).
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares in time that depends on the lengths only, not on where the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = bearer(&request);
        if !given.is_some_and(|g| same_secret(g, token)) {
            let (message, challenge) = if given.is_some() {
                (
                    "the bearer token is wrong; use the server's --token (TESSERA_TOKEN)",
                    r#"Bearer realm="tessera", error="invalid_token""#,
                )
            } else {
                (
                    "this server requires a bearer token: set TESSERA_TOKEN (Authorization: Bearer …)",
                    r#"Bearer realm="tessera""#,
                )
            };
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            return response;
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "there is no {} {}; the API is described at /v1/openapi.json",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; the API is described at /v1/openapi.json",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready));
    let api = Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{id}/tasks", get(jobs::tasks))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/unserved", get(jobs::unserved))
        .route("/v1/runners", get(runner::runners))
        .route(
            "/v1/components",
            post(components::deploy)
                .layer(DefaultBodyLimit::max(state.max_component))
                .get(components::list),
        )
        .route(
            "/v1/components/{id}",
            get(components::bytes).delete(components::undeploy),
        )
        .route("/v1/components/{id}/info", get(components::info))
        .route("/v1/jobs/{id}/logs", get(telemetry::logs))
        .route("/v1/jobs/{id}/spans", get(telemetry::spans))
        .route("/v1/tasks/{id}", get(jobs::task))
        .route("/v1/tasks/{id}/dependencies", get(data::dependencies))
        .route("/v1/jobs/{id}/output", get(data::output))
        .route("/v1/jobs/{id}/cache", get(data::cache))
        .route("/v1/jobs/{id}/cache/value", get(data::cache_value))
        .route("/v1/logs", post(telemetry::ingest))
        .route("/v1/runner/claim", post(runner::claim))
        .route("/v1/runner/report", post(runner::report))
        .route("/v1/runner/extend", post(runner::extend))
        .route("/v1/runner/outlook", post(runner::outlook))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        // A body that trickles in is cut, not held forever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(60),
        ))
        // Inside the token check: a request without the token waits for nothing.
        .layer(middleware::from_fn_with_state(state.clone(), budget::hold))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    crate::console::router()
        .merge(public)
        .merge(api)
        .layer(middleware::from_fn(limit_uri))
        .layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            ),
        )
        .with_state(state)
}
