//! Who a request acts for, and whether it may.
//!
//! A request presents a key (`Authorization: Bearer tsk_…`), the server's own `--token` (the
//! operator's), or nothing. Nothing is accepted only while the server has no token and no key:
//! then the request acts as the operator of the `default` tenant, as a server that never heard
//! of tenants did — and, so that a web page cannot use that, a request whose `Host` or
//! `Origin` is not the server's own is refused. Each route needs a role ([`Need`]); what a
//! caller reaches is its key's tenant, or every tenant for an operator or a fleet runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tessera_api::Role;

use super::AppState;
use super::error::ApiError;
use crate::store::{DEFAULT_TENANT, KeyRecord, Reach, Store, StoreError, TenantId};

/// How long a key read from the database, or the knowledge that keys exist, is trusted before
/// it is read again: a key revoked through another server stops working within this long (at
/// once through this one).
const KEY_TTL: Duration = Duration::from_secs(2);

/// How often a waiting request (a long-polling claim, a job watch) looks at its key again, and
/// how old what it reads may be: a key revoked through another server ends the wait within
/// the sum of the two (at once through this one).
const WAIT_RECHECK: Duration = Duration::from_millis(500);
const WAIT_KEY_AGE: Duration = Duration::from_secs(1);

/// The prefix of every key.
pub const KEY_PREFIX: &str = "tsk_";

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What it may do.
    pub role: Role,
    /// Its tenant; `None`: every tenant (an operator, a fleet runner).
    pub tenant: Option<TenantId>,
    /// Its tenant's name.
    pub tenant_name: Option<String>,
    /// Its key's id; `None` for the server's token and for a server without keys.
    pub key: Option<String>,
    /// Requests per second its key may make (its tenant's quota); `None`: no limit.
    pub requests_per_second: Option<u32>,
}

impl Caller {
    /// The operator, as a server without keys (or its own token) lets anyone act.
    pub fn operator() -> Caller {
        Caller {
            role: Role::Operator,
            tenant: None,
            tenant_name: None,
            key: None,
            requests_per_second: None,
        }
    }

    /// The rows it may see.
    pub fn reach(&self) -> Reach {
        self.tenant.map_or(Reach::All, Reach::Tenant)
    }

    /// The tenant its jobs and deployments belong to: its own, or `default` for the operator.
    pub fn home(&self) -> TenantId {
        self.tenant.unwrap_or(DEFAULT_TENANT)
    }

    /// Whose tasks it claims as a runner: its tenant's; a fleet runner (and the operator
    /// running `--deployed`) every tenant's deployed components; the operator running files,
    /// the `default` tenant's.
    pub fn claims(&self, deployed: bool) -> Reach {
        match self.tenant {
            Some(t) => Reach::Tenant(t),
            None if deployed => Reach::All,
            None => Reach::Tenant(DEFAULT_TENANT),
        }
    }

    /// The runner id a lease is bound to: the id the runner chose, behind its key's id, so
    /// that a runner with another key cannot pass for it by choosing the same id.
    pub fn runner_id(&self, chosen: &str) -> String {
        match &self.key {
            Some(key) => format!("{key}/{chosen}"),
            None => chosen.to_string(),
        }
    }

    /// Whether a row of `tenant` is within reach.
    pub fn reaches(&self, tenant: TenantId) -> bool {
        self.reach().allows(tenant)
    }

    /// Whether it is a fleet runner: a runner key of no tenant. It claims every tenant's
    /// tasks, but reads job data and components only under a lease it holds.
    pub fn is_fleet(&self) -> bool {
        self.role == Role::Runner && self.tenant.is_none() && self.key.is_some()
    }
}

/// What a route needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone with a valid key (reading what an attempt reads is one: a job's cache,
    /// outputs, dependencies, component bytes).
    Anyone,
    /// Reading jobs, tasks, logs, spans, components, runners.
    Read,
    /// Submitting, canceling, retrying.
    Submit,
    /// Managing a tenant: deleting jobs, deploying, keys.
    Admin,
    /// The runner protocol and log lines.
    Runner,
    /// Tenants.
    Operator,
}

impl Need {
    /// Whether `role` may.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Need::Anyone => true,
            Need::Read => matches!(role, Operator | Admin | Submit | Read),
            Need::Submit => matches!(role, Operator | Admin | Submit),
            Need::Admin => matches!(role, Operator | Admin),
            Need::Runner => matches!(role, Operator | Admin | Runner),
            Need::Operator => matches!(role, Operator),
        }
    }

    /// The roles it allows, for a refusal's message.
    fn roles(self) -> String {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.allows(*r))
            .map(Role::as_str)
            .collect();
        names.join(", ")
    }
}

/// A new key's parts: its id, the whole secret to hand out once, and the hash to keep.
pub struct NewSecret {
    /// The public id.
    pub id: String,
    /// `tsk_ID_SECRET`, shown once.
    pub key: String,
    /// The hex SHA-256 of the secret part.
    pub hash: String,
}

/// Makes a key: a 64-bit id and a 256-bit secret from a cryptographically secure generator
/// (rand's thread generator: ChaCha12 seeded and reseeded by the operating system).
pub fn new_secret() -> NewSecret {
    let id = hex(&rand::random::<[u8; 8]>());
    let secret = hex(&rand::random::<[u8; 32]>());
    NewSecret {
        key: format!("{KEY_PREFIX}{id}_{secret}"),
        hash: hash(&secret),
        id,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A presented key's id and secret, if it has a key's shape.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

/// Compares in time that depends on the lengths only, not on where the first difference is.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The server's knowledge of keys: its own token, and keys read from the store, kept for
/// [`KEY_TTL`].
pub struct Keys {
    token: Option<Arc<str>>,
    read: Mutex<HashMap<String, (Instant, Option<KeyRecord>)>>,
    required: Mutex<Option<(Instant, bool)>>,
    /// Each key's request allowance: tokens left, and when they were counted.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    /// Moves whenever this server revokes a key: waiting requests look at their keys again.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Keys {
    /// Keys with the server's own token, if it has one.
    pub fn new(token: Option<Arc<str>>) -> Keys {
        Keys {
            token,
            read: Mutex::new(HashMap::new()),
            required: Mutex::new(None),
            buckets: Mutex::new(HashMap::new()),
            revocations: tokio::sync::watch::channel(0).0,
        }
    }

    /// Whether requests must present a token or a key: the server has a token, or the store
    /// has ever held a key. Revoking every key, even across restarts, never opens the server
    /// again; the way back in is `tessera server --token T`.
    pub async fn required(&self, store: &dyn Store) -> Result<bool, StoreError> {
        if self.token.is_some() {
            return Ok(true);
        }
        if let Some((at, required)) = *self.required.lock().unwrap()
            && (required || at.elapsed() < KEY_TTL)
        {
            return Ok(required);
        }
        let required = store.keys_created().await? > 0;
        *self.required.lock().unwrap() = Some((Instant::now(), required));
        Ok(required)
    }

    /// Forgets what was read of a key (it was just created here).
    pub fn forget(&self, id: &str) {
        self.read.lock().unwrap().remove(id);
        let mut required = self.required.lock().unwrap();
        if required.is_some_and(|(_, r)| !r) {
            *required = None;
        }
    }

    /// Forgets a key this server just revoked, and wakes the requests waiting with it so that
    /// they end at once.
    pub fn revoked(&self, id: &str) {
        self.forget(id);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves only when the key `caller` presented stops being valid (revoked here, or, read
    /// again every [`WAIT_RECHECK`], revoked through another server); never for a caller
    /// without a key. A waiting request selects on it and answers 401 when it resolves. It
    /// listens for this server's revocations from the moment it is called, not first polled.
    pub fn until_revoked<'a>(
        &'a self,
        store: &'a dyn Store,
        caller: &'a Caller,
    ) -> impl std::future::Future<Output = ApiError> + Send + 'a {
        let revocations = self.revocations.subscribe();
        self.watch_key(store, caller.key.as_deref(), revocations)
    }

    async fn watch_key(
        &self,
        store: &dyn Store,
        key: Option<&str>,
        mut revocations: tokio::sync::watch::Receiver<u64>,
    ) -> ApiError {
        let Some(id) = key else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = revocations.changed() => {}
                _ = tokio::time::sleep(WAIT_RECHECK) => {}
            }
            match self.record_aged(store, id, WAIT_KEY_AGE).await {
                Ok(Some(record)) if record.revoked_at.is_none() => {}
                Ok(_) => return ApiError::revoked(),
                // An unreachable database says nothing about the key: keep waiting.
                Err(e) => tracing::debug!("could not look at a waiting request's key: {e}"),
            }
        }
    }

    async fn record(&self, store: &dyn Store, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.record_aged(store, id, KEY_TTL).await
    }

    /// A key as read from the store at most `max_age` ago.
    async fn record_aged(
        &self,
        store: &dyn Store,
        id: &str,
        max_age: Duration,
    ) -> Result<Option<KeyRecord>, StoreError> {
        if let Some((at, record)) = self.read.lock().unwrap().get(id)
            && at.elapsed() < max_age
        {
            return Ok(record.clone());
        }
        let record = store.key(id).await?;
        let mut read = self.read.lock().unwrap();
        if read.len() >= 10_000 {
            read.retain(|_, (at, _)| at.elapsed() < KEY_TTL);
        }
        read.insert(id.to_string(), (Instant::now(), record.clone()));
        Ok(record)
    }

    /// Who presents `credentials`; `None` if nobody (a wrong token, an unknown or revoked
    /// key).
    pub async fn caller(
        &self,
        store: &dyn Store,
        credentials: &str,
    ) -> Result<Option<Caller>, StoreError> {
        if let Some(token) = &self.token
            && same_secret(credentials, token)
        {
            return Ok(Some(Caller::operator()));
        }
        let Some((id, secret)) = split_key(credentials) else {
            return Ok(None);
        };
        let Some(record) = self.record(store, id).await? else {
            return Ok(None);
        };
        if record.revoked_at.is_some() || !same_secret(&hash(secret), &record.hash) {
            return Ok(None);
        }
        Ok(Some(Caller {
            role: record.role,
            tenant: record.tenant,
            tenant_name: record.tenant_name,
            key: Some(record.id),
            requests_per_second: record.requests_per_second,
        }))
    }

    /// Takes one request from a key's allowance of `per_second` (a token bucket holding a
    /// second's worth); `Err` with the seconds to wait when it is empty.
    pub fn take(&self, key: &str, per_second: u32) -> Result<(), u64> {
        let rate = f64::from(per_second.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= 10_000 && !buckets.contains_key(key) {
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < rate);
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
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

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Whether a `Host` header names this loopback server: a loopback address or `localhost`,
/// on the port it listens on.
fn own_host(host: &str, port: u16) -> bool {
    let (name, given_port) = match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(']') || host.starts_with('[') => {
            (name, p.parse::<u16>().ok())
        }
        _ => (host, Some(80)),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback && given_port == Some(port)
}

/// Refuses what a web page could send to a server without keys: a `Host` that is not the
/// server's (DNS rebinding) or an `Origin` of another site (a cross-site request).
fn foreign(request: &Request, port: u16) -> Option<String> {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !own_host(host, port) {
            return Some(format!(
                "this server has no keys, so it answers only requests addressed to it on \
                 loopback (127.0.0.1:{port} or localhost:{port}), not to {}",
                tessera_api::limits::elide(host, 100)
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|host| own_host(host, port));
        if !own {
            return Some(format!(
                "this server has no keys, so it refuses requests from other sites (Origin {}); \
                 open the console from the server itself, or create keys (tessera keys create)",
                tessera_api::limits::elide(origin, 100)
            ));
        }
    }
    None
}

/// On a server without keys, refuses every request — API, console, assets, health — that a
/// web page could send from elsewhere (a foreign `Host` or `Origin`: [`foreign`]).
pub async fn loopback_only(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match state.keys.required(&*state.store).await {
        Ok(false) => {
            if let Some(why) = foreign(&request, state.port) {
                return ApiError::new(StatusCode::FORBIDDEN, "foreign_request", why)
                    .into_response();
            }
        }
        Ok(true) => {}
        // Whether keys exist is unknown: the routes that need a key will say so; the public
        // ones (health, readiness, console assets) carry nothing a foreign page could use.
        Err(e) => tracing::debug!("could not tell whether this server has keys: {e}"),
    }
    next.run(request).await
}

/// Finds who a request acts for and puts it in the request's extensions as a [`Caller`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match bearer(&request) {
        Some(credentials) => match state.keys.caller(&*state.store, credentials).await {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                return unauthorized(
                    "the token is wrong (revoked, mistyped, or of another server): set \
                     TESSERA_TOKEN to a key your operator created (tessera keys create)",
                    r#"Bearer realm="tessera", error="invalid_token""#,
                );
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => match state.keys.required(&*state.store).await {
            Ok(true) => {
                return unauthorized(
                    "this server requires a bearer token (a key): set TESSERA_TOKEN to one \
                     (Authorization: Bearer …); an operator creates keys with `tessera keys \
                     create`. A database that has had keys always asks for one, even when \
                     every key is revoked: to get back in, restart the server with --token T \
                     (T then acts as the operator) and create a key with it",
                    r#"Bearer realm="tessera""#,
                );
            }
            // `loopback_only`, around every route, has refused foreign requests already.
            Ok(false) => Caller::operator(),
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    if let (Some(key), Some(rate)) = (&caller.key, caller.requests_per_second)
        && let Err(wait) = state.keys.take(key, rate)
    {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this key made more than its tenant's quota of {rate} requests per second \
                 (requests_per_second); retry after {wait} s, or ask the operator to raise it"
            ),
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&wait.to_string()).expect("digits are a header value"),
        );
        return response;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Refuses a caller whose role does not meet `need` (403, naming the roles that may).
pub async fn require(need: Need, request: Request, next: Next) -> Response {
    let role = request
        .extensions()
        .get::<Caller>()
        .map_or(Role::Read, |c| c.role);
    if !need.allows(role) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key (role {role}) may not {} {}; that needs a key of role {}",
                request.method(),
                request.uri().path(),
                need.roles()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// What a data read names: a job's data, a task's dependencies, a component's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// A job's outputs or cache.
    Job(&'a str),
    /// A task's dependencies.
    Task(&'a str),
    /// A component, by digest.
    Component(&'a str),
}

/// What the OpenAPI document says of the lease header on the routes a runner reads through.
pub const LEASE_PARAM: &str = "The lease an attempt reads under, TASK_ID:LEASE. A fleet \
    runner's key (a runner key of no tenant) must name a live lease it holds in the job (for a \
    component, on a task pinned to it); other keys need none.";

/// The lease a request names in [`tessera_api::LEASE_HEADER`] (`TASK_ID:LEASE`), if any.
fn presented_lease(headers: &axum::http::HeaderMap) -> Option<(&str, u64)> {
    let value = headers.get(tessera_api::LEASE_HEADER)?.to_str().ok()?;
    let (task, lease) = value.rsplit_once(':')?;
    Some((task, lease.parse().ok()?))
}

/// Answers 404 unless the caller may read `what`: anyone who reaches its tenant — except a
/// fleet runner, which reads only under a live lease its key holds (named in
/// [`tessera_api::LEASE_HEADER`]) on a task of that job, or, for a component, on a task
/// pinned to it. The refusal reads exactly like an id that does not exist.
pub async fn check_reader(
    state: &AppState,
    caller: &Caller,
    headers: &axum::http::HeaderMap,
    what: Data<'_>,
) -> Result<(), ApiError> {
    if !caller.is_fleet() {
        return match what {
            Data::Job(id) => check_owner(state, caller, crate::store::Owned::Job(id)).await,
            Data::Task(id) => check_owner(state, caller, crate::store::Owned::Task(id)).await,
            Data::Component(_) => Ok(()),
        };
    }
    let missing = || -> ApiError {
        let (what, id) = match what {
            Data::Job(id) => ("job", id),
            Data::Task(id) => ("task", id),
            Data::Component(id) => ("component", id),
        };
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
        .into()
    };
    let key = caller.key.as_deref().unwrap_or_default();
    let Some((task, lease)) = presented_lease(headers) else {
        return Err(missing());
    };
    let Some(held) = state.store.lease_of(task).await? else {
        return Err(missing());
    };
    if !held.held_by(key, lease, crate::now_unix_nano()) {
        return Err(missing());
    }
    let allowed = match what {
        Data::Job(job) => held.job_id == job,
        Data::Task(other) => state
            .store
            .lease_of(other)
            .await?
            .is_some_and(|t| t.job_id == held.job_id),
        Data::Component(digest) => held.component.as_deref() == Some(digest),
    };
    if allowed { Ok(()) } else { Err(missing()) }
}

/// Answers 404 unless the caller reaches what owns `of` — the same answer as for an id that
/// does not exist, so that another tenant's ids cannot even be confirmed.
pub async fn check_owner(
    state: &AppState,
    caller: &Caller,
    of: crate::store::Owned<'_>,
) -> Result<(), ApiError> {
    if caller.reach() == Reach::All {
        return Ok(());
    }
    match state.store.owner(of).await? {
        Some(tenant) if caller.reaches(tenant) => Ok(()),
        _ => {
            let (what, id) = match of {
                crate::store::Owned::Job(id) => ("job", id),
                crate::store::Owned::Task(id) => ("task", id),
            };
            Err(StoreError::NotFound {
                what,
                id: id.to_string(),
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_only_in_their_shape() {
        let made = new_secret();
        let (id, secret) = split_key(&made.key).unwrap();
        assert_eq!(id, made.id);
        assert_eq!(hash(secret), made.hash);
        assert!(made.key.len() > 60, "{}", made.key);
        for bad in [
            "",
            "tsk_",
            "tsk_abc_def",
            "xyz_0123456789abcdef_s",
            "tsk_0123456789abcdeg_s",
        ] {
            assert!(split_key(bad).is_none(), "{bad}");
        }
        assert_ne!(new_secret().key, made.key);
    }

    #[test]
    fn roles_meet_needs() {
        use Role::*;
        assert!(Need::Read.allows(Read) && !Need::Read.allows(Runner));
        assert!(Need::Submit.allows(Submit) && !Need::Submit.allows(Read));
        assert!(Need::Admin.allows(Admin) && !Need::Admin.allows(Submit));
        assert!(Need::Runner.allows(Runner) && !Need::Runner.allows(Submit));
        assert!(Need::Operator.allows(Operator) && !Need::Operator.allows(Admin));
        assert_eq!(Need::Submit.roles(), "operator, admin, submit");
    }

    #[test]
    fn only_loopback_names_on_the_own_port_are_own() {
        assert!(own_host("127.0.0.1:8420", 8420));
        assert!(own_host("localhost:8420", 8420));
        assert!(own_host("LOCALHOST:8420", 8420));
        assert!(own_host("[::1]:8420", 8420));
        assert!(!own_host("127.0.0.1:8421", 8420));
        assert!(!own_host("evil.example:8420", 8420));
        assert!(!own_host("127.0.0.1.evil.example:8420", 8420));
        assert!(!own_host("localhost", 8420));
        assert!(own_host("localhost", 80));
    }

    #[test]
    fn runner_ids_are_bound_to_their_key() {
        let mut caller = Caller::operator();
        assert_eq!(caller.runner_id("r1"), "r1");
        caller.key = Some("0123456789abcdef".into());
        assert_eq!(caller.runner_id("r1"), "0123456789abcdef/r1");
        caller.tenant = Some(7);
        assert_eq!(caller.claims(false), Reach::Tenant(7));
        assert_eq!(caller.claims(true), Reach::Tenant(7));
        caller.tenant = None;
        assert_eq!(caller.claims(true), Reach::All);
        assert_eq!(caller.claims(false), Reach::Tenant(DEFAULT_TENANT));
    }
}
