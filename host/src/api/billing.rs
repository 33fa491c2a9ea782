//! `/api/v1/billing/...`: plans and the tenant's subscription; its
//! invoices and credit notes as JSON, and each as HTML or PDF
//! (`/billing/invoices/12.pdf`); the operator's record of a payment
//! received.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse as _, Response};

use super::admin::json_body;
use super::error::ApiError;
use super::v1::{Caller, limit_param, params, read_body};
use super::{AppState, idempotency};
use crate::billing::invoices::{self, Document, InvoiceError, Kind};
use crate::billing::payments::{
    MethodKind, NewMethod, Payment, PaymentError, PaymentMethod, Refund, Settled,
};
use crate::billing::purchases;
use crate::billing::render::{self, Parties, Sheet};
use crate::billing::subscriptions::{PlanChange, Subscription, SubscriptionError};
use crate::ids::TenantId;
use crate::units::Currency;

/// Documents per page at most.
const PAGE_MAX: i64 = 100;

/// `GET /billing/invoices?after=&limit=`: the tenant's invoices, oldest
/// first; `after` is the `next_cursor` of the page before.
pub(super) async fn list_invoices(
    state: State<AppState>,
    caller: Caller,
    query: Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    list(state, caller, query, Kind::Invoice).await
}

/// `GET /billing/credit-notes?after=&limit=`.
pub(super) async fn list_credit_notes(
    state: State<AppState>,
    caller: Caller,
    query: Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    list(state, caller, query, Kind::CreditNote).await
}

/// `GET /billing/invoices/{id}`, `{id}.pdf` or `{id}.html`.
pub(super) async fn get_invoice(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Response, ApiError> {
    get(state, caller, id, Kind::Invoice).await
}

/// `GET /billing/credit-notes/{id}`, `{id}.pdf` or `{id}.html`.
pub(super) async fn get_credit_note(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Response, ApiError> {
    get(state, caller, id, Kind::CreditNote).await
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["after", "limit", "format"])?;
    let limit = limit_param(&query, PAGE_MAX)?;
    let after = match query.get("after") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_parameter",
                "after must be the next_cursor of an earlier page",
            )
        })?),
    };
    let documents = state
        .database
        .run(move |conn| {
            invoices::list(conn, tenant, kind, after, limit).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    let next = match documents.len() as i64 == limit {
        true => documents.last().map(|document| document.id.to_string()),
        false => None,
    };
    let field = match kind {
        Kind::Invoice => "invoices",
        Kind::CreditNote => "credit_notes",
    };
    let body = serde_json::json!({
        field: documents.iter().map(document_json).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    super::analytics::json_or_csv(
        &query,
        body,
        field,
        &[
            "id",
            "number",
            "state",
            "currency",
            "subtotal",
            "tax_name",
            "tax_rate",
            "tax",
            "total",
            "credits_invoice",
            "created_at",
            "finalized_at",
            "closed_at",
        ],
        field,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Html,
    Pdf,
}

async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let noun = match kind {
        Kind::Invoice => "invoice",
        Kind::CreditNote => "credit note",
    };
    let not_found = || ApiError::not_found(format!("this tenant has no {noun} {id:?}"));
    let (document_id, format) = split_format(&id).ok_or_else(not_found)?;
    let platform = state.issuer.clone();
    let found = state
        .database
        .run(move |conn| {
            let document = match invoices::get(conn, tenant, document_id) {
                Ok(document) if document.kind == kind => document,
                Ok(_) | Err(InvoiceError::NotFound(_)) => return Ok(None),
                Err(error) => return Err(anyhow::Error::from(error)),
            };
            let sheet = render::sheet_of(conn, &document, &platform)?;
            anyhow::Ok(Some((document, sheet)))
        })
        .await
        .map_err(ApiError::internal)?;
    let (document, sheet) = found.ok_or_else(not_found)?;
    if format == Format::Json {
        return Ok(Json(document_json(&document)).into_response());
    }
    let name = document
        .display_number()
        .unwrap_or_else(|| format!("draft-{}", document.id));
    rendered(&sheet, &name, format)
}

/// `12`, `12.pdf` or `12.html`: the id and the format asked for.
fn split_format(id: &str) -> Option<(i64, Format)> {
    let (number, format) = match id.rsplit_once('.') {
        None => (id, Format::Json),
        Some((number, "pdf")) => (number, Format::Pdf),
        Some((number, "html")) => (number, Format::Html),
        Some(_) => return None,
    };
    Some((number.parse().ok()?, format))
}

/// A sheet as a PDF or HTML download named `name`.
fn rendered(sheet: &Sheet, name: &str, format: Format) -> Result<Response, ApiError> {
    let (content_type, body) = match format {
        Format::Pdf => ("application/pdf", render::pdf(sheet)),
        _ => (
            "text/html; charset=utf-8",
            render::html(sheet)
                .map_err(ApiError::internal)?
                .into_bytes(),
        ),
    };
    let extension = if format == Format::Pdf { "pdf" } else { "html" };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{name}.{extension}\""),
        )
        .body(Body::from(body))
        .map_err(ApiError::internal)
}

/// Money as a decimal string in the document's currency: `"49.00"`.
fn money(minor: i64, currency: &str) -> String {
    let digits = Currency::parse(currency)
        .map(|currency| currency.minor_digits())
        .unwrap_or(2);
    rust_decimal::Decimal::new(minor, digits).to_string()
}

pub(super) fn document_json(document: &Document) -> serde_json::Value {
    let currency = document.currency.as_str();
    let (path, format) = match document.kind {
        Kind::Invoice => ("invoices", "invoice"),
        Kind::CreditNote => ("credit-notes", "credit_note"),
    };
    serde_json::json!({
        "id": document.id,
        "kind": format,
        "number": document.display_number(),
        "issuer": document.issuer,
        "state": document.state.as_str(),
        "currency": currency,
        "lines": document.lines.iter().map(|line| serde_json::json!({
            "description": line.description,
            "quantity": line.quantity,
            "unit_price": money(line.unit_price_minor, currency),
            "amount": money(line.amount_minor, currency),
        })).collect::<Vec<_>>(),
        "subtotal": money(document.totals.subtotal_minor, currency),
        "tax_name": document.tax_name,
        "tax_rate": document.tax_rate.normalize().to_string(),
        "tax": money(document.totals.tax_minor, currency),
        "total": money(document.totals.total_minor, currency),
        "credits_invoice": document.credits_invoice,
        "created_at": document.created_at.to_string(),
        "finalized_at": document.finalized_at.map(|at| at.to_string()),
        "closed_at": document.closed_at.map(|at| at.to_string()),
        "pdf": format!("/api/v1/billing/{path}/{}.pdf", document.id),
    })
}

/// `GET /billing/plans`: the plans a tenant may subscribe to.
pub(super) async fn plans(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    // A tenant sees the plans on sale and its own custom plans, a resold
    // tenant at its reseller's prices; the operator sees them all.
    let retail = retail_prices(&state, &caller).await?;
    let plans: Vec<serde_json::Value> = state
        .subscriptions
        .plans
        .iter()
        .filter(|plan| caller.0.tenant.is_none_or(|tenant| plan.offered_to(tenant)))
        .map(|plan| match &retail {
            Some(prices) => prices.plan(plan),
            None => plan.clone(),
        })
        .map(|plan| {
            serde_json::json!({
                "id": plan.id,
                "name": plan.name,
                "price": plan.price.to_decimal().to_string(),
                "currency": plan.price.currency.to_string(),
                "interval": match plan.interval {
                    crate::config::Interval::Month => "month",
                    crate::config::Interval::Year => "year",
                },
                "credits": plan.credits.to_string(),
                "carryover": {
                    "credits_max": plan.carryover.credits_max.to_string(),
                    "expires_after_periods": plan.carryover.expires_after_periods,
                },
                "tenant": plan.tenant.map(|tenant| tenant.0),
                "discount_percent": plan.discount_percent.to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "plans": plans })))
}

fn subscription_json(subscription: &Subscription) -> serde_json::Value {
    serde_json::json!({
        "id": subscription.id,
        "plan": subscription.plan,
        "next_plan": subscription.next_plan,
        "state": subscription.state.as_str(),
        "period": subscription.period,
        "period_start": subscription.period_start.to_string(),
        "period_end": subscription.period_end.to_string(),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": subscription.canceled_at.map(|at| at.to_string()),
    })
}

fn subscription_error(error: SubscriptionError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        SubscriptionError::UnknownPlan(_) => {
            ApiError::bad_request("unknown_plan", error.to_string())
        }
        SubscriptionError::AlreadySubscribed(_) => ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            error.to_string(),
        ),
        SubscriptionError::SamePlan(_) => {
            ApiError::new(StatusCode::CONFLICT, "same_plan", error.to_string())
        }
        SubscriptionError::CurrencyChange { .. } => {
            ApiError::new(StatusCode::CONFLICT, "currency_change", error.to_string())
        }
        SubscriptionError::NotSubscribed => {
            ApiError::new(StatusCode::NOT_FOUND, "not_subscribed", error.to_string())
        }
        SubscriptionError::NotASubscriptionInvoice(_)
        | SubscriptionError::Invoice(InvoiceError::NotFound(_)) => {
            ApiError::not_found(error.to_string())
        }
        SubscriptionError::Invoice(InvoiceError::WrongState { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", error.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// Runs blocking subscription work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SubscriptionError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(subscription_error)
}

/// `GET /billing/subscriptions`: the tenant's live subscription, or null.
pub(super) async fn current_subscription(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant()?;
    let subscriptions = state.subscriptions.clone();
    let current = blocking(move || subscriptions.current(tenant)).await?;
    Ok(Json(serde_json::json!({
        "subscription": current.as_ref().map(subscription_json),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChoice {
    plan: String,
}

/// `POST /billing/subscriptions` `{"plan": "starter"}` (a tenant admin):
/// subscribes, issuing the first period's invoice; the period's credits
/// are granted when it is paid.
pub(super) async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let choice: PlanChoice = json_body(&bytes)?;
    let subscriptions = state.subscriptions.clone();
    let work = async move {
        let (subscription, invoice) =
            blocking(move || subscriptions.subscribe(tenant, &choice.plan)).await?;
        Ok((
            axum::http::StatusCode::CREATED,
            serde_json::json!({
                "subscription": subscription_json(&subscription),
                "invoice": document_json(&invoice),
            }),
        ))
    };
    Ok(idempotency::once(&state, tenant, "subscribe", &headers, &bytes, work).await)
}

/// `PUT /billing/subscriptions/plan` `{"plan": "professional"}` (a tenant
/// admin): an upgrade at once, with its prorated invoice; a downgrade at
/// the period's end.
pub(super) async fn change_plan(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let choice: PlanChoice = json_body(&bytes)?;
    let subscriptions = state.subscriptions.clone();
    let work = async move {
        let change = blocking(move || subscriptions.change_plan(tenant, &choice.plan)).await?;
        Ok((
            axum::http::StatusCode::OK,
            match change {
                PlanChange::Upgraded {
                    subscription,
                    invoice,
                    proration,
                } => serde_json::json!({
                    "change": "upgraded",
                    "subscription": subscription_json(&subscription),
                    "invoice": document_json(&invoice),
                    "proration": {
                        "credited": money(proration.credit_minor, &invoice.currency),
                        "charged": money(proration.charge_minor, &invoice.currency),
                    },
                }),
                PlanChange::Scheduled(subscription) => serde_json::json!({
                    "change": "scheduled",
                    "subscription": subscription_json(&subscription),
                }),
            },
        ))
    };
    Ok(idempotency::once(&state, tenant, "change plan", &headers, &bytes, work).await)
}

/// `DELETE /billing/subscriptions` (a tenant admin): cancels at the end of
/// the period.
pub(super) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let subscriptions = state.subscriptions.clone();
    let subscription = blocking(move || subscriptions.cancel_at_period_end(tenant)).await?;
    Ok(Json(serde_json::json!({
        "subscription": subscription_json(&subscription),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentReceived {
    tenant: i64,
}

/// `GET /billing/packages`: the credit packages on sale.
pub(super) async fn packages(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retail = retail_prices(&state, &caller).await?;
    let packages: Vec<serde_json::Value> = state
        .packages
        .iter()
        .map(|package| match &retail {
            Some(prices) => prices.package(package),
            None => package.clone(),
        })
        .map(|package| {
            serde_json::json!({
                "id": package.id,
                "credits": package.credits.to_string(),
                "discount_percent": package.discount_percent.normalize().to_string(),
                "price": package.price.to_decimal().to_string(),
                "currency": package.price.currency.to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "packages": packages })))
}

/// The retail prices a resold tenant's caller sees instead of the
/// platform's; `None` for everyone else.
pub(super) async fn retail_prices(
    state: &AppState,
    caller: &Caller,
) -> Result<Option<crate::resale::RetailPrices>, ApiError> {
    let Some(tenant) = caller
        .0
        .tenant
        .filter(|_| caller.0.role != crate::auth::Role::Reseller)
    else {
        return Ok(None);
    };
    let reseller = state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(crate::resale::reseller_of(conn, tenant)))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(reseller.map(|reseller| reseller.prices))
}

pub(super) fn purchase_json(purchase: &purchases::Purchase) -> serde_json::Value {
    serde_json::json!({
        "id": purchase.id,
        "package": purchase.package,
        "credits": purchase.credits.to_string(),
        "invoice": purchase.invoice,
        "granted": purchase.granted,
    })
}

pub(super) fn purchase_error(error: purchases::PurchaseError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        purchases::PurchaseError::UnknownPackage(_) => {
            ApiError::bad_request("unknown_package", error.to_string())
        }
        purchases::PurchaseError::Invoice(InvoiceError::WrongState { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", error.to_string())
        }
        other => ApiError::internal(other),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageChoice {
    package: String,
    /// Pay at once with this saved payment method.
    payment_method: Option<i64>,
}

/// `POST /billing/purchases` `{"package": "pack-1000", "payment_method": 3}`
/// (a tenant admin): issues the package's invoice, and pays it at once
/// with the payment method when one is given; its credits are granted
/// when it is paid.
pub(super) async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let choice: PackageChoice = json_body(&bytes)?;
    let work = async {
        let payments = state.payments.clone();
        let (issuer, packages) = (state.issuer.clone(), state.packages.clone());
        let now = state.subscriptions.clock.now();
        let (purchase, invoice, payment) = run(
            move || {
                // The payment method is checked before anything is sold.
                if let Some(method) = choice.payment_method
                    && !payments
                        .methods(tenant)?
                        .iter()
                        .any(|saved| saved.id == method)
                {
                    return Err(PaymentError::MethodNotFound(method));
                }
                let mut conn = payments.database.get()?;
                let (purchase, invoice) =
                    purchases::buy(&mut conn, &issuer, &packages, tenant, &choice.package, now)?;
                drop(conn);
                let Some(method) = choice.payment_method else {
                    return Ok((purchase, invoice, None));
                };
                let payment = payments.pay(tenant, invoice.id, method)?;
                let mut conn = payments.database.get()?;
                let purchase =
                    purchases::of_invoice(&mut conn, tenant, invoice.id)?.unwrap_or(purchase);
                let invoice = invoices::get(&mut conn, tenant, invoice.id)?;
                Ok((purchase, invoice, Some(payment)))
            },
            payment_error,
        )
        .await?;
        let mut answer = serde_json::json!({
            "purchase": purchase_json(&purchase),
            "invoice": document_json(&invoice),
        });
        if let Some(payment) = payment {
            answer["payment"] = payment_json(&payment);
        }
        Ok((axum::http::StatusCode::CREATED, answer))
    };
    Ok(idempotency::once(&state, tenant, "purchase", &headers, &bytes, work).await)
}

fn settled_json(settled: &Settled) -> serde_json::Value {
    match settled {
        Settled::Purchase(purchase) => serde_json::json!({ "purchase": purchase_json(purchase) }),
        Settled::Subscription(subscription) => {
            serde_json::json!({ "subscription": subscription_json(subscription) })
        }
    }
}

/// `POST /billing/invoices/{id}/payments` `{"tenant": 1}` (the operator):
/// records that an invoice for a subscription, an upgrade or a credit
/// package was paid outside the platform (a bank transfer arrived): its
/// pending payment succeeds, and what it bought is granted. A second
/// record of the same payment grants nothing more.
pub(super) async fn payment_received(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.operator()?;
    let payment: PaymentReceived = json_body(&read_body(body, state.body_bytes_max).await?)?;
    let invoice = invoice_id(&id)?;
    let tenant = TenantId(payment.tenant);
    let payments = state.payments.clone();
    let settled = run(
        move || payments.record_received(tenant, invoice),
        payment_error,
    )
    .await?;
    Ok(Json(settled_json(&settled)))
}

fn invoice_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no invoice {id:?}")))
}

/// Runs blocking billing work off the async threads.
async fn run<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    error: fn(E) -> ApiError,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(error)
}

fn payment_error(error: PaymentError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        PaymentError::UnknownProvider(_) => {
            ApiError::bad_request("unknown_provider", error.to_string())
        }
        PaymentError::InvalidMethod(_) => {
            ApiError::bad_request("invalid_payment_method", error.to_string())
        }
        PaymentError::MethodNotFound(_) => ApiError::not_found(error.to_string()),
        PaymentError::TooManyMethods => ApiError::new(
            StatusCode::CONFLICT,
            "too_many_payment_methods",
            error.to_string(),
        ),
        PaymentError::NotPayable { .. } => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", error.to_string())
        }
        PaymentError::AlreadyPaying { .. } => {
            ApiError::new(StatusCode::CONFLICT, "payment_under_way", error.to_string())
        }
        PaymentError::PaymentNotFound(_) => ApiError::not_found(error.to_string()),
        PaymentError::NotRefundable { .. } | PaymentError::AlreadyRefunded { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_refundable", error.to_string())
        }
        PaymentError::RefundFailed(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "refund_failed", error.to_string())
        }
        PaymentError::Forged(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            error.to_string(),
        ),
        PaymentError::BadNotification(_) => {
            ApiError::bad_request("invalid_notification", error.to_string())
        }
        PaymentError::Meter(meter) => {
            let plugin = match &meter {
                crate::metering::MeterError::Plugin(crate::plugins::PluginError::NotInstalled(
                    name,
                )) => name.clone(),
                _ => String::new(),
            };
            super::v1::meter_error(&plugin, meter)
        }
        PaymentError::Purchase(purchase) => purchase_error(purchase),
        PaymentError::Subscription(subscription) => subscription_error(subscription),
        PaymentError::Invoice(InvoiceError::NotFound(_)) => ApiError::not_found(error.to_string()),
        PaymentError::Invoice(InvoiceError::WrongState { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", error.to_string())
        }
        other => ApiError::internal(other),
    }
}

fn method_json(method: &PaymentMethod) -> serde_json::Value {
    serde_json::json!({
        "id": method.id,
        "provider": method.provider,
        "method": method.method.as_str(),
        "label": method.label,
        "default": method.is_default,
        "created_at": method.created_at.to_string(),
    })
}

fn payment_json(payment: &Payment) -> serde_json::Value {
    serde_json::json!({
        "id": payment.id,
        "invoice": payment.invoice,
        "payment_method": payment.payment_method,
        "provider": payment.provider,
        "amount": money(payment.amount_minor, &payment.currency),
        "currency": payment.currency,
        "state": payment.state.as_str(),
        "provider_reference": payment.provider_reference,
        "failure_reason": payment.failure_reason,
        "instructions": payment.instructions,
        "created_at": payment.created_at.to_string(),
        "settled_at": payment.settled_at.map(|at| at.to_string()),
    })
}

/// `GET /billing/payment-methods`: the tenant's saved payment methods.
pub(super) async fn list_methods(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant()?;
    let payments = state.payments.clone();
    let methods = run(move || payments.methods(tenant), payment_error).await?;
    Ok(Json(serde_json::json!({
        "payment_methods": methods.iter().map(method_json).collect::<Vec<_>>(),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodBody {
    provider: String,
    method: String,
    #[serde(default)]
    token: String,
    label: Option<String>,
    #[serde(default)]
    default: bool,
}

/// `POST /billing/payment-methods` `{"provider": "card", "method": "card",
/// "token": "pm_..."}` (a tenant admin): saves the provider's token for a
/// way to pay; never a card number.
pub(super) async fn add_method(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let body: MethodBody = json_body(&read_body(body, state.body_bytes_max).await?)?;
    let method = MethodKind::parse(&body.method).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_payment_method",
            format!(
                "method: {:?} is not card, paypal or bank_transfer",
                body.method
            ),
        )
    })?;
    let new = NewMethod {
        provider: body.provider,
        method,
        token: body.token,
        label: body.label,
        make_default: body.default,
    };
    let payments = state.payments.clone();
    let saved = run(move || payments.add_method(tenant, &new), payment_error).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({ "payment_method": method_json(&saved) })),
    )
        .into_response())
}

/// `DELETE /billing/payment-methods/{id}` (a tenant admin).
pub(super) async fn remove_method(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no payment method {id:?}")))?;
    let payments = state.payments.clone();
    run(move || payments.remove_method(tenant, id), payment_error).await?;
    Ok(Json(serde_json::json!({ "removed": id })))
}

/// `GET /billing/payments`: the tenant's payments, newest first.
pub(super) async fn list_payments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant()?;
    let payments = state.payments.clone();
    let list = run(move || payments.list(tenant), payment_error).await?;
    Ok(Json(serde_json::json!({
        "payments": list.iter().map(payment_json).collect::<Vec<_>>(),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    payment_method: i64,
}

/// `POST /billing/invoices/{id}/pay` `{"payment_method": 3}` (a tenant
/// admin): pays an open invoice through the method's provider.
pub(super) async fn pay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: PayBody = json_body(&bytes)?;
    let invoice = invoice_id(&id)?;
    let payments = state.payments.clone();
    let work = async move {
        let payment = run(
            move || payments.pay(tenant, invoice, body.payment_method),
            payment_error,
        )
        .await?;
        Ok((
            axum::http::StatusCode::CREATED,
            serde_json::json!({ "payment": payment_json(&payment) }),
        ))
    };
    let route = format!("pay invoice {invoice}");
    Ok(idempotency::once(&state, tenant, &route, &headers, &bytes, work).await)
}

fn refund_json(refund: &Refund, currency: &str) -> serde_json::Value {
    serde_json::json!({
        "id": refund.id,
        "payment": refund.payment,
        "amount": money(refund.amount_minor, currency),
        "state": refund.state.as_str(),
        "provider_reference": refund.provider_reference,
        "failure_reason": refund.failure_reason,
        "credit_note": refund.credit_note,
        "credits_revoked": refund.credits_revoked.to_string(),
        "created_at": refund.created_at.to_string(),
    })
}

/// `POST /billing/payments/{id}/refund` `{"tenant": 1}` (the operator):
/// gives a succeeded payment back in full: the money through the
/// provider, the credits it bought that are not spent taken back, and a
/// credit note.
pub(super) async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let body: PaymentReceived = json_body(&read_body(body, state.body_bytes_max).await?)?;
    let payment: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no payment {id:?}")))?;
    let tenant = TenantId(body.tenant);
    let payments = state.payments.clone();
    let (refund, note) = run(move || payments.refund(tenant, payment), payment_error).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({
            "refund": refund_json(&refund, &note.currency),
            "credit_note": document_json(&note),
        })),
    )
        .into_response())
}

/// `GET /billing/receipts/{id}` (the id of a succeeded payment), as JSON,
/// `.pdf` or `.html`: the receipt for that payment.
pub(super) async fn receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let not_found = || ApiError::not_found(format!("this tenant has no receipt {id:?}"));
    let (payment, format) = split_format(&id).ok_or_else(not_found)?;
    let payments = state.payments.clone();
    let platform = state.issuer.clone();
    let found = run(
        move || {
            let (payment, invoice, method) = payments.receipt(tenant, payment)?;
            let mut conn = payments.database.get()?;
            let customer = crate::tenants::find(&mut conn, tenant)
                .map_err(|error| anyhow::anyhow!(error))?
                .name;
            let address = crate::branding::issuer_address(&mut conn, &invoice, &platform)
                .map_err(|error| anyhow::anyhow!(error))?;
            Ok((payment, invoice, method, customer, address))
        },
        payment_error,
    )
    .await;
    let (payment, invoice, method, customer, address) = match found {
        Err(error) if error.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(not_found());
        }
        other => other?,
    };
    let sheet = Sheet::receipt(
        &invoice,
        &render::Paid {
            payment: payment.id,
            paid_at: payment.settled_at.unwrap_or(payment.created_at),
            method: &method,
            provider_reference: payment.provider_reference.as_deref(),
        },
        &Parties {
            issuer_address: &address,
            customer: &customer,
            credited_number: None,
        },
    );
    if format == Format::Json {
        return Ok(Json(serde_json::json!({
            "receipt": {
                "number": sheet.number,
                "date": sheet.date,
                "payment": payment_json(&payment),
                "invoice": document_json(&invoice),
                "paid_with": method,
            }
        }))
        .into_response());
    }
    let name = sheet.number.clone();
    rendered(&sheet, &name, format)
}

/// The rate-limit key of providers' notifications: tenant ids are positive.
const NOTIFICATIONS_RATE_KEY: i64 = -1;

/// `POST /billing/providers/{provider}/notifications`: where a payment
/// provider sends its notifications. No API key: the provider plugin
/// verifies the signature, and a forged one is refused with 401.
pub(super) async fn notification(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Unauthenticated, so every provider's notifications share one rate (a
    // tenant's), kept under a key no tenant has.
    if state
        .rate_limits
        .check_key(&NOTIFICATIONS_RATE_KEY)
        .is_err()
    {
        let mut error = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "notifications are arriving faster than this host takes them; retry later",
        );
        error.retry_after = Some(1);
        return Err(error);
    }
    let body = read_body(body, state.body_bytes_max).await?;
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some(crate::runtime::Field {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect();
    let callback = crate::runtime::Callback {
        headers,
        body: body.to_vec(),
    };
    let payments = state.payments.clone();
    let notified = run(move || payments.notify(&provider, callback), payment_error).await?;
    Ok(Json(serde_json::json!({
        "events": notified.events,
        "duplicates": notified.duplicates,
        "applied": notified.applied,
    })))
}
