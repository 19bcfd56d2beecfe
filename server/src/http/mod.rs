//! The HTTP/JSON API under `/v1`, its OpenAPI description and the token check.

pub mod auth;
pub mod budget;
mod components;
mod data;
pub mod error;
mod jobs;
mod runner;
pub mod serve;
mod telemetry;
mod tenants;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
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
    /// The server's token and the keys it read.
    pub keys: Arc<auth::Keys>,
    /// The port it listens on (a request to a server without keys must name it).
    pub port: u16,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// The largest task input accepted, in bytes as stored.
    pub max_input: usize,
    /// The largest deployed component accepted, in bytes.
    pub max_component: usize,
    /// The largest task output or cache value kept, in bytes (the store's limit).
    pub max_value: usize,
    /// Request-body bytes held at once.
    pub body_budget: budget::BodyBudget,
    /// The wasmtime embedded in the binary, for `/v1/health`.
    pub wasmtime: Option<String>,
}

/// Bytes the server stores or serves as they are (a component, an output, a cache value), for
/// the OpenAPI document; each route names its content type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawBytes(#[allow(dead_code)] Vec<u8>);

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
        tenants::whoami,
        tenants::list,
        tenants::create,
        tenants::update,
        tenants::keys,
        tenants::create_key,
        tenants::revoke_key,
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
            let names_one = path.contains("{id}") || path.contains("{name}") || path == "/v1/logs";
            let changes_state =
                path.ends_with("/cancel") || path.ends_with("/retry") || path == "/v1/logs";
            let posts = item.post.iter_mut().map(|op| (op, true));
            let gets = item.get.iter_mut().map(|op| (op, false));
            let deletes = item.delete.iter_mut().map(|op| (op, false));
            let patches = item.patch.iter_mut().map(|op| (op, true));
            for (op, post) in posts.chain(gets).chain(deletes).chain(patches) {
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
                    add(
                        "401",
                        "No key (and the server asks for one), or a key that is not valid",
                    );
                    add(
                        "403",
                        "The key's role may not do this (the message names the roles that may), \
                         or, on a server without keys, the request came from another site",
                    );
                    add("400", "The request is not valid; the message says why");
                    add("414", "The request target is longer than 16 KiB");
                    add("500", "The server failed; nothing was changed");
                }
                add("503", "The database is busy or unreachable; try again");
                if !public {
                    add(
                        "429",
                        "Past a quota of the key's tenant: requests per second (with \
                         Retry-After), queued tasks, component bytes; the message names it",
                    );
                }
                if names_one {
                    add(
                        "404",
                        "What the path names does not exist, or belongs to another tenant",
                    );
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
        max_component_bytes: state.max_component as u64,
        max_input_bytes: state.max_input as u64,
        wasmtime: state.wasmtime.clone(),
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

/// Longest request target (path and query) answered; longer ones get a JSON 414. It fits a
/// cache listing at the key limits (see the constant).
const MAX_URI: usize = tessera_api::limits::MAX_REQUEST_TARGET_BYTES;

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

/// `route` under `need`: callers whose role does not meet it get a 403.
fn need(need: auth::Need, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.route_layer(middleware::from_fn(move |request, next| {
        auth::require(need, request, next)
    }))
}

/// The API router.
pub fn router(state: AppState) -> Router {
    use auth::Need::{Admin, Anyone, Operator, Read, Runner, Submit};
    let public = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready));
    let deploy = post(components::deploy).layer(DefaultBodyLimit::max(state.max_component));
    let api = Router::new()
        .route("/v1/openapi.json", need(Anyone, get(openapi_json)))
        .route("/v1/whoami", need(Anyone, get(tenants::whoami)))
        .route(
            "/v1/tenants",
            need(Anyone, get(tenants::list)).merge(need(Operator, post(tenants::create))),
        )
        .route(
            "/v1/keys",
            need(Admin, get(tenants::keys).post(tenants::create_key)),
        )
        .route("/v1/tenants/{name}", need(Operator, patch(tenants::update)))
        .route("/v1/keys/{id}", need(Admin, delete(tenants::revoke_key)))
        .route(
            "/v1/jobs",
            need(Submit, post(jobs::submit)).merge(need(Read, get(jobs::list))),
        )
        .route(
            "/v1/jobs/{id}",
            need(Read, get(jobs::get)).merge(need(Admin, delete(jobs::delete))),
        )
        .route("/v1/jobs/{id}/tasks", need(Read, get(jobs::tasks)))
        .route("/v1/jobs/{id}/cancel", need(Submit, post(jobs::cancel)))
        .route("/v1/jobs/{id}/retry", need(Submit, post(jobs::retry)))
        .route("/v1/jobs/{id}/unserved", need(Read, get(jobs::unserved)))
        .route("/v1/runners", need(Read, get(runner::runners)))
        .route(
            "/v1/components",
            need(Admin, deploy).merge(need(Read, get(components::list))),
        )
        .route(
            "/v1/components/{id}",
            need(Anyone, get(components::bytes)).merge(need(Admin, delete(components::undeploy))),
        )
        .route(
            "/v1/components/{id}/info",
            need(Read, get(components::info)),
        )
        .route("/v1/jobs/{id}/logs", need(Read, get(telemetry::logs)))
        .route("/v1/jobs/{id}/spans", need(Read, get(telemetry::spans)))
        .route("/v1/tasks/{id}", need(Read, get(jobs::task)))
        .route(
            "/v1/tasks/{id}/dependencies",
            need(Anyone, get(data::dependencies)),
        )
        .route("/v1/jobs/{id}/output", need(Anyone, get(data::output)))
        .route("/v1/jobs/{id}/cache", need(Anyone, get(data::cache)))
        .route(
            "/v1/jobs/{id}/cache/value",
            need(Anyone, get(data::cache_value)),
        )
        .route("/v1/logs", need(Runner, post(telemetry::ingest)))
        .route("/v1/runner/claim", need(Runner, post(runner::claim)))
        .route("/v1/runner/report", need(Runner, post(runner::report)))
        .route("/v1/runner/extend", need(Runner, post(runner::extend)))
        .route("/v1/runner/outlook", need(Runner, post(runner::outlook)))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        // A body that trickles in is cut, not held forever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(60),
        ))
        // Inside the key check: a request without a key waits for nothing.
        .layer(middleware::from_fn_with_state(state.clone(), budget::hold))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    crate::console::router()
        .merge(public)
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::loopback_only,
        ))
        .layer(middleware::from_fn(limit_uri))
        .layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            ),
        )
        .with_state(state)
}
