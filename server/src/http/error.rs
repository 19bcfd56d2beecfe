//! Error answers (always a JSON [`ErrorBody`]) and JSON extractors that produce them.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tessera_api::ErrorBody;

use crate::store::StoreError;

/// An error answer: a status, a code and a message a person can act on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: the key presented is not (or no longer) valid.
    pub fn revoked() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this key was revoked while the request waited (or is mistyped, or of another \
             server): set TESSERA_TOKEN to a key your operator created (tessera keys create)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a refused bearer token is answered with its challenge.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(
                    r#"Bearer realm="tessera", error="invalid_token""#,
                ),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // A missing key is not a missing job: runners read it as "no value".
            StoreError::NotFound {
                what: "cache key", ..
            } => ApiError::new(StatusCode::NOT_FOUND, "no_such_key", e.to_string()),
            StoreError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Quota(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", m)
            }
            StoreError::Revoked => ApiError::revoked(),
            StoreError::Contention(_) | StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{e}; nothing was changed, try again shortly"),
            ),
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Internal(_) => {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("{e}; nothing was changed (the server log has details)"),
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code, hint) = match &r {
            JsonRejection::JsonSyntaxError(_) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "the body is not valid JSON",
            ),
            JsonRejection::JsonDataError(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body does not have the expected shape (see /v1/openapi.json)",
            ),
            JsonRejection::MissingJsonContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than the server accepts (see the server's --max-body-mib option)",
            ),
            JsonRejection::BytesRejection(_) => (
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the body could not be read (it arrived too slowly, or the connection broke)",
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            ),
        };
        ApiError::new(status, code, format!("{hint}: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("the query string is not valid: {}", r.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!(
                "the path is not valid (percent-encode it as UTF-8): {}",
                tessera_api::limits::cut(&r.body_text(), 300)
            ),
        )
    }
}

/// `axum::extract::Path` whose rejections are JSON [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `axum::Json` whose rejections are JSON [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|m| {
                m.strip_prefix("application/")
                    .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
            });
        if !json {
            // axum's own refusal of the content type (nothing is read).
            let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
            return Ok(ApiJson(value));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(JsonRejection::from)?;
        // Every body of this API is a JSON object: serde would also read a struct from an
        // array of its fields in order, which the document does not allow.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the body must be a JSON object ({…}); the API is described at /v1/openapi.json",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Query` whose rejections are JSON [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}
