//! The HTTP client of the server's API, used by the runner and the CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    ClaimRequest, ClaimResponse, Component, ComponentList, ComponentQuery, DeployQuery, Deployed,
    ErrorBody, ExtendRequest, ExtendResponse, Job, JobFilter, JobPage, LogBatch, LogPage, LogQuery,
    Outlook, OutlookRequest, ReportRequest, ReportResponse, SpanPage, SpanQuery, SubmitJob, Task,
    TaskPage, TaskQuery,
};

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error(
        "could not reach the Tessera server at {url} ({reason}); start one with `tessera server` \
         or point TESSERA_SERVER at it"
    )]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// The transport error and its causes.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code from the body.
        code: String,
        /// The message from the body.
        message: String,
    },
    /// The answer could not be read.
    #[error("the server's answer to {what} could not be read: {reason}")]
    Decode {
        /// Which request.
        what: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code the server gave, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The innermost causes of a transport error, which say what actually went wrong
/// (`Connection refused`, a timeout, …).
fn causes(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    parts.last().cloned().unwrap_or_else(|| e.to_string())
}

/// The error an unsuccessful answer carries (`{code, message}`, or its text cut short).
fn api_error(what: &str, status: u16, bytes: &[u8]) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (
            crate::limits::cut(&body.code, 100),
            crate::limits::cut(&body.message, crate::limits::MAX_REASON_BYTES),
        ),
        Err(_) => (
            "http_error".to_string(),
            format!(
                "{what} failed: {}",
                crate::limits::elide(&String::from_utf8_lossy(bytes), 500)
            ),
        ),
    };
    ClientError::Api {
        status,
        code,
        message,
    }
}

/// A client of a Tessera server, or of several sharing one database (it fails over to the
/// next when one cannot be reached).
#[derive(Debug, Clone)]
pub struct Client {
    bases: Arc<[String]>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    /// The lease this client's requests are made under ([`crate::LEASE_HEADER`]).
    lease: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8420`), with an optional token.
    /// Several servers of one database may be given, separated by commas.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        let bases: Arc<[String]> = base
            .into()
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        let bases = if bases.is_empty() {
            Arc::from([crate::DEFAULT_SERVER.to_string()])
        } else {
            bases
        };
        // Idle connections are dropped before the server's 10 s header timeout closes them:
        // a request sent on a connection the server is closing fails ("connection closed
        // before message completed").
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .expect("building the HTTP client");
        Client {
            bases,
            current: Arc::new(AtomicUsize::new(0)),
            token,
            lease: None,
            http,
        }
    }

    /// The same client, naming the lease on `task` in every request: a runner reads an
    /// attempt's job data, and fetches its component, under the attempt's lease.
    pub fn with_lease(&self, task: &str, lease: u64) -> Self {
        Client {
            lease: Some(format!("{task}:{lease}")),
            ..self.clone()
        }
    }

    /// A client configured from `TESSERA_SERVER` and `TESSERA_TOKEN`.
    pub fn from_env() -> Self {
        let base = std::env::var("TESSERA_SERVER").unwrap_or_else(|_| crate::DEFAULT_SERVER.into());
        let token = std::env::var("TESSERA_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Client::new(base, token)
    }

    /// The base URL of the server in use.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends a request, failing over to the next server when one cannot be reached.
    async fn respond(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let index = (first + attempt) % self.bases.len();
            let base = &self.bases[index];
            let mut request = match &self.token {
                Some(t) => build(base).bearer_auth(t),
                None => build(base),
            };
            if let Some(lease) = &self.lease {
                request = request.header(crate::LEASE_HEADER, lease);
            }
            match request.send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                // Nothing reached that server: the next one may take the request.
                Err(e) if e.is_connect() && attempt + 1 < self.bases.len() => attempt += 1,
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: base.clone(),
                        reason: causes(&e),
                    });
                }
            }
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base().to_string(),
            reason: causes(e),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.respond(build).await?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(api_error(what, status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ClientError> {
        self.send(path, |base| {
            self.http.get(format!("{base}{path}")).query(query)
        })
        .await
    }

    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        self.send(path, |base| {
            let request = self.http.post(format!("{base}{path}")).json(body);
            match timeout {
                Some(t) => request.timeout(t),
                None => request,
            }
        })
        .await
    }

    /// Who this client's key acts as.
    pub async fn whoami(&self) -> Result<crate::Identity, ClientError> {
        self.get("/v1/whoami", &()).await
    }

    /// The tenants this client's key reaches.
    pub async fn tenants(&self) -> Result<crate::TenantList, ClientError> {
        self.get("/v1/tenants", &()).await
    }

    /// Creates a tenant (an operator's key).
    pub async fn create_tenant(
        &self,
        tenant: &crate::NewTenant,
    ) -> Result<crate::Tenant, ClientError> {
        self.post("/v1/tenants", tenant, None).await
    }

    /// Changes a tenant's weight or quotas (an operator's key).
    pub async fn update_tenant(
        &self,
        name: &str,
        update: &crate::TenantUpdate,
    ) -> Result<crate::Tenant, ClientError> {
        let path = format!("/v1/tenants/{}", path_segment(name));
        self.send(&path, |base| {
            self.http.patch(format!("{base}{path}")).json(update)
        })
        .await
    }

    /// The keys this client's key may manage.
    pub async fn keys(&self) -> Result<crate::KeyList, ClientError> {
        self.get("/v1/keys", &()).await
    }

    /// Creates a key; its secret is in the answer, and nowhere else ever.
    pub async fn create_key(&self, key: &crate::NewKey) -> Result<crate::CreatedKey, ClientError> {
        self.post("/v1/keys", key, None).await
    }

    /// Revokes a key.
    pub async fn revoke_key(&self, id: &str) -> Result<crate::ApiKey, ClientError> {
        let path = format!("/v1/keys/{}", path_segment(id));
        self.send(&path, |base| self.http.delete(format!("{base}{path}")))
            .await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<crate::Health, ClientError> {
        self.get("/v1/health", &()).await
    }

    /// Submits a job.
    pub async fn submit(&self, job: &SubmitJob) -> Result<Job, ClientError> {
        self.post("/v1/jobs", job, None).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.get(&format!("/v1/jobs/{id}"), &()).await
    }

    /// A page of jobs, newest first.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, ClientError> {
        self.get("/v1/jobs", filter).await
    }

    /// A page of a job's tasks, depth-first.
    pub async fn tasks(&self, job: &str, query: &TaskQuery) -> Result<TaskPage, ClientError> {
        self.get(&format!("/v1/jobs/{job}/tasks"), query).await
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Task, ClientError> {
        self.get(&format!("/v1/tasks/{id}"), &()).await
    }

    /// A job's ready queued tasks that no runner seen lately could run, with why.
    pub async fn unserved(&self, job: &str) -> Result<crate::UnservedList, ClientError> {
        self.get(&format!("/v1/jobs/{job}/unserved"), &()).await
    }

    /// The runners seen in the last five minutes.
    pub async fn runners(&self) -> Result<crate::RunnerList, ClientError> {
        self.get("/v1/runners", &()).await
    }

    /// Cancels a job.
    pub async fn cancel(&self, job: &str) -> Result<Job, ClientError> {
        self.post(
            &format!("/v1/jobs/{job}/cancel"),
            &serde_json::json!({}),
            None,
        )
        .await
    }

    /// `DELETE /v1/jobs/{id}`: deletes a job that is over, with everything of it.
    pub async fn delete_job(&self, job: &str) -> Result<Job, ClientError> {
        let path = format!("/v1/jobs/{}", path_segment(job));
        self.send(&path, |base| self.http.delete(format!("{base}{path}")))
            .await
    }

    /// Requeues a job's failed and canceled tasks.
    pub async fn retry(&self, job: &str) -> Result<Job, ClientError> {
        self.post(
            &format!("/v1/jobs/{job}/retry"),
            &serde_json::json!({}),
            None,
        )
        .await
    }

    /// A page of a job's logs in time order.
    pub async fn logs(&self, job: &str, query: &LogQuery) -> Result<LogPage, ClientError> {
        self.get(&format!("/v1/jobs/{job}/logs"), query).await
    }

    /// A page of a job's spans.
    pub async fn spans(&self, job: &str, query: &SpanQuery) -> Result<SpanPage, ClientError> {
        self.get(&format!("/v1/jobs/{job}/spans"), query).await
    }

    /// Claims tasks, waiting up to `wait_ms` for work.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(30);
        self.post("/v1/runner/claim", request, Some(timeout)).await
    }

    /// Reports attempts (and optionally claims the next in the same round trip).
    pub async fn report(&self, request: &ReportRequest) -> Result<ReportResponse, ClientError> {
        let wait = request.claim.as_ref().map_or(0, |c| c.wait_ms);
        let timeout = Duration::from_millis(wait) + Duration::from_secs(30);
        self.post("/v1/runner/report", request, Some(timeout)).await
    }

    /// Extends leases.
    pub async fn extend(&self, request: &ExtendRequest) -> Result<ExtendResponse, ClientError> {
        self.post("/v1/runner/extend", request, None).await
    }

    /// Whether there is work a runner could still do.
    pub async fn outlook(&self, request: &OutlookRequest) -> Result<Outlook, ClientError> {
        self.post("/v1/runner/outlook", request, None).await
    }

    /// Sends a batch of log lines.
    pub async fn send_logs(&self, batch: &LogBatch) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/logs", batch, None).await
    }

    /// Deploys a component's bytes (`meta.digest` must be their digest).
    pub async fn deploy(
        &self,
        meta: &DeployQuery,
        bytes: Vec<u8>,
    ) -> Result<Deployed, ClientError> {
        let bytes = bytes::Bytes::from(bytes);
        self.send("/v1/components", |base| {
            self.http
                .post(format!("{base}/v1/components"))
                .query(meta)
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes.clone())
                .timeout(Duration::from_secs(600))
        })
        .await
    }

    /// Deployed components, most recent first (`all`: undeployed ones too).
    pub async fn components(&self, query: &ComponentQuery) -> Result<ComponentList, ClientError> {
        self.get("/v1/components", query).await
    }

    /// One component, by digest or by name (the latest deployed under it).
    pub async fn component(&self, reference: &str) -> Result<Component, ClientError> {
        self.get(
            &format!("/v1/components/{}/info", path_segment(reference)),
            &(),
        )
        .await
    }

    /// Undeploys a component by digest, or every component deployed under a name.
    pub async fn undeploy(&self, reference: &str) -> Result<ComponentList, ClientError> {
        let path = format!("/v1/components/{}", path_segment(reference));
        self.send(&path, |base| self.http.delete(format!("{base}{path}")))
            .await
    }

    /// A deployed component's bytes, refused past `max_bytes` (their digest is the caller's
    /// to check).
    pub async fn component_bytes(
        &self,
        digest: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/components/{}", path_segment(digest));
        let (bytes, _) = self
            .bytes(&path, &[], max_bytes, Duration::from_secs(600), "component")
            .await?;
        Ok(bytes.unwrap_or_default())
    }

    /// A task's output (the job's root task's unless `task` names another), refused past
    /// `max_bytes`: the task, and its output if it returned one.
    pub async fn output(
        &self,
        job: &str,
        task: Option<&str>,
        max_bytes: u64,
    ) -> Result<TaskOutput, ClientError> {
        let path = format!("/v1/jobs/{}/output", path_segment(job));
        let query: Vec<(&str, &str)> = task.map(|t| ("task", t)).into_iter().collect();
        let (value, headers) = self
            .bytes(&path, &query, max_bytes, Duration::from_secs(60), "output")
            .await?;
        let task_id = headers
            .get("x-tessera-task")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| task.map(str::to_string))
            .unwrap_or_default();
        Ok(TaskOutput { task_id, value })
    }

    /// The subtasks a task depends on.
    pub async fn dependencies(&self, task: &str) -> Result<crate::DependencyList, ClientError> {
        let path = format!("/v1/tasks/{}/dependencies", path_segment(task));
        self.get(&path, &()).await
    }

    /// A page of a job's cache keys.
    pub async fn cache(
        &self,
        job: &str,
        query: &crate::CacheQuery,
    ) -> Result<crate::CachePage, ClientError> {
        let path = format!("/v1/jobs/{}/cache", path_segment(job));
        self.get(&path, query).await
    }

    /// A job's cache value under `key` (the latest, or as of cache version `as_of`), refused
    /// past `max_bytes`; `None` if there is none.
    pub async fn cache_value(
        &self,
        job: &str,
        key: &str,
        max_bytes: u64,
        as_of: Option<u64>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let path = format!("/v1/jobs/{}/cache/value", path_segment(job));
        let version = as_of.map(|v| v.to_string());
        let mut query = vec![("key", key)];
        if let Some(v) = &version {
            query.push(("as_of", v));
        }
        match self
            .bytes(&path, &query, max_bytes, Duration::from_secs(60), "value")
            .await
        {
            Ok((bytes, _)) => Ok(bytes),
            Err(e) if e.status() == Some(404) && e.code() == Some("no_such_key") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes from a GET, refused past `max_bytes` before they are all held; `None` for 204.
    async fn bytes(
        &self,
        path: &str,
        query: &[(&str, &str)],
        max_bytes: u64,
        timeout: Duration,
        what: &str,
    ) -> Result<(Option<Vec<u8>>, reqwest::header::HeaderMap), ClientError> {
        let mut response = self
            .respond(|base| {
                self.http
                    .get(format!("{base}{path}"))
                    .query(query)
                    .timeout(timeout)
            })
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok((None, headers));
        }
        let too_large = |size: u64| ClientError::Decode {
            what: path.to_string(),
            reason: format!("the {what} is {size} bytes, more than the {max_bytes} taken here"),
        };
        if status.is_success()
            && let Some(size) = response.content_length()
            && size > max_bytes
        {
            return Err(too_large(size));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            bytes.extend_from_slice(&chunk);
            if status.is_success() && bytes.len() as u64 > max_bytes {
                return Err(too_large(bytes.len() as u64));
            }
            if !status.is_success() && bytes.len() > 64 << 10 {
                break;
            }
        }
        if !status.is_success() {
            return Err(api_error(path, status.as_u16(), &bytes));
        }
        Ok((Some(bytes), headers))
    }
}

/// A task's output as [`Client::output`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutput {
    /// The task whose output it is.
    pub task_id: String,
    /// Its output; `None` if it computed without one.
    pub value: Option<Vec<u8>>,
}

/// `s` made safe as one path segment (percent-encodes what is not unreserved).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
