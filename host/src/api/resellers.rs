//! White-label resellers through `/api/v1/resellers`: the operator creates
//! and lists resellers; a reseller's key (role `reseller`) reads its own
//! record and creates and lists its own tenants, whose keys it manages
//! through `/tenants/{tenant}/keys`. Another reseller's record or tenant is
//! a 404; a tenant's key gets 403 on every one of these endpoints.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use super::AppState;
use super::admin::{json_body, tenant_error, tenant_json};
use super::error::ApiError;
use super::v1::{Caller, id_param, limit_param, params, read_body};
use crate::auth::Role;
use crate::ids::TenantId;
use crate::tenants::{self, Kind, Tenant, TenantError};
use crate::units::{Clock as _, Credits, SystemClock};

fn no_reseller(id: TenantId) -> ApiError {
    ApiError::not_found(format!("no reseller {id}"))
}

/// The reseller `id` names, if the caller may act for it: the operator for
/// any, a reseller's key for its own (another's is not found).
fn scope(caller: Caller, id: &str) -> Result<TenantId, ApiError> {
    let forbidden = || ApiError::forbidden("this endpoint is the operator's or a reseller's");
    match (caller.0.role, caller.0.tenant) {
        (Role::Operator, _) => Ok(TenantId(id_param(id, "reseller")?)),
        (Role::Reseller, Some(own)) => {
            let id = TenantId(id_param(id, "reseller")?);
            match id == own {
                true => Ok(id),
                false => Err(no_reseller(id)),
            }
        }
        _ => Err(forbidden()),
    }
}

/// The reseller itself, checked to be one.
async fn reseller(state: &AppState, id: TenantId) -> Result<Tenant, ApiError> {
    let found = state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(tenants::find(conn, id)))
        .await
        .map_err(ApiError::internal)?;
    match found {
        Ok(tenant) if tenant.kind == Kind::Reseller => Ok(tenant),
        Ok(_) | Err(TenantError::NotFound(_)) => Err(no_reseller(id)),
        Err(error) => Err(tenant_error(error)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    credit_limit: Option<String>,
}

fn credit_limit(new: &NewTenant) -> Result<Credits, ApiError> {
    match &new.credit_limit {
        None => Ok(Credits::ZERO),
        Some(text) => Credits::parse(text).map_err(|error| {
            ApiError::bad_request("invalid_input", format!("credit_limit: {error}"))
        }),
    }
}

/// A listing's `after` cursor: a tenant id.
pub(super) fn after_param(query: &BTreeMap<String, String>) -> Result<Option<TenantId>, ApiError> {
    query
        .get("after")
        .map(|text| {
            text.parse().map(TenantId).map_err(|_| {
                ApiError::bad_request("invalid_parameter", "after must be a tenant id")
            })
        })
        .transpose()
}

fn page_json(key: &str, page: &[Tenant], limit: i64) -> serde_json::Value {
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|tenant| tenant.id.0.to_string()))
        .flatten();
    serde_json::json!({
        key: page.iter().map(tenant_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })
}

/// `POST /resellers` (operator): a reseller and its wallet, its wholesale
/// account.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: NewTenant = json_body(&body)?;
    let limit = credit_limit(&new)?;
    let (reseller, _) = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(tenants::create_reseller(
                conn,
                &new.name,
                limit,
                SystemClock.now(),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(tenant_error)?;
    Ok((StatusCode::CREATED, Json(tenant_json(&reseller))).into_response())
}

/// `GET /resellers?after=&limit=` (operator).
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.operator()?;
    params(&query, &["after", "limit"])?;
    let limit = limit_param(&query, tenants::TENANTS_PAGE_MAX as i64)?;
    let after = after_param(&query)?;
    let page = state
        .database
        .run(move |conn| {
            tenants::list_resellers(conn, after, limit as usize).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(page_json("resellers", &page, limit)))
}

/// `GET /resellers/{id}` (operator, or the reseller).
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = scope(caller, &id)?;
    Ok(Json(tenant_json(&reseller(&state, id).await?)))
}

/// `POST /resellers/{id}/tenants` (operator, or the reseller): a tenant of
/// the reseller's and its wallet.
pub(super) async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = scope(caller, &id)?;
    reseller(&state, id).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: NewTenant = json_body(&body)?;
    let limit = credit_limit(&new)?;
    let (tenant, _) = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(tenants::create_for_reseller(
                conn,
                id,
                &new.name,
                limit,
                SystemClock.now(),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(tenant_error)?;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))).into_response())
}

/// `GET /resellers/{id}/tenants?after=&limit=` (operator, or the reseller):
/// the reseller's tenants, and no one else's.
pub(super) async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = scope(caller, &id)?;
    reseller(&state, id).await?;
    params(&query, &["after", "limit"])?;
    let limit = limit_param(&query, tenants::TENANTS_PAGE_MAX as i64)?;
    let after = after_param(&query)?;
    let page = state
        .database
        .run(move |conn| {
            tenants::list_of_reseller(conn, id, after, limit as usize).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(page_json("tenants", &page, limit)))
}

/// Whether `caller` manages `tenant`'s keys: the operator, the tenant's
/// admin, a reseller for itself and for its own tenants (another's is not
/// found).
pub(super) async fn manages_keys(
    state: &AppState,
    caller: Caller,
    tenant: TenantId,
) -> Result<(), ApiError> {
    let (Role::Reseller, Some(own)) = (caller.0.role, caller.0.tenant) else {
        return caller.admin_of(tenant);
    };
    if own == tenant {
        return Ok(());
    }
    state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(tenants::find_of_reseller(conn, own, tenant)))
        .await
        .map_err(ApiError::internal)?
        .map(drop)
        .map_err(tenant_error)
}
