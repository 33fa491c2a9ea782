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
use super::admin::{
    INSTALL_BODY_BYTES_MAX, NewPlugin, install_error, json_body, tenant_error, tenant_json,
};
use super::error::ApiError;
use super::v1::{Caller, credits_json, id_param, limit_param, params, read_body};
use crate::auth::Role;
use crate::branding;
use crate::ids::TenantId;
use crate::ledger::queries;
use crate::plugins;
use crate::resale::{self, RetailPrices};
use crate::tenants::{self, Kind, Tenant, TenantError};
use crate::units::{Clock as _, Credits, Money, SystemClock};

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

/// Runs `work` on a pooled connection off the async threads; its error
/// becomes the API's through `error`.
async fn on_db<T, E>(
    state: &AppState,
    work: impl FnOnce(&mut crate::db::DbConnection) -> Result<T, E> + Send + 'static,
    error: fn(E) -> ApiError,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
{
    state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(work(conn)))
        .await
        .map_err(ApiError::internal)?
        .map_err(error)
}

/// The reseller `id` names, which the caller may act for ([`scope`]),
/// checked to be one.
pub(super) async fn scoped(
    state: &AppState,
    caller: Caller,
    id: &str,
) -> Result<(TenantId, Tenant), ApiError> {
    let id = scope(caller, id)?;
    Ok((id, reseller(state, id).await?))
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
    let (_, reseller) = scoped(&state, caller, &id).await?;
    Ok(Json(tenant_json(&reseller)))
}

/// `POST /resellers/{id}/tenants` (operator, or the reseller): a tenant of
/// the reseller's and its wallet.
pub(super) async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
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
    let (id, _) = scoped(&state, caller, &id).await?;
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

fn resale_error(error: resale::ResaleError) -> ApiError {
    match error {
        resale::ResaleError::InvalidPricing(_) | resale::ResaleError::InvalidThresholds(_) => {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                error.to_string(),
            )
        }
        resale::ResaleError::NothingToInvoice(_)
        | resale::ResaleError::MonthNotOver(_)
        | resale::ResaleError::MixedCurrencies(_)
        | resale::ResaleError::TooManyTenants(_) => ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_invoice",
            error.to_string(),
        ),
        resale::ResaleError::Tenant(error) => tenant_error(error),
        error => ApiError::internal(error),
    }
}

fn money_json(money: Money) -> serde_json::Value {
    money.to_decimal().to_string().into()
}

/// The reseller's retail price list as stored, and beside it what each
/// plan and package costs it (wholesale) and its tenants (retail).
fn pricing_json(
    state: &AppState,
    settings: &resale::Settings,
) -> Result<serde_json::Value, ApiError> {
    let prices = RetailPrices::parse(&settings.pricing).map_err(resale_error)?;
    let plans: Vec<serde_json::Value> = state
        .subscriptions
        .plans
        .iter()
        .filter(|plan| plan.tenant.is_none())
        .map(|plan| {
            serde_json::json!({
                "id": plan.id,
                "currency": plan.price.currency.code(),
                "wholesale": money_json(plan.price),
                "retail": money_json(prices.plan(plan).price),
            })
        })
        .collect();
    let packages: Vec<serde_json::Value> = state
        .packages
        .iter()
        .map(|package| {
            serde_json::json!({
                "id": package.id,
                "credits": credits_json(package.credits),
                "currency": package.price.currency.code(),
                "wholesale": money_json(package.price),
                "retail": money_json(prices.package(package).price),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "markup_percent": settings.pricing.markup_percent.to_string(),
        "prices": settings.pricing.prices,
        "plans": settings.pricing.plans.iter().map(|(id, price)| (id.clone(), price.to_string())).collect::<BTreeMap<_, _>>(),
        "packages": settings.pricing.packages.iter().map(|(id, price)| (id.clone(), price.to_string())).collect::<BTreeMap<_, _>>(),
        "updated_at": settings.updated_at.map(|at| at.to_string()),
        "catalog": { "plans": plans, "packages": packages },
    }))
}

async fn settings_of(state: &AppState, id: TenantId) -> Result<resale::Settings, ApiError> {
    state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(resale::settings(conn, id)))
        .await
        .map_err(ApiError::internal)?
        .map_err(resale_error)
}

/// `GET /resellers/{id}/pricing` (operator, or the reseller): its retail
/// price list, and each plan's and package's wholesale and retail price.
pub(super) async fn get_pricing(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let settings = settings_of(&state, id).await?;
    Ok(Json(pricing_json(&state, &settings)?))
}

/// `PUT /resellers/{id}/pricing` (operator, or the reseller): replaces its
/// retail price list, checked like `pricing.toml`; a price for one tenant
/// must name one of the reseller's own.
pub(super) async fn put_pricing(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let document: resale::PricingDocument = json_body(&body)?;
    let prices = RetailPrices::parse(&document).map_err(resale_error)?;
    prices
        .check_products(&state.subscriptions.plans, &state.packages)
        .map_err(resale_error)?;
    let now = state.now();
    let settings = state
        .database
        .run(move |conn| {
            let result = (|| {
                for (index, price) in prices.book.prices.iter().enumerate() {
                    if let Some(tenant) = price.tenant
                        && tenants::find_of_reseller(conn, id, tenant).is_err()
                    {
                        return Err(resale::ResaleError::InvalidPricing(format!(
                            "price[{index}].tenant: {tenant} is not one of this reseller's tenants"
                        )));
                    }
                }
                let mut settings = resale::settings(conn, id)?;
                settings.pricing = document;
                resale::store(conn, id, &settings, now)?;
                resale::settings(conn, id)
            })();
            Ok::<_, anyhow::Error>(result)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(resale_error)?;
    state.forget_cached();
    Ok(Json(pricing_json(&state, &settings)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    thresholds: Vec<String>,
}

/// `GET /resellers/{id}/alerts` (operator, or the reseller): its wallet's
/// balance, its alert thresholds and the latest alerts, newest first.
pub(super) async fn get_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let (settings, alerts, balance) = state
        .database
        .run(move |conn| {
            let settings = resale::settings(conn, id)?;
            let alerts = resale::alerts(conn, id, ALERTS_PAGE_MAX)?;
            let wallet = queries::wallet_of(conn, id)?;
            let balance = queries::balance(conn, wallet)?;
            Ok::<_, anyhow::Error>((settings, alerts, balance))
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(alerts_json(&settings, &alerts, Some(&balance))))
}

/// Alerts one listing returns at most.
const ALERTS_PAGE_MAX: i64 = 100;

fn alerts_json(
    settings: &resale::Settings,
    alerts: &[resale::Alert],
    balance: Option<&queries::Balance>,
) -> serde_json::Value {
    serde_json::json!({
        "thresholds": settings.thresholds.iter().map(|t| credits_json(*t)).collect::<Vec<_>>(),
        "balance": balance.map(|balance| serde_json::json!({
            "posted": credits_json(balance.posted),
            "available": credits_json(balance.available),
            "credit_limit": balance.credit_limit.map(credits_json),
        })),
        "alerts": alerts.iter().map(|alert| serde_json::json!({
            "id": alert.id,
            "threshold": credits_json(alert.threshold),
            "balance": credits_json(alert.balance),
            "created_at": alert.created_at.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// `PUT /resellers/{id}/alerts` (operator, or the reseller): the wallet
/// balances (credits, at most ten) below which a wholesale charge alerts
/// the reseller.
pub(super) async fn put_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let given: Thresholds = json_body(&body)?;
    let thresholds = given
        .thresholds
        .iter()
        .enumerate()
        .map(|(index, text)| {
            Credits::parse(text).map_err(|error| {
                ApiError::bad_request("invalid_input", format!("thresholds[{index}]: {error}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let thresholds = resale::check_thresholds(thresholds).map_err(resale_error)?;
    let now = state.now();
    let settings = state
        .database
        .run(move |conn| {
            let result = (|| {
                let mut settings = resale::settings(conn, id)?;
                settings.thresholds = thresholds;
                resale::store(conn, id, &settings, now)?;
                resale::settings(conn, id)
            })();
            Ok::<_, anyhow::Error>(result)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(resale_error)?;
    state.forget_cached();
    Ok(Json(alerts_json(&settings, &[], None)))
}

/// A `YYYY-MM` month parameter.
fn month_param(query: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, ApiError> {
    query
        .get(name)
        .map(|text| {
            chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
                .map(|_| text.clone())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("{name} must be a month such as 2027-01, got {text:?}"),
                    )
                })
        })
        .transpose()
}

/// `GET /resellers/{id}/margins?from=YYYY-MM&to=YYYY-MM` (operator, or the
/// reseller): what its tenants paid at retail, what it paid at wholesale,
/// and the difference, for calls (credits) by month, tenant and plugin,
/// and for plan periods (money) by month and tenant, with totals.
pub(super) async fn margins(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    params(&query, &["from", "to"])?;
    let this_month = crate::metering::period_of(state.now());
    let to = month_param(&query, "to")?.unwrap_or_else(|| this_month.clone());
    let from = month_param(&query, "from")?.unwrap_or_else(|| to.clone());
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    let (calls, plans) = {
        let (from, to) = (from.clone(), to.clone());
        state
            .database
            .run(move |conn| {
                Ok::<_, anyhow::Error>((
                    resale::call_margins(conn, id, &from, &to)?,
                    resale::plan_margins(conn, id, &from, &to)?,
                ))
            })
            .await
            .map_err(ApiError::internal)?
    };
    let sum = |pick: fn(&resale::CallMargin) -> Credits| {
        Credits::from_micros(calls.iter().map(|row| pick(row).micros()).sum())
    };
    let mut plan_totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in &plans {
        let total = plan_totals.entry(row.currency.clone()).or_default();
        total.0 += row.retail_minor;
        total.1 += row.wholesale_minor;
    }
    let minor = |amount: i64, currency: &str| {
        crate::units::Currency::parse(currency)
            .map(|currency| {
                money_json(Money {
                    minor: amount,
                    currency,
                })
            })
            .unwrap_or_else(|_| amount.into())
    };
    Ok(Json(serde_json::json!({
        "from": from,
        "to": to,
        "calls": calls.iter().map(|row| serde_json::json!({
            "period": row.period,
            "tenant_id": row.tenant.0,
            "plugin": row.plugin,
            "calls": row.calls,
            "retail": credits_json(row.retail),
            "wholesale": credits_json(row.wholesale),
            "margin": credits_json(row.margin),
        })).collect::<Vec<_>>(),
        "plans": plans.iter().map(|row| serde_json::json!({
            "period": row.period,
            "tenant_id": row.tenant.0,
            "invoice_id": row.invoice,
            "description": row.description,
            "currency": row.currency,
            "retail": minor(row.retail_minor, &row.currency),
            "wholesale": minor(row.wholesale_minor, &row.currency),
            "margin": minor(row.retail_minor - row.wholesale_minor, &row.currency),
        })).collect::<Vec<_>>(),
        "totals": {
            "calls": {
                "retail": credits_json(sum(|row| row.retail)),
                "wholesale": credits_json(sum(|row| row.wholesale)),
                "margin": credits_json(sum(|row| row.margin)),
            },
            "plans": plan_totals.iter().map(|(currency, (retail, wholesale))| serde_json::json!({
                "currency": currency,
                "retail": minor(*retail, currency),
                "wholesale": minor(*wholesale, currency),
                "margin": minor(retail - wholesale, currency),
            })).collect::<Vec<_>>(),
        },
    })))
}

/// Whether `caller` may suspend or resume `tenant`: the operator any tenant
/// or reseller, a reseller its own tenants (another's is not found).
async fn governs(
    state: &AppState,
    caller: Caller,
    tenant: TenantId,
) -> Result<tenants::Suspender, ApiError> {
    let own = match (caller.0.role, caller.0.tenant) {
        (Role::Operator, _) => None,
        (Role::Reseller, Some(own)) if own != tenant => Some(own),
        _ => {
            return Err(ApiError::forbidden(
                "the operator suspends tenants and resellers, a reseller its own tenants",
            ));
        }
    };
    state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(match own {
                Some(own) => tenants::find_of_reseller(conn, own, tenant),
                None => tenants::find(conn, tenant),
            })
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(tenant_error)?;
    Ok(match own {
        Some(_) => tenants::Suspender::Reseller,
        None => tenants::Suspender::Operator,
    })
}

async fn set_suspended(
    state: &AppState,
    caller: Caller,
    tenant: &str,
    suspended: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = TenantId(id_param(tenant, "tenant")?);
    let by = governs(state, caller, tenant).await?;
    let now = state.now();
    let updated = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(tenants::set_suspended(conn, tenant, suspended, by, now))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(tenant_error)?;
    state.forget_cached();
    Ok(Json(tenant_json(&updated)))
}

/// `PUT /tenants/{tenant}/suspension` (operator, or the tenant's
/// reseller): suspends the tenant. Its keys, dashboard sessions and calls
/// (its sequences' too) are refused until it is resumed; suspending a
/// reseller suspends its tenants with it.
pub(super) async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_suspended(&state, caller, &tenant, true).await
}

/// `DELETE /tenants/{tenant}/suspension` (operator, or the tenant's
/// reseller): resumes the tenant.
pub(super) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_suspended(&state, caller, &tenant, false).await
}

fn brand_error(error: branding::BrandError) -> ApiError {
    match error {
        branding::BrandError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            error.to_string(),
        ),
        branding::BrandError::DomainTaken(_) => {
            ApiError::new(StatusCode::CONFLICT, "domain_taken", error.to_string())
        }
        branding::BrandError::Tenant(error) => tenant_error(error),
        error => ApiError::internal(error),
    }
}

fn brand_json(reseller: TenantId, brand: &branding::Brand, set: bool) -> serde_json::Value {
    let mut value = serde_json::to_value(brand).expect("a brand serialises");
    value["reseller"] = reseller.0.into();
    value["set"] = set.into();
    value
}

/// `GET /resellers/{id}/branding` (operator, or the reseller): the brand
/// its tenants see; `set` is false while it shows only the reseller's name.
pub(super) async fn get_branding(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, reseller) = scoped(&state, caller, &id).await?;
    let brand = on_db(&state, move |conn| branding::get(conn, id), brand_error).await?;
    Ok(Json(match brand {
        Some(brand) => brand_json(id, &brand, true),
        None => brand_json(
            id,
            &branding::Brand {
                name: reseller.name,
                ..Default::default()
            },
            false,
        ),
    }))
}

/// `PUT /resellers/{id}/branding` (operator, or the reseller): replaces its
/// brand: name, address, tax id, logo, colours, support address, custom
/// domain and the tax its invoices charge.
pub(super) async fn put_branding(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let brand: branding::Brand = json_body(&body)?;
    // The platform's own host shows the platform, whoever asks.
    let platform_host = state
        .engagement
        .public_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if brand
        .domain
        .as_deref()
        .is_some_and(|domain| domain.eq_ignore_ascii_case(&platform_host))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("invalid branding: domain: {platform_host} is the platform's own host"),
        ));
    }
    if brand
        .name
        .trim()
        .eq_ignore_ascii_case(state.issuer.name.trim())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "invalid branding: name: that is the platform's name; use the reseller's own",
        ));
    }
    let now = state.now();
    let brand = on_db(
        &state,
        move |conn| branding::put(conn, id, brand, now),
        brand_error,
    )
    .await?;
    Ok(Json(brand_json(id, &brand, true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approvals {
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    http_hosts: Vec<String>,
}

fn approvals_json(reseller: TenantId, approval: &plugins::Approval) -> serde_json::Value {
    serde_json::json!({
        "reseller": reseller.0,
        "kinds": approval.kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
        "http_hosts": approval.http_hosts,
    })
}

/// `GET /resellers/{id}/approvals` (operator, or the reseller): the kinds
/// of plugin the reseller may install and the HTTP hosts they may reach.
pub(super) async fn get_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let approval = on_db(
        &state,
        move |conn| plugins::approval(conn, id),
        install_error,
    )
    .await?;
    Ok(Json(approvals_json(id, &approval)))
}

/// `PUT /resellers/{id}/approvals` (operator): what the reseller's own
/// plugins may be (`lead-source`, `channel`) and reach.
pub(super) async fn put_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.operator()?;
    let id = TenantId(id_param(&id, "reseller")?);
    reseller(&state, id).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let given: Approvals = json_body(&body)?;
    let kinds = given
        .kinds
        .iter()
        .map(|kind| {
            plugins::RESOLD_KINDS
                .into_iter()
                .find(|known| known.as_str() == kind)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_input",
                        format!("kinds: {kind:?} is not lead-source or channel"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let approval = plugins::Approval {
        kinds,
        http_hosts: given.http_hosts,
    };
    let now = state.now();
    let stored = approval.clone();
    on_db(
        &state,
        move |conn| plugins::set_approval(conn, id, &stored, now),
        install_error,
    )
    .await?;
    Ok(Json(approvals_json(id, &approval)))
}

fn installed_json(installed: &plugins::InstalledVersion) -> serde_json::Value {
    serde_json::json!({
        "name": installed.name,
        "version": installed.version,
        "kind": installed.kind,
        "api_version": installed.api_version,
        "wasm_sha256": installed.wasm_sha256,
        "reseller": installed.owner.map(|owner| owner.0),
    })
}

/// `GET /resellers/{id}/plugins` (operator, or the reseller): the
/// reseller's own plugins, at their active versions.
pub(super) async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let own = on_db(&state, plugins::list, install_error)
        .await?
        .into_iter()
        .filter(|version| version.active && version.owner == Some(id))
        .map(|version| installed_json(&version))
        .collect::<Vec<_>>();
    Ok(Json(serde_json::json!({ "plugins": own })))
}

/// `POST /resellers/{id}/plugins` (operator, or the reseller): installs one
/// of the reseller's own plugins, or a newer version of it. It must be of a
/// kind the operator approved for the reseller and reach only hosts
/// approved for it; only the reseller and its tenants see and use it.
pub(super) async fn install_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let (id, _) = scoped(&state, caller, &id).await?;
    let body = read_body(body, INSTALL_BODY_BYTES_MAX).await?;
    let new: NewPlugin = json_body(&body)?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(new.wasm_base64.as_bytes())
        .map_err(|error| ApiError::bad_request("invalid_input", format!("wasm_base64: {error}")))?;
    let meter = state.meter.clone();
    let database = state.database.clone();
    let now = state.now();
    // Checking compiles the component: work for a blocking thread.
    let installed = tokio::task::spawn_blocking(move || {
        let mut conn = database.get().map_err(ApiError::internal)?;
        plugins::install_for_reseller(
            &mut conn,
            meter.registry().runtime(),
            id,
            &new.manifest,
            &wasm,
            now,
        )
        .map_err(install_error)
    })
    .await
    .map_err(ApiError::internal)??;
    state.forget_cached();
    Ok((StatusCode::CREATED, Json(installed_json(&installed))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonthChoice {
    month: String,
}

/// `POST /resellers/{id}/invoices` `{"month": "2027-03"}` (operator): the
/// platform's invoice to the reseller for that month's wholesale plan
/// charges, a line per tenant; asking again returns the same invoice.
pub(super) async fn invoice_month(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.operator()?;
    let id = TenantId(id_param(&id, "reseller")?);
    reseller(&state, id).await?;
    let choice: MonthChoice = json_body(&read_body(body, state.body_bytes_max).await?)?;
    let query = BTreeMap::from([("month".to_owned(), choice.month)]);
    let month = month_param(&query, "month")?.expect("given");
    let issuer = state.issuer.clone();
    let now = state.now();
    let document = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(resale::invoice_month(conn, &issuer, id, &month, now))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(resale_error)?;
    Ok(Json(super::billing::document_json(&document)))
}

/// `GET /resellers/{id}/invoices?after=&limit=` (operator, or the
/// reseller): the platform's invoices to the reseller, newest first.
pub(super) async fn list_invoices(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    params(&query, &["after", "limit"])?;
    let limit = limit_param(&query, 100)?;
    let after = query
        .get("after")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::bad_request("invalid_parameter", "after must be an invoice id")
            })
        })
        .transpose()?;
    let documents = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(crate::billing::invoices::list(
                conn,
                id,
                crate::billing::invoices::Kind::Invoice,
                after,
                limit,
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let next = (documents.len() as i64 == limit)
        .then(|| documents.last().map(|document| document.id.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({
        "invoices": documents.iter().map(super::billing::document_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageChoice {
    package: String,
}

/// `POST /resellers/{id}/purchases` `{"package": "pack-5000"}` (operator,
/// or the reseller): a credit package for the reseller's wallet, at the
/// platform's price, on the platform's invoice to it; its credits are
/// granted when that invoice is paid (`POST /billing/invoices/{id}/payments`).
pub(super) async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, _) = scoped(&state, caller, &id).await?;
    let choice: PackageChoice = json_body(&read_body(body, state.body_bytes_max).await?)?;
    let (issuer, packages) = (state.issuer.clone(), state.packages.clone());
    let now = state.now();
    let (purchase, invoice) = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(crate::billing::purchases::buy(
                conn,
                &issuer,
                &packages,
                id,
                &choice.package,
                now,
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(super::billing::purchase_error)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "purchase": super::billing::purchase_json(&purchase),
            "invoice": super::billing::document_json(&invoice),
        })),
    )
        .into_response())
}
