//! `/api/v1`: authenticated by API key (`Authorization: Bearer tg_...`),
//! scoped to the key's tenant.

use axum::body::Body;
use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use super::error::ApiError;
use super::idempotency::{self, Claim};
use super::{
    AppState, admin, analytics, billing, leads, pipelines, resellers, sequences, tracking,
};
use crate::auth::{self, Principal, Role};
use crate::ids::TenantId;
use crate::ledger::queries;
use crate::metering::{self, MeterError, Request};
use crate::plugins::PluginError;
use crate::runtime::{CallError, ErrorKind, Field};
use crate::sandbox::{self, CallInputError};
use crate::units::{Clock as _, Credits, SystemClock, Timestamp};

/// Longest `Idempotency-Key` kept.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;

/// The API's OpenAPI document, served at `/api/v1/openapi.json`; a test
/// checks that it documents exactly the operations in [`OPERATIONS`], and
/// that each is served.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every operation this router serves, as (method, path).
pub const OPERATIONS: [(&str, &str); 102] = [
    ("get", "/resellers"),
    ("post", "/resellers"),
    ("get", "/resellers/{id}"),
    ("get", "/resellers/{id}/tenants"),
    ("post", "/resellers/{id}/tenants"),
    ("get", "/resellers/{id}/pricing"),
    ("put", "/resellers/{id}/pricing"),
    ("get", "/resellers/{id}/alerts"),
    ("put", "/resellers/{id}/alerts"),
    ("get", "/resellers/{id}/margins"),
    ("get", "/resellers/{id}/revenue"),
    ("get", "/resellers/{id}/reports/monthly"),
    ("get", "/resellers/{id}/invoices"),
    ("post", "/resellers/{id}/invoices"),
    ("post", "/resellers/{id}/purchases"),
    ("get", "/resellers/{id}/approvals"),
    ("put", "/resellers/{id}/approvals"),
    ("get", "/resellers/{id}/plugins"),
    ("post", "/resellers/{id}/plugins"),
    ("get", "/resellers/{id}/branding"),
    ("put", "/resellers/{id}/branding"),
    ("put", "/tenants/{tenant}/suspension"),
    ("delete", "/tenants/{tenant}/suspension"),
    ("post", "/leads/import/mapping"),
    ("put", "/pipelines/{id}"),
    ("delete", "/sequences/{id}/enrollments/{enrollment}"),
    ("get", "/pipelines"),
    ("post", "/pipelines"),
    ("get", "/pipelines/{id}"),
    ("get", "/deals"),
    ("post", "/deals"),
    ("get", "/deals/{id}"),
    ("patch", "/deals/{id}"),
    ("post", "/deals/{id}/move"),
    ("get", "/mailboxes"),
    ("post", "/mailboxes"),
    ("get", "/sequences"),
    ("post", "/sequences"),
    ("get", "/sequences/{id}"),
    ("put", "/sequences/{id}"),
    ("get", "/sequences/{id}/enrollments"),
    ("post", "/sequences/{id}/enrollments"),
    ("get", "/tasks"),
    ("post", "/tasks"),
    ("patch", "/tasks/{id}"),
    ("post", "/channels/{plugin}/callbacks/{token}"),
    ("post", "/plugins/{plugin}/invoke/{function}"),
    ("get", "/leads"),
    ("post", "/leads"),
    ("post", "/leads/import"),
    ("get", "/leads/scoring"),
    ("put", "/leads/scoring"),
    ("get", "/leads/{id}"),
    ("patch", "/leads/{id}"),
    ("delete", "/leads/{id}"),
    ("get", "/leads/{id}/export"),
    ("put", "/leads/{id}/do-not-contact"),
    ("delete", "/leads/{id}/do-not-contact"),
    ("post", "/leads/search"),
    ("post", "/leads/enrich"),
    ("post", "/messages"),
    ("get", "/billing/credits"),
    ("get", "/billing/credits/transactions"),
    ("post", "/billing/credits/grants"),
    ("get", "/billing/invoices"),
    ("get", "/billing/invoices/{id}"),
    ("get", "/billing/credit-notes"),
    ("get", "/billing/credit-notes/{id}"),
    ("post", "/billing/invoices/{id}/payments"),
    ("post", "/billing/invoices/{id}/pay"),
    ("get", "/billing/payment-methods"),
    ("post", "/billing/payment-methods"),
    ("delete", "/billing/payment-methods/{id}"),
    ("get", "/billing/payments"),
    ("get", "/billing/receipts/{id}"),
    ("post", "/billing/payments/{id}/refund"),
    ("post", "/billing/providers/{provider}/notifications"),
    ("get", "/billing/plans"),
    ("get", "/billing/packages"),
    ("post", "/billing/purchases"),
    ("get", "/billing/subscriptions"),
    ("post", "/billing/subscriptions"),
    ("delete", "/billing/subscriptions"),
    ("put", "/billing/subscriptions/plan"),
    ("get", "/billing/revenue"),
    ("get", "/billing/reports/monthly"),
    ("get", "/usage"),
    ("get", "/usage/records"),
    ("get", "/analytics/usage"),
    ("get", "/analytics/roi"),
    ("get", "/tenants"),
    ("post", "/tenants"),
    ("get", "/tenants/{tenant}/keys"),
    ("post", "/tenants/{tenant}/keys"),
    ("delete", "/tenants/{tenant}/keys/{key}"),
    ("get", "/tenants/{tenant}/contact"),
    ("put", "/tenants/{tenant}/contact"),
    ("get", "/plugins"),
    ("post", "/plugins"),
    ("post", "/plugins/{plugin}/versions"),
    ("put", "/plugins/{plugin}/enablement"),
    ("delete", "/plugins/{plugin}/enablement"),
];

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/billing/credits", get(credits))
        .route("/billing/credits/transactions", get(transactions))
        .route("/plugins/{plugin}/invoke/{function}", post(invoke))
        .route("/leads", get(leads::list).post(leads::create))
        .route("/leads/import", post(leads::import))
        .route("/leads/import/mapping", post(leads::guess_mapping))
        .route(
            "/leads/scoring",
            get(leads::get_scoring).put(leads::put_scoring),
        )
        .route(
            "/leads/{id}",
            get(leads::get).patch(leads::update).delete(leads::erase),
        )
        .route("/leads/{id}/export", get(leads::export))
        .route(
            "/leads/{id}/do-not-contact",
            put(leads::set_do_not_contact).delete(leads::clear_do_not_contact),
        )
        .route(
            "/mailboxes",
            get(sequences::list_mailboxes).post(sequences::create_mailbox),
        )
        .route("/sequences", get(sequences::list).post(sequences::create))
        .route(
            "/sequences/{id}",
            get(sequences::get).put(sequences::update),
        )
        .route(
            "/sequences/{id}/enrollments",
            get(sequences::list_enrollments).post(sequences::enroll),
        )
        .route(
            "/sequences/{id}/enrollments/{enrollment}",
            axum::routing::delete(sequences::stop_enrollment),
        )
        .route("/pipelines", get(pipelines::list).post(pipelines::create))
        .route(
            "/pipelines/{id}",
            get(pipelines::get).put(pipelines::update),
        )
        .route(
            "/deals",
            get(pipelines::list_deals).post(pipelines::create_deal),
        )
        .route(
            "/deals/{id}",
            get(pipelines::get_deal).patch(pipelines::update_deal),
        )
        .route("/deals/{id}/move", post(pipelines::move_deal))
        .route(
            "/tasks",
            get(sequences::list_tasks).post(sequences::create_task),
        )
        .route("/tasks/{id}", axum::routing::patch(sequences::update_task))
        .route(
            "/channels/{plugin}/callbacks/{token}",
            post(tracking::channel_callback),
        )
        .route("/leads/search", post(leads_search))
        .route("/leads/enrich", post(leads_enrich))
        .route("/messages", post(messages_send))
        .route("/usage", get(analytics::tenant_usage))
        .route("/usage/records", get(usage_records))
        .route("/analytics/usage", get(analytics::platform_usage))
        .route("/analytics/roi", get(analytics::roi))
        .route("/billing/revenue", get(analytics::revenue))
        .route("/billing/reports/monthly", get(analytics::monthly_report))
        .route("/billing/credits/grants", post(admin::grant))
        .route("/billing/invoices", get(billing::list_invoices))
        .route("/billing/invoices/{id}", get(billing::get_invoice))
        .route("/billing/credit-notes", get(billing::list_credit_notes))
        .route("/billing/credit-notes/{id}", get(billing::get_credit_note))
        .route(
            "/billing/invoices/{id}/payments",
            post(billing::payment_received),
        )
        .route("/billing/invoices/{id}/pay", post(billing::pay))
        .route(
            "/billing/payment-methods",
            get(billing::list_methods).post(billing::add_method),
        )
        .route(
            "/billing/payment-methods/{id}",
            axum::routing::delete(billing::remove_method),
        )
        .route("/billing/payments", get(billing::list_payments))
        .route("/billing/receipts/{id}", get(billing::receipt))
        .route("/billing/payments/{id}/refund", post(billing::refund))
        .route(
            "/billing/providers/{provider}/notifications",
            post(billing::notification),
        )
        .route("/billing/plans", get(billing::plans))
        .route("/billing/packages", get(billing::packages))
        .route("/billing/purchases", post(billing::purchase))
        .route(
            "/billing/subscriptions",
            get(billing::current_subscription)
                .post(billing::subscribe)
                .delete(billing::cancel),
        )
        .route("/billing/subscriptions/plan", put(billing::change_plan))
        .route(
            "/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route("/resellers", get(resellers::list).post(resellers::create))
        .route("/resellers/{id}", get(resellers::get))
        .route(
            "/resellers/{id}/tenants",
            get(resellers::list_tenants).post(resellers::create_tenant),
        )
        .route(
            "/resellers/{id}/pricing",
            get(resellers::get_pricing).put(resellers::put_pricing),
        )
        .route(
            "/resellers/{id}/alerts",
            get(resellers::get_alerts).put(resellers::put_alerts),
        )
        .route("/resellers/{id}/margins", get(resellers::margins))
        .route("/resellers/{id}/revenue", get(analytics::reseller_revenue))
        .route(
            "/resellers/{id}/reports/monthly",
            get(analytics::reseller_monthly_report),
        )
        .route(
            "/resellers/{id}/invoices",
            get(resellers::list_invoices).post(resellers::invoice_month),
        )
        .route("/resellers/{id}/purchases", post(resellers::purchase))
        .route(
            "/resellers/{id}/approvals",
            get(resellers::get_approvals).put(resellers::put_approvals),
        )
        .route(
            "/resellers/{id}/plugins",
            get(resellers::list_plugins).post(resellers::install_plugin),
        )
        .route(
            "/resellers/{id}/branding",
            get(resellers::get_branding).put(resellers::put_branding),
        )
        .route(
            "/tenants/{tenant}/suspension",
            put(resellers::suspend).delete(resellers::resume),
        )
        .route(
            "/tenants/{tenant}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/tenants/{tenant}/keys/{key}",
            axum::routing::delete(admin::revoke_key),
        )
        .route(
            "/tenants/{tenant}/contact",
            get(admin::get_contact).put(admin::put_contact),
        )
        .route(
            "/plugins",
            get(admin::list_plugins).post(admin::install_plugin),
        )
        .route("/plugins/{plugin}/versions", post(admin::upgrade_plugin))
        .route(
            "/plugins/{plugin}/enablement",
            axum::routing::put(admin::enable_plugin).delete(admin::disable_plugin),
        )
}

/// The holder of a valid API key.
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Principal);

/// Who a request of the dashboard comes from: the key its session was
/// opened with. Only `crate::web` sets it, on the requests it sends this
/// router in process; a request from outside carries no extensions.
#[derive(Clone, Copy, Debug)]
pub struct SignedIn(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(SignedIn(principal)) = parts.extensions.get::<SignedIn>().copied() {
            return rate_limited(state, principal);
        }
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim()
            .to_owned();
        let principal = match state.keys.get(&presented) {
            Some(principal) => principal,
            None => {
                let keys = state.keys.clone();
                state
                    .database
                    .run(move |conn| match keys.authenticate(conn, &presented) {
                        Ok(principal) => Ok(Ok(Some(principal))),
                        Err(auth::AuthError::BadKey) => Ok(Ok(None)),
                        Err(error @ auth::AuthError::Suspended) => Ok(Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "tenant_suspended",
                            error.to_string(),
                        ))),
                        Err(error) => Err(anyhow::Error::from(error)),
                    })
                    .await
                    .map_err(ApiError::internal)??
            }
        };
        let principal = principal.ok_or_else(ApiError::unauthorized)?;
        rate_limited(state, principal)
    }
}

/// The caller, unless its tenant is over its request rate.
fn rate_limited(state: &AppState, principal: Principal) -> Result<Caller, ApiError> {
    if let Some(tenant) = principal.tenant
        && let Err(not_until) = state.rate_limits.check_key(&tenant.0)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this tenant is making requests faster than it may; retry in {} ms",
                wait.as_millis().max(1)
            ),
        );
        error.retry_after = Some(wait.as_secs().max(1));
        return Err(error);
    }
    Ok(Caller(principal))
}

impl Caller {
    /// The tenant of a tenant admin's key.
    pub(super) fn tenant_admin(self) -> Result<TenantId, ApiError> {
        match (self.0.role, self.0.tenant) {
            (Role::Admin, Some(tenant)) => Ok(tenant),
            _ => Err(ApiError::forbidden(
                "this endpoint is for a tenant's admins: use a tenant admin's key",
            )),
        }
    }

    /// The tenant a tenant key acts for; the operator acts for none.
    pub(super) fn tenant(self) -> Result<TenantId, ApiError> {
        match (self.0.role, self.0.tenant) {
            (Role::Admin | Role::Member, Some(tenant)) => Ok(tenant),
            _ => Err(ApiError::forbidden(
                "this endpoint acts for a tenant: use a tenant admin's or member's key",
            )),
        }
    }
}

pub(super) fn credits_json(credits: Credits) -> serde_json::Value {
    credits.to_string().into()
}

fn balance_json(balance: &queries::Balance) -> serde_json::Value {
    serde_json::json!({
        "posted": credits_json(balance.posted),
        "pending": credits_json(balance.pending),
        "available": credits_json(balance.available),
        "credit_limit": balance.credit_limit.map(credits_json),
    })
}

/// `GET /billing/credits`: the tenant's balance and its open grants, in
/// the order they are spent.
async fn credits(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant()?;
    let (balance, grants) = state
        .database
        .run(move |conn| {
            let wallet = queries::wallet_of(conn, tenant)?;
            let balance = queries::balance(conn, wallet)?;
            let grants = queries::grants_of(conn, wallet, true)?;
            anyhow::Ok((balance, grants))
        })
        .await
        .map_err(ApiError::internal)?;
    let grants: Vec<serde_json::Value> = grants
        .iter()
        .map(|grant| {
            serde_json::json!({
                "id": grant.id.as_str(),
                "source": grant.source.as_str(),
                "amount": credits_json(grant.amount),
                "remaining": credits_json(grant.remaining),
                "reserved": credits_json(grant.reserved),
                "expires_at": grant.expires_at.map(|at| at.to_string()),
                "created_at": grant.created_at.to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "tenant": tenant.0,
        "balance": balance_json(&balance),
        "grants": grants,
    })))
}

/// A query's parameters; unknown ones are refused, so a typo is not
/// silently ignored.
pub(super) fn params(query: &BTreeMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|name| !known.contains(&name.as_str())) {
        Some(name) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "unknown parameter {name:?}; this endpoint takes {}",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A whole-number query parameter, if given.
pub(super) fn number_param(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("{name} must be a whole number"),
                )
            })
        })
        .transpose()
}

/// An object's id from its path; anything else is not found.
pub(super) fn id_param(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(format!("{what} {text} not found")))
}

pub(super) fn limit_param(query: &BTreeMap<String, String>, max: i64) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(max.min(100)),
        Some(text) => match text.parse::<i64>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::bad_request(
                "invalid_parameter",
                format!("limit must be 1 to {max}, not {text:?}"),
            )),
        },
    }
}

fn bad_cursor() -> ApiError {
    ApiError::bad_request(
        "invalid_parameter",
        "before must be the next_cursor of an earlier page",
    )
}

/// `GET /billing/credits/transactions?kind=&from=&to=&before=&limit=`: the
/// wallet's transfers, newest first; `kind` (comma-separated: grant, hold,
/// post, void, timeout, expire, transfer) and the RFC 3339 times `from`
/// (included) and `to` (excluded) narrow them.
async fn transactions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["kind", "from", "to", "before", "limit", "format"])?;
    let limit = limit_param(&query, queries::HISTORY_PAGE_MAX as i64)?;
    let before = match query.get("before") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| bad_cursor())?),
    };
    let invalid = |message: String| ApiError::bad_request("invalid_parameter", message);
    let kinds = match query.get("kind") {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|kind| {
                crate::ledger::TransferKind::parse(kind.trim()).ok_or_else(|| {
                    invalid(format!(
                        "kind {kind:?} is not one of grant, hold, post, void, timeout, expire, transfer"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let time = |name: &str| {
        query
            .get(name)
            .map(|text| {
                Timestamp::parse_rfc3339(text).ok_or_else(|| {
                    invalid(format!(
                        "{name} must be an RFC 3339 time, such as 2026-11-01T00:00:00Z, not {text:?}"
                    ))
                })
            })
            .transpose()
    };
    let filter = queries::HistoryFilter {
        kinds,
        from: time("from")?,
        to: time("to")?,
    };
    let (wallet, page) = state
        .database
        .run(move |conn| {
            let wallet = queries::wallet_of(conn, tenant)?;
            let page = queries::history_filtered(conn, wallet, &filter, before, limit as usize)?;
            anyhow::Ok((wallet, page))
        })
        .await
        .map_err(ApiError::internal)?;
    let entries: Vec<serde_json::Value> = page
        .entries
        .iter()
        .map(|(_, transfer)| {
            let signed = match transfer.debit == wallet {
                true => format!("-{}", transfer.amount),
                false => transfer.amount.to_string(),
            };
            serde_json::json!({
                "id": transfer.id.as_str(),
                "kind": transfer.kind.as_str(),
                "amount": signed,
                "hold": transfer.pending_id.as_ref().map(|id| id.as_str()),
                "memo": transfer.memo,
                "created_at": transfer.created_at.to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "transactions": entries,
        "next_cursor": page.next.map(|seq| seq.to_string()),
    });
    analytics::json_or_csv(
        &query,
        body,
        "transactions",
        &["id", "kind", "amount", "hold", "memo", "created_at"],
        "transactions",
    )
}

/// `GET /usage/records?before=&limit=`: the tenant's calls, newest first.
async fn usage_records(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["before", "limit", "format"])?;
    let limit = limit_param(&query, metering::RECORDS_PAGE_MAX)?;
    let before = match query.get("before") {
        None => None,
        Some(text) => {
            let (at, id) = text.split_once('.').ok_or_else(bad_cursor)?;
            Some((at.parse::<i64>().map_err(|_| bad_cursor())?, id.to_owned()))
        }
    };
    let (rows, next) = state
        .database
        .run(move |conn| {
            metering::records_page(conn, tenant, before, limit).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    let records: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "call_id": row.id,
                "plugin": row.plugin,
                "version": row.version,
                "function": row.function,
                "units": row.units,
                "charged": credits_json(Credits::from_micros(row.credits)),
                "fuel": row.fuel,
                "duration_us": row.duration_us,
                "outcome": row.outcome,
                "error": row.error,
                "idempotency_key": row.idempotency_key,
                "state": row.state,
                "created_at": Timestamp::from_micros(row.created_at).to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "records": records,
        "next_cursor": next.map(|(at, id)| format!("{at}.{id}")),
    });
    analytics::json_or_csv(
        &query,
        body,
        "records",
        &[
            "call_id",
            "plugin",
            "version",
            "function",
            "units",
            "charged",
            "fuel",
            "duration_us",
            "outcome",
            "error",
            "idempotency_key",
            "state",
            "created_at",
        ],
        "usage-records",
    )
}

/// Reads a body up to the limit, answering 413 in the API's shape beyond.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    })
}

/// `POST /plugins/{plugin}/invoke/{function}`: one metered call. The body is
/// the function's input as JSON; for `parse-callback`, the callback's raw
/// body (its headers are passed on). With an `Idempotency-Key`, a retry
/// gets the first answer and is not charged again.
async fn invoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((plugin, function)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match caller.tenant() {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let body = match read_body(body, state.body_bytes_max).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    serve_call(&state, tenant, &plugin, &function, &headers, &body).await
}

/// `POST /leads/search`, `/leads/enrich`, `/messages`: the function's
/// input as JSON with the plugin to call in `"plugin"`.
async fn typed(
    state: AppState,
    caller: Caller,
    function: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match caller.tenant() {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let body = match read_body(body, state.body_bytes_max).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    #[derive(serde::Deserialize)]
    struct Named {
        plugin: String,
    }
    let plugin = match serde_json::from_slice::<Named>(&body) {
        Ok(named) => named.plugin,
        Err(error) => {
            return ApiError::bad_request(
                "invalid_input",
                format!("input for {function}: name the plugin to call in \"plugin\": {error}"),
            )
            .into_response();
        }
    };
    serve_call(&state, tenant, &plugin, function, &headers, &body).await
}

async fn leads_search(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    typed(state, caller, "search", headers, body).await
}

async fn leads_enrich(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    typed(state, caller, "enrich", headers, body).await
}

async fn messages_send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    typed(state, caller, "send", headers, body).await
}

/// One metered call, once per `Idempotency-Key`.
async fn serve_call(
    state: &AppState,
    tenant: TenantId,
    plugin: &str,
    function: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let key = match idempotency_key(headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    if let Some(key) = &key {
        let request = idempotency::fingerprint(&format!("invoke {plugin} {function}"), body);
        match idempotency::claim(&state.database, tenant, key, &request, SystemClock.now()).await {
            Ok(Claim::Run) => {}
            Ok(Claim::Replay { status, body }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut response = (status, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Err(error) => return error.into_response(),
        }
    }
    let (status, answer, ran) =
        call_plugin(state, tenant, plugin, function, headers, body, key.clone()).await;
    if let Some(key) = &key {
        let kept = match ran {
            true => {
                idempotency::finish(&state.database, tenant, key, status.as_u16(), &answer).await
            }
            false => idempotency::release(&state.database, tenant, key).await,
        };
        if let Err(error) = kept {
            return error.into_response();
        }
    }
    (status, Json(answer)).into_response()
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX => {
                Ok(Some(key.to_owned()))
            }
            _ => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
                ),
            )),
        },
    }
}

/// Makes the call; returns the answer, and whether the plugin ran (so the
/// answer is the one to keep for its idempotency key).
async fn call_plugin(
    state: &AppState,
    tenant: TenantId,
    plugin: &str,
    function: &str,
    headers: &HeaderMap,
    body: &[u8],
    idempotency_key: Option<String>,
) -> (StatusCode, serde_json::Value, bool) {
    let refused = |error: ApiError| {
        let (status, body) = error.into_parts();
        (status, body, false)
    };
    let forwarded: Vec<Field> = headers
        .iter()
        .filter(|(name, _)| *name != axum::http::header::AUTHORIZATION)
        .map(|(name, value)| Field {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();
    let meter = state.meter.clone();
    let database = state.database.clone();
    let (name, function_name) = (plugin.to_owned(), function.to_owned());
    let body = body.to_vec();
    // One blocking task for the call: the plugin's kind (to parse the
    // input) and the metered call up to its settlement, which is awaited
    // here (a call on a wallet lease settles with the lease's next round).
    let started = tokio::task::spawn_blocking(move || {
        let kind = meter.plugin(&name)?.kind;
        let call = sandbox::parse_call(kind, &function_name, &body, forwarded)?;
        Ok::<_, Refusal>(meter.start(Request {
            tenant,
            plugin: name,
            call,
            idempotency_key,
        })?)
    })
    .await;
    let answer = match started {
        Ok(Ok(started)) => match started.settled().await {
            Ok(metered) => {
                let balance = match metered.balance {
                    Some(balance) => Some(balance),
                    // The call was made and charged; say so even if the
                    // balance cannot be read back.
                    None => tokio::task::spawn_blocking(move || {
                        let mut conn = database.get().ok()?;
                        let wallet = queries::wallet_of(&mut conn, tenant).ok()?;
                        queries::balance(&mut conn, wallet).ok()
                    })
                    .await
                    .ok()
                    .flatten(),
                };
                Ok(Ok((metered, balance)))
            }
            Err(error) => Ok(Err(Refusal::Meter(error))),
        },
        Ok(Err(refusal)) => Ok(Err(refusal)),
        Err(error) => Err(error),
    };
    let (metered, balance) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(Refusal::Meter(error))) => return refused(meter_error(plugin, error)),
        Ok(Err(Refusal::Input(error @ CallInputError::UnknownFunction { .. }))) => {
            return refused(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_function",
                error.to_string(),
            ));
        }
        Ok(Err(Refusal::Input(error @ CallInputError::Input { .. }))) => {
            return refused(ApiError::bad_request("invalid_input", error.to_string()));
        }
        Err(error) => return refused(ApiError::internal(error)),
    };
    let balance = balance
        .map(|balance| balance_json(&balance))
        .unwrap_or(serde_json::Value::Null);
    let charge = serde_json::json!({
        "call_id": metered.call_id,
        "plugin": plugin,
        "version": metered.version,
        "function": function,
        "units": metered.units,
        "charged": credits_json(metered.charged),
        "balance": balance,
    });
    match metered.result {
        Ok(reply) => {
            let mut answer = charge;
            answer["result"] = sandbox::reply_json(&reply);
            (StatusCode::OK, answer, true)
        }
        Err(error) => {
            let mut answer = call_error(&error);
            for (name, value) in charge.as_object().expect("built as an object") {
                answer = answer.with(name, value.clone());
            }
            let (status, body) = answer.into_parts();
            (status, body, true)
        }
    }
}

/// Why a call was refused before or by the meter.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Meter(#[from] MeterError),
    #[error(transparent)]
    Input(#[from] CallInputError),
}

fn unknown_plugin(plugin: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_plugin",
        format!("no plugin {plugin:?} is installed"),
    )
}

/// Why a call was not made: nothing was charged.
pub(super) fn meter_error(plugin: &str, error: MeterError) -> ApiError {
    match error {
        MeterError::Plugin(PluginError::NotInstalled(_)) => unknown_plugin(plugin),
        MeterError::NotEnabled(_) => ApiError::new(
            StatusCode::CONFLICT,
            "plugin_not_enabled",
            error.to_string(),
        ),
        MeterError::WrongFunction { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_function", error.to_string())
        }
        MeterError::Unpriced(_) => {
            ApiError::new(StatusCode::CONFLICT, "unpriced", error.to_string())
        }
        MeterError::PricingRule { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "pricing_rule_failed",
            error.to_string(),
        ),
        MeterError::InsufficientCredits {
            available,
            required,
        } => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            error.to_string(),
        )
        .with("available", credits_json(available))
        .with("required", credits_json(required)),
        MeterError::Suspended => {
            ApiError::new(StatusCode::FORBIDDEN, "tenant_suspended", error.to_string())
        }
        // The tenant is told why, never its reseller's wholesale figures.
        MeterError::ResellerBalanceExhausted { .. } => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "reseller_balance_exhausted",
            error.to_string(),
        ),
        error => ApiError::internal(error),
    }
}

/// A call that ran and failed: the plugin's own report, or the sandbox
/// stopping it.
pub(super) fn call_error(error: &CallError) -> ApiError {
    let message = error.to_string();
    match error {
        CallError::Plugin { error, .. } => {
            let (status, code) = match error.kind {
                ErrorKind::InvalidInput => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "plugin_invalid_input")
                }
                ErrorKind::Misconfigured => (StatusCode::CONFLICT, "plugin_misconfigured"),
                ErrorKind::Unauthorized => (StatusCode::BAD_GATEWAY, "plugin_unauthorized"),
                ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "plugin_rate_limited"),
                ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "plugin_upstream"),
                ErrorKind::NotFound => (StatusCode::NOT_FOUND, "plugin_not_found"),
                ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_internal"),
            };
            ApiError::new(status, code, message).with("retryable", error.retryable)
        }
        CallError::Timeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "plugin_timeout", message)
        }
        CallError::FuelExhausted { .. }
        | CallError::MemoryLimit { .. }
        | CallError::OutputTooLarge { .. }
        | CallError::Trap { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "plugin_crashed", message)
        }
        CallError::WrongFunction { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_function", message)
        }
        CallError::Host { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "platform_unavailable",
            message,
        ),
    }
}
