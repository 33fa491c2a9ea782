//! The analytics endpoints: the revenue report and the monthly financial
//! report (operator; a reseller's own through `/resellers/{id}`), usage platform-wide (operator) and per tenant, and
//! ROI. Every table they answer is also CSV with `format=csv` (and
//! `table=` where a report holds several).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::v1::{Caller, credits_json, params};
use crate::analytics::csv::Table;
use crate::analytics::report::{self, Granularity, Params};
use crate::analytics::{Seller, roi, usage};
use crate::auth::Role;
use crate::config::{AnalyticsSettings, Pricing, Settings};
use crate::ids::TenantId;
use crate::units::{Clock as _, Currency, SystemClock};

/// What the analytics endpoints need of the configuration.
#[derive(Debug, Clone)]
pub struct Analytics {
    pub settings: AnalyticsSettings,
    /// The pricing currency and a credit's list price in it (for ROI).
    pub currency: Currency,
    pub credit_price: Decimal,
}

impl Analytics {
    pub fn new(settings: &Settings, pricing: &Pricing) -> Analytics {
        Analytics {
            settings: settings.analytics.clone(),
            currency: pricing.currency,
            credit_price: pricing.credit_price,
        }
    }
}

impl Default for Analytics {
    fn default() -> Analytics {
        Analytics {
            settings: Settings::default().analytics,
            currency: Currency::parse("USD").expect("a known currency"),
            credit_price: Decimal::new(1, 2),
        }
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", message)
}

fn month_param(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<NaiveDate>, ApiError> {
    query
        .get(name)
        .map(|text| {
            NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
                .map_err(|_| invalid(format!("{name} must be a month as YYYY-MM, not {text:?}")))
        })
        .transpose()
}

fn day_param(query: &BTreeMap<String, String>, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    query
        .get(name)
        .map(|text| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| invalid(format!("{name} must be a date as YYYY-MM-DD, not {text:?}")))
        })
        .transpose()
}

fn today() -> NaiveDate {
    SystemClock.now().to_chrono().date_naive()
}

/// `from`/`to` months, `to` included; the last twelve months by default.
fn month_range(query: &BTreeMap<String, String>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = month_param(query, "to")?.unwrap_or_else(|| report::month_start(today()));
    let from = month_param(query, "from")?.unwrap_or(to - Months::new(11));
    let months = report::months(from, to).len() as u32;
    if from > to || months > report::MONTHS_MAX {
        return Err(invalid(format!(
            "from must not be after to, and the range at most {} months",
            report::MONTHS_MAX
        )));
    }
    Ok((from, to))
}

/// `from`/`to` days, `to` included; the last 30 days by default.
fn day_range(query: &BTreeMap<String, String>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = day_param(query, "to")?.unwrap_or_else(today);
    let from = day_param(query, "from")?.unwrap_or(to - chrono::Days::new(29));
    let days = (to - from).num_days() + 1;
    if !(1..=crate::metering::DAILY_RANGE_DAYS_MAX).contains(&days) {
        return Err(invalid(format!(
            "from must not be after to, and the range at most {} days",
            crate::metering::DAILY_RANGE_DAYS_MAX
        )));
    }
    Ok((from, to))
}

/// Whether the answer is CSV (`format=csv`) or JSON (the default).
fn wants_csv(query: &BTreeMap<String, String>) -> Result<bool, ApiError> {
    match query.get("format").map(String::as_str) {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(invalid(format!("format is json or csv, not {other:?}"))),
    }
}

pub(super) fn csv_response(table: &Table, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        table.to_csv(),
    )
        .into_response()
}

/// A page of a list as JSON, or, with `format=csv`, its rows (the array
/// under `rows_key`) as CSV, the next page's cursor in `X-Next-Cursor`.
pub(super) fn json_or_csv(
    query: &BTreeMap<String, String>,
    body: Value,
    rows_key: &str,
    columns: &[&'static str],
    name: &str,
) -> Result<Response, ApiError> {
    if !wants_csv(query)? {
        return Ok(Json(body).into_response());
    }
    let rows = body[rows_key].as_array().cloned().unwrap_or_default();
    let mut response = csv_response(&Table::from_json(columns, &rows), name);
    if let Some(Ok(cursor)) = body["next_cursor"]
        .as_str()
        .map(axum::http::HeaderValue::from_str)
    {
        response.headers_mut().insert("x-next-cursor", cursor);
    }
    Ok(response)
}

/// The tenant a report is about: a tenant's own (another tenant's is not
/// found), or, for the operator, the one `tenant=` names.
fn report_tenant(caller: Caller, query: &BTreeMap<String, String>) -> Result<TenantId, ApiError> {
    let named = query
        .get("tenant")
        .map(|text| {
            text.parse::<i64>()
                .map(TenantId)
                .map_err(|_| invalid(format!("tenant must be a tenant id, not {text:?}")))
        })
        .transpose()?;
    match (caller.0.role, caller.0.tenant, named) {
        (Role::Operator, _, Some(tenant)) => Ok(tenant),
        (Role::Operator, _, None) => Err(invalid(
            "the operator names the tenant: tenant=<id>".to_owned(),
        )),
        (_, Some(own), Some(tenant)) if tenant != own => {
            Err(ApiError::not_found(format!("no tenant {tenant}")))
        }
        (_, Some(own), _) => Ok(own),
        _ => Err(ApiError::forbidden("this endpoint needs a tenant's key")),
    }
}

/// The revenue report over the months `from` to `to`, in the currency
/// `currency=` names (the pricing currency by default), with the
/// configured analytics settings.
async fn run_report(
    state: &AppState,
    seller: Seller,
    query: &BTreeMap<String, String>,
    from: NaiveDate,
    to: NaiveDate,
    granularity: Granularity,
) -> Result<Value, ApiError> {
    let currency = match query.get("currency") {
        None => state.analytics.currency,
        Some(text) => Currency::parse(text).map_err(|error| invalid(error.to_string()))?,
    };
    let settings = &state.analytics.settings;
    let params = Params {
        seller,
        currency: currency.code().to_owned(),
        digits: currency.minor_digits(),
        from,
        to,
        granularity,
        top_customers: settings.top_customers,
        forecast_months: settings.forecast_months,
        at_risk_usage_drop: settings.at_risk_usage_drop,
        today: today(),
    };
    state
        .database
        .run(move |conn| report::revenue(conn, &params).map_err(anyhow::Error::from))
        .await
        .map_err(ApiError::internal)
}

/// `GET /billing/revenue?from=YYYY-MM&to=YYYY-MM&granularity=&currency=`
/// (operator): see `analytics::report` for every definition.
pub(super) async fn revenue(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    revenue_of(&state, Seller::Platform, &query).await
}

/// `GET /resellers/{id}/revenue` (operator, or the reseller): the revenue
/// report of what the reseller sold its tenants, at its retail prices,
/// with the parameters and tables of `/billing/revenue`.
pub(super) async fn reseller_revenue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (id, _) = super::resellers::scoped(&state, caller, &id).await?;
    revenue_of(&state, Seller::Reseller(id), &query).await
}

/// The revenue report of `seller`'s sales, as JSON or as one of its
/// tables in CSV.
async fn revenue_of(
    state: &AppState,
    seller: Seller,
    query: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    params(
        query,
        &["from", "to", "granularity", "currency", "format", "table"],
    )?;
    let (from, to) = month_range(query)?;
    let granularity = match query.get("granularity") {
        None => Granularity::Month,
        Some(text) => Granularity::parse(text)
            .ok_or_else(|| invalid(format!("granularity is day, week or month, not {text:?}")))?,
    };
    let csv = wants_csv(query)?;
    let table = query.get("table").cloned();
    let report = run_report(state, seller, query, from, to, granularity).await?;
    if !csv {
        if table.is_some() {
            return Err(invalid("table= goes with format=csv".to_owned()));
        }
        return Ok(Json(report).into_response());
    }
    let table = table.as_deref().unwrap_or("months");
    let (columns, rows): (&[&'static str], &Value) = match table {
        "months" => (
            &[
                "month",
                "mrr_start",
                "new_mrr",
                "expansion_mrr",
                "contraction_mrr",
                "churn_mrr",
                "reactivation_mrr",
                "net_new_mrr",
                "mrr_end",
                "growth",
                "customers_start",
                "new_customers",
                "churned_customers",
                "customers_end",
                "customer_churn_rate",
                "gross_mrr_churn_rate",
                "net_mrr_churn_rate",
            ],
            &report["mrr"]["months"],
        ),
        "series" => (
            &[
                "period",
                "invoices_paid",
                "paid",
                "refunded",
                "revenue",
                "recurring",
                "non_recurring",
                "tax",
            ],
            &report["series"],
        ),
        "payment_methods" => (
            &["method", "invoices_paid", "paid", "share"],
            &report["payment_methods"],
        ),
        "top_customers" => (
            &["tenant", "name", "revenue", "mrr"],
            &report["top_customers"],
        ),
        "at_risk" => (
            &["tenant", "mrr", "reason"],
            &report["segments"]["at_risk_customers"],
        ),
        "forecast" => (
            &["month", "revenue", "low", "high"],
            &report["forecast"]["months"],
        ),
        other => {
            return Err(invalid(format!(
                "table is months, series, payment_methods, top_customers, at_risk or forecast, not {other:?}"
            )));
        }
    };
    let rows = rows.as_array().cloned().unwrap_or_default();
    Ok(csv_response(
        &Table::from_json(columns, &rows),
        &format!("revenue-{table}"),
    ))
}

/// `GET /billing/reports/monthly?month=YYYY-MM` (operator): the month's
/// financial report: revenue by source and by payment method, refunds,
/// tax, MRR and its movements, customers and churn. JSON, or CSV as
/// `section,item,value` rows.
pub(super) async fn monthly_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    monthly_report_of(&state, Seller::Platform, &query).await
}

/// `GET /resellers/{id}/reports/monthly` (operator, or the reseller): the
/// month's financial report of what the reseller sold its tenants.
pub(super) async fn reseller_monthly_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (id, _) = super::resellers::scoped(&state, caller, &id).await?;
    monthly_report_of(&state, Seller::Reseller(id), &query).await
}

/// The month's financial report of `seller`'s sales, as JSON or CSV.
async fn monthly_report_of(
    state: &AppState,
    seller: Seller,
    query: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    params(query, &["month", "currency", "format"])?;
    let current = report::month_start(today());
    let month = month_param(query, "month")?.unwrap_or(current - Months::new(1));
    let csv = wants_csv(query)?;
    let full = run_report(state, seller, query, month, month, Granularity::Month).await?;
    let mrr_month = full["mrr"]["months"][0].clone();
    let report = json!({
        "month": full["from"],
        "currency": full["currency"],
        "complete": month < current,
        "revenue": full["revenue"],
        "payment_methods": full["payment_methods"],
        "mrr": {
            "mrr": full["mrr"]["mrr"],
            "arr": full["mrr"]["arr"],
            "customers": full["mrr"]["customers"],
            "arpa": full["mrr"]["arpa"],
            "arpu": full["mrr"]["arpu"],
            "ltv": full["mrr"]["ltv"],
            "ltv_basis": full["mrr"]["ltv_basis"],
            "movements": mrr_month,
        },
        "top_customers": full["top_customers"],
    });
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut table = Table::new(&["section", "item", "value"]);
    let mut section = |name: &str, object: &Value| {
        if let Some(object) = object.as_object() {
            for (item, value) in object {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                table.push(vec![name.to_owned(), item.clone(), value]);
            }
        }
    };
    section("revenue", &report["revenue"]);
    section("mrr", &report["mrr"]["movements"]);
    for key in [
        "mrr",
        "arr",
        "customers",
        "arpa",
        "arpu",
        "ltv",
        "ltv_basis",
    ] {
        section("mrr", &json!({ key: report["mrr"][key] }));
    }
    for method in report["payment_methods"].as_array().into_iter().flatten() {
        let name = format!("payment_method:{}", method["method"].as_str().unwrap_or(""));
        section(
            &name,
            &json!({ "invoices_paid": method["invoices_paid"], "paid": method["paid"] }),
        );
    }
    for customer in report["top_customers"].as_array().into_iter().flatten() {
        let name = format!("top_customer:{}", customer["tenant"]);
        section(
            &name,
            &json!({ "name": customer["name"], "revenue": customer["revenue"] }),
        );
    }
    let name = format!("financial-report-{}", month.format("%Y-%m"));
    Ok(csv_response(&table, &name))
}

fn usage_json(line: &usage::UsageLine) -> Value {
    json!({
        "day": line.day,
        "plugin": line.plugin,
        "function": line.function,
        "calls": line.sums.calls,
        "failed": line.sums.failed,
        "units": line.sums.units,
        "charged": credits_json(line.sums.credits()),
        "fuel": line.sums.fuel,
        "duration_us": line.sums.duration_us,
    })
}

const USAGE_COLUMNS: [&str; 9] = [
    "day",
    "plugin",
    "function",
    "calls",
    "failed",
    "units",
    "charged",
    "fuel",
    "duration_us",
];

fn usage_answer(
    lines: Vec<usage::UsageLine>,
    from: NaiveDate,
    to: NaiveDate,
    csv: bool,
    name: &str,
    scope: Value,
) -> Response {
    let totals = usage::by_function(&lines);
    let rows: Vec<Value> = lines.iter().map(usage_json).collect();
    if csv {
        return csv_response(&Table::from_json(&USAGE_COLUMNS, &rows), name);
    }
    let totals: Vec<Value> = totals
        .iter()
        .map(|line| {
            let mut row = usage_json(line);
            row.as_object_mut().expect("an object").remove("day");
            row
        })
        .collect();
    Json(json!({
        "scope": scope,
        "from": from.to_string(),
        "to": to.to_string(),
        "usage": rows,
        "by_function": totals,
    }))
    .into_response()
}

/// The tenant a usage report is about (`report_tenant`), its `from` and
/// `to` days (`to` included), and its use over them by day, plugin and
/// function.
async fn tenant_lines(
    state: &AppState,
    caller: Caller,
    query: &BTreeMap<String, String>,
) -> Result<(TenantId, NaiveDate, NaiveDate, Vec<usage::UsageLine>), ApiError> {
    params(query, &["from", "to", "tenant", "format"])?;
    let tenant = report_tenant(caller, query)?;
    let (from, to) = day_range(query)?;
    wants_csv(query)?;
    let (first, end) = (from.to_string(), (to + chrono::Days::new(1)).to_string());
    let lines = state
        .database
        .run(move |conn| {
            usage::tenant_daily(conn, tenant, &first, &end).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok((tenant, from, to, lines))
}

/// `GET /usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: a tenant's calls, units
/// and credits by day, plugin and function, and summed by function; `to`
/// is included; the last 30 days by default. The operator names the
/// tenant with `tenant=`.
pub(super) async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (tenant, from, to, lines) = tenant_lines(&state, caller, &query).await?;
    let csv = wants_csv(&query)?;
    Ok(usage_answer(
        lines,
        from,
        to,
        csv,
        "usage",
        json!({ "tenant": tenant.0 }),
    ))
}

/// `GET /analytics/usage?from=&to=` (operator): every tenant's use summed,
/// by day, plugin and function.
pub(super) async fn platform_usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    params(&query, &["from", "to", "format"])?;
    let (from, to) = day_range(&query)?;
    let csv = wants_csv(&query)?;
    let (first, end) = (from.to_string(), (to + chrono::Days::new(1)).to_string());
    let lines = state
        .database
        .run(move |conn| usage::platform_daily(conn, &first, &end).map_err(anyhow::Error::from))
        .await
        .map_err(ApiError::internal)?;
    Ok(usage_answer(
        lines,
        from,
        to,
        csv,
        "platform-usage",
        json!("platform"),
    ))
}

/// `GET /analytics/roi?from=YYYY-MM-DD&to=YYYY-MM-DD`: what the tenant's
/// calls would have cost by hand (`[[analytics.baselines]]` at
/// `analytics.hourly_cost`), against what their credits cost.
pub(super) async fn roi(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (tenant, from, to, lines) = tenant_lines(&state, caller, &query).await?;
    let csv = wants_csv(&query)?;
    let analytics = &state.analytics;
    let digits = analytics.currency.minor_digits();
    let roi = roi::compute(
        &usage::by_function(&lines),
        &analytics.settings,
        analytics.credit_price,
        digits,
    );
    let money = |amount: Decimal| {
        let mut amount = amount;
        amount.rescale(digits);
        amount.to_string()
    };
    let rows: Vec<Value> = roi
        .lines
        .iter()
        .map(|line| {
            json!({
                "plugin": line.plugin,
                "function": line.function,
                "action": line.label,
                "quantity": line.quantity,
                "minutes_by_hand": line.minutes.normalize().to_string(),
                "manual_cost": money(line.manual_cost),
                "credits": line.credits.normalize().to_string(),
                "credits_cost": money(line.credits_cost),
                "saved": money(line.manual_cost - line.credits_cost),
            })
        })
        .collect();
    if csv {
        let columns = [
            "plugin",
            "function",
            "action",
            "quantity",
            "minutes_by_hand",
            "manual_cost",
            "credits",
            "credits_cost",
            "saved",
        ];
        return Ok(csv_response(&Table::from_json(&columns, &rows), "roi"));
    }
    Ok(Json(json!({
        "tenant": tenant.0,
        "from": from.to_string(),
        "to": to.to_string(),
        "currency": analytics.currency.code(),
        "hourly_cost": money(analytics.settings.hourly_cost),
        "hours_saved": roi.hours_saved.to_string(),
        "manual_cost": money(roi.manual_cost),
        "credits_cost": money(roi.credits_cost),
        "saved": money(roi.saved),
        "lines": rows,
    }))
    .into_response())
}
