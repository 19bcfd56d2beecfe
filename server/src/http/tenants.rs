//! Tenants and keys: who is who, and the keys that say so.

use axum::extract::State;
use axum::{Extension, Json};
use tessera_api::{
    CreatedKey, ErrorBody, Identity, KeyList, NewKey, NewTenant, Role, Tenant, TenantList,
    TenantUpdate,
};

use super::AppState;
use super::auth::{Caller, new_secret};
use super::error::{ApiError, ApiJson, ApiPath};
use crate::now_unix_nano;
use crate::store::{KeyRecord, StoreError, TenantId};

/// Who the request acts as: role, tenant, key, and whether the server asks for keys.
#[utoipa::path(get, path = "/v1/whoami", tag = "tenants",
    responses((status = 200, body = Identity)))]
pub async fn whoami(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Identity>, ApiError> {
    Ok(Json(Identity {
        role: caller.role,
        tenant: caller.tenant_name.clone(),
        key: caller.key.clone(),
        keys_required: state.keys.required(&*state.store).await?,
    }))
}

/// The tenants: every one for an operator, one's own for anyone else.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TenantList>, ApiError> {
    // A fleet runner reaches every tenant's tasks, not their quotas and usage: it sees what
    // any non-operator of no tenant sees, nothing.
    if caller.is_fleet() {
        return Ok(Json(TenantList {
            tenants: Vec::new(),
        }));
    }
    let tenants = state.store.tenants(caller.reach()).await?;
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(|(_, t)| t).collect(),
    }))
}

/// Creates a tenant (operators only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A tenant of that name exists")))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(tenant): ApiJson<NewTenant>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(
        state.store.create_tenant(&tenant, now_unix_nano()).await?,
    ))
}

/// Changes a tenant's weight or quotas (operators only); answers the tenant as it is now.
#[utoipa::path(patch, path = "/v1/tenants/{name}", tag = "tenants", request_body = TenantUpdate,
    params(("name" = String, Path)),
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(update): ApiJson<TenantUpdate>,
) -> Result<Json<Tenant>, ApiError> {
    let tenant = state.store.update_tenant(&name, &update).await?;
    tracing::info!(tenant = %tenant.name, "changed a tenant's weight or quotas");
    Ok(Json(tenant))
}

/// The tenant a new key is for: an operator's choice (none for operator and fleet-runner
/// keys); a tenant admin's own, whatever it names.
async fn key_tenant(
    state: &AppState,
    caller: &Caller,
    new: &NewKey,
) -> Result<Option<(TenantId, String)>, ApiError> {
    if let Some(own) = caller.tenant {
        if new.role == Role::Operator {
            return Err(forbidden(
                "a tenant admin may not create operator keys; ask your operator",
            ));
        }
        if let Some(named) = &new.tenant
            && Some(named) != caller.tenant_name.as_ref()
        {
            // Another tenant is as unknown as one that does not exist.
            return Err(StoreError::NotFound {
                what: "tenant",
                id: named.clone(),
            }
            .into());
        }
        return Ok(Some((own, caller.tenant_name.clone().unwrap_or_default())));
    }
    match (&new.tenant, new.role) {
        (Some(_), Role::Operator) => Err(ApiError::bad_request(
            "an operator key has no tenant: it reaches every tenant; leave tenant out",
        )),
        (None, Role::Operator | Role::Runner) => Ok(None),
        (None, role) => Err(ApiError::bad_request(format!(
            "a {role} key belongs to a tenant: name one (tessera keys create --tenant NAME); \
             without a tenant only operator and fleet-runner (runner) keys exist"
        ))),
        (Some(name), _) => match state.store.tenant_named(name).await? {
            Some((id, tenant)) => Ok(Some((id, tenant.name))),
            None => Err(StoreError::NotFound {
                what: "tenant",
                id: format!("{name} (create it first: tessera tenants create {name})"),
            }
            .into()),
        },
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", message)
}

/// Creates a key and answers its secret, this once. Operators create any key; a tenant admin
/// creates keys of its tenant (any role but operator).
#[utoipa::path(post, path = "/v1/keys", tag = "tenants", request_body = NewKey,
    responses((status = 200, body = CreatedKey), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(new): ApiJson<NewKey>,
) -> Result<Json<CreatedKey>, ApiError> {
    let name = new.name.clone().unwrap_or_else(|| new.role.to_string());
    tessera_api::limits::check_name("key name", &name).map_err(ApiError::bad_request)?;
    let tenant = key_tenant(&state, &caller, &new).await?;
    let secret = new_secret();
    let record = KeyRecord {
        id: secret.id.clone(),
        tenant: tenant.as_ref().map(|(id, _)| *id),
        tenant_name: tenant.map(|(_, name)| name),
        role: new.role,
        name,
        hash: secret.hash,
        created_at: now_unix_nano(),
        revoked_at: None,
        requests_per_second: None,
    };
    state.store.create_key(&record).await?;
    state.keys.forget(&record.id);
    tracing::info!(key = %record.id, role = %record.role, "created a key");
    Ok(Json(CreatedKey {
        key: record.listed(),
        secret: secret.key,
    }))
}

/// The keys: every key for an operator, its tenant's for a tenant admin. Never a secret.
#[utoipa::path(get, path = "/v1/keys", tag = "tenants",
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
pub async fn keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.keys(caller.reach()).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(KeyRecord::listed).collect(),
    }))
}

/// Revokes a key at once: it opens nothing from now on (through other servers sharing the
/// database, within 2 s).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = tessera_api::ApiKey), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<tessera_api::ApiKey>, ApiError> {
    let revoked = state
        .store
        .revoke_key(caller.reach(), &id, now_unix_nano())
        .await?;
    // Requests waiting with the key (long-polling claims, job watches) end now.
    state.keys.revoked(&id);
    tracing::info!(key = %id, "revoked a key");
    Ok(Json(revoked.listed()))
}
