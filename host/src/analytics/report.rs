//! The revenue report, from the rollups only. Definitions (ChartMogul's
//! where it publishes one):
//!
//! - **Revenue**: paid invoices before tax, on the day they were paid,
//!   less credit notes (refunds) before tax, on the day they were issued.
//!   `recurring` is what subscriptions paid, `non_recurring` what credit
//!   packages paid; tax is reported beside, never in revenue.
//! - **MRR** at the end of a month: the sum of every customer's MRR then
//!   (see `mrr`), rounded to the minor unit once. **ARR** = MRR × 12.
//!   **Growth** = (MRR at the end − MRR at the start) ÷ MRR at the start.
//! - **Customers**: tenants with MRR. **ARPA** = MRR ÷ customers at the
//!   end. **ARPU** = the period's revenue ÷ tenants that paid anything in
//!   it (subscriptions and packages alike).
//! - **Customer churn rate** of a month = customers lost (churn movements)
//!   ÷ customers at its start. **Gross MRR churn rate** = (churn +
//!   contraction) ÷ MRR at the start; **net MRR churn rate** = (churn +
//!   contraction − expansion − reactivation) ÷ MRR at the start. For the
//!   whole period each is the monthly rate weighted by the months' starting
//!   customers or MRR: Σ numerators ÷ Σ denominators.
//! - **LTV** = ARPA ÷ the period's monthly customer churn rate. When no
//!   customer churned in the period the rate over all history is used; when
//!   none ever churned, a lifetime of 60 months is assumed (`basis` says
//!   which).
//! - **Segments**, now: *active* customers; *at risk*: past due, or their
//!   credits used in the last complete month fell by at least
//!   `at_risk_usage_drop` against the month before; *churned*: had MRR and
//!   have none.
//! - **Forecast**: Holt's linear trend over the months' revenue (see
//!   `forecast`), complete months only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Months, NaiveDate};
use diesel::AggregateExpressionMethods as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::Seller;
use super::forecast;
use super::mrr::{self, KINDS};
use crate::db::DbConnection;
use crate::db::schema::{mrr_customers, revenue_daily, revenue_monthly, subscriptions, tenants};

/// How the revenue series is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Week,
    Month,
}

impl Granularity {
    pub fn parse(text: &str) -> Option<Granularity> {
        Some(match text {
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            _ => return None,
        })
    }

    fn bucket(self, day: NaiveDate) -> String {
        match self {
            Granularity::Day => day.to_string(),
            // ISO weeks, named by their Monday.
            Granularity::Week => (day
                - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())))
            .to_string(),
            Granularity::Month => day.format("%Y-%m").to_string(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }
}

/// What the report covers: whole months, `from` to `to` included.
#[derive(Clone, Debug)]
pub struct Params {
    /// Whose sales: the platform's, or one reseller's to its tenants.
    pub seller: Seller,
    pub currency: String,
    /// The currency's minor digits.
    pub digits: u32,
    /// First days of the first and the last month.
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub top_customers: u32,
    pub forecast_months: u32,
    pub at_risk_usage_drop: Decimal,
    /// Today: which month is not complete yet.
    pub today: NaiveDate,
}

/// Longest report, in months.
pub const MONTHS_MAX: u32 = 120;

/// First day of the month of `day`.
pub fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("every month has a first day")
}

fn month_key(day: NaiveDate) -> String {
    day.format("%Y-%m").to_string()
}

/// The months from `from` to `to`, included.
pub fn months(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    let mut months = Vec::new();
    let mut month = month_start(from);
    while month <= to {
        months.push(month);
        month = month + Months::new(1);
    }
    months
}

/// One month of MRR: where it started, how it moved, where it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MrrMonth {
    pub month: String,
    pub start_12: i64,
    /// By kind, in [`KINDS`] order.
    pub deltas_12: [i64; 5],
    pub counts: [i64; 5],
    pub end_12: i64,
    pub customers_start: i64,
    pub customers_end: i64,
}

impl MrrMonth {
    fn kind(&self, kind: &str) -> (i64, i64) {
        let index = KINDS.iter().position(|k| *k == kind).expect("a known kind");
        (self.counts[index], self.deltas_12[index])
    }
}

/// MRR month by month over `months`, from every movement up to the last.
pub fn mrr_months(
    conn: &mut DbConnection,
    seller: Seller,
    currency: &str,
    months: &[NaiveDate],
) -> QueryResult<Vec<MrrMonth>> {
    let Some(last) = months.last() else {
        return Ok(Vec::new());
    };
    let moved = mrr::monthly(conn, seller, currency, &month_key(*last))?;
    let mut moved = moved.into_iter().peekable();
    let (mut mrr_12, mut customers) = (0_i64, 0_i64);
    let first = month_key(months[0]);
    // Everything before the first month makes where it starts.
    while let Some(month) = moved.next_if(|month| month.month < first) {
        mrr_12 += month.deltas_12.iter().sum::<i64>();
        customers += month.counts[0] + month.counts[4] - month.counts[3];
    }
    let mut out = Vec::with_capacity(months.len());
    for month in months {
        let key = month_key(*month);
        let mut row = MrrMonth {
            month: key.clone(),
            start_12: mrr_12,
            customers_start: customers,
            ..MrrMonth::default()
        };
        if let Some(movements) = moved.next_if(|moved| moved.month == key) {
            row.deltas_12 = movements.deltas_12;
            row.counts = movements.counts;
        }
        mrr_12 += row.deltas_12.iter().sum::<i64>();
        customers += row.counts[0] + row.counts[4] - row.counts[3];
        row.end_12 = mrr_12;
        row.customers_end = customers;
        out.push(row);
    }
    Ok(out)
}

/// Twelfths of a minor unit as minor units, rounded half away from zero.
pub fn minor_of_12(twelfths: i64) -> Decimal {
    (Decimal::from(twelfths) / Decimal::from(12))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
}

/// A ratio to four places, or none over zero.
pub fn rate(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    (!denominator.is_zero()).then(|| {
        (numerator / denominator).round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero)
    })
}

/// Minor units as a decimal amount: 16667 → 166.67.
pub fn major(minor: Decimal, digits: u32) -> Decimal {
    let mut amount = minor / Decimal::from(10_i64.pow(digits));
    amount.rescale(digits);
    amount
}

/// ARPA in minor units: MRR (in twelfths) over customers, rounded once.
pub fn arpa_minor(mrr_12: i64, customers: i64) -> Option<Decimal> {
    (customers > 0).then(|| {
        (Decimal::from(mrr_12) / Decimal::from(12 * customers))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
    })
}

/// Lifetime assumed when no customer ever churned.
pub const LTV_MONTHS_CAP: i64 = 60;

/// LTV in minor units and the basis it was computed on.
pub fn ltv(
    arpa_minor: Option<Decimal>,
    period_churn: Option<Decimal>,
    history_churn: Option<Decimal>,
) -> (Option<Decimal>, &'static str) {
    let Some(arpa) = arpa_minor else {
        return (None, "no customers");
    };
    let round =
        |value: Decimal| value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    match (period_churn, history_churn) {
        (Some(rate), _) if !rate.is_zero() => (Some(round(arpa / rate)), "period churn rate"),
        (_, Some(rate)) if !rate.is_zero() => (
            Some(round(arpa / rate)),
            "no churn in the period: churn rate over all history",
        ),
        _ => (
            Some(arpa * Decimal::from(LTV_MONTHS_CAP)),
            "no churn ever: a 60-month lifetime is assumed",
        ),
    }
}

#[derive(QueryableByName)]
struct TopRow {
    #[diesel(sql_type = BigInt)]
    tenant_id: i64,
    #[diesel(sql_type = BigInt)]
    net: i64,
}

/// `?` placeholders as PostgreSQL numbers them.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn top_customers(
    conn: &mut DbConnection,
    seller: Seller,
    currency: &str,
    from: &str,
    to: &str,
    limit: i64,
) -> QueryResult<Vec<(i64, i64)>> {
    const SQL: &str = "SELECT tenant_id, CAST(SUM(paid_minor - refunded_minor) AS BIGINT) AS net \
         FROM revenue_monthly WHERE seller = ? AND currency = ? AND month >= ? AND month <= ? \
         GROUP BY tenant_id ORDER BY net DESC, tenant_id LIMIT ?";
    let rows: Vec<TopRow> = match conn {
        DbConnection::Sqlite(conn) => diesel::sql_query(SQL)
            .bind::<BigInt, _>(seller.key())
            .bind::<Text, _>(currency)
            .bind::<Text, _>(from)
            .bind::<Text, _>(to)
            .bind::<BigInt, _>(limit)
            .load(conn)?,
        DbConnection::Postgres(conn) => diesel::sql_query(numbered(SQL))
            .bind::<BigInt, _>(seller.key())
            .bind::<Text, _>(currency)
            .bind::<Text, _>(from)
            .bind::<Text, _>(to)
            .bind::<BigInt, _>(limit)
            .load(conn)?,
    };
    Ok(rows
        .into_iter()
        .map(|row| (row.tenant_id, row.net))
        .collect())
}

/// The report, as the API answers it: amounts as decimal strings in the
/// currency, rates as fractions to four places.
pub fn revenue(conn: &mut DbConnection, p: &Params) -> QueryResult<Value> {
    let digits = p.digits;
    let money = |minor: Decimal| major(minor, digits).to_string();
    let money_i = |minor: i64| money(Decimal::from(minor));
    let report_months = months(p.from, p.to);
    let end = p.to + Months::new(1);
    let (first_day, end_day) = (p.from.to_string(), end.to_string());
    let (first_month, last_month) = (month_key(p.from), month_key(p.to));

    // Revenue, from the daily rollup.
    type DayRow = (String, String, String, i64, i64, i64, i64, i64, i64);
    let rows: Vec<DayRow> = revenue_daily::table
        .filter(revenue_daily::seller.eq(p.seller.key()))
        .filter(revenue_daily::currency.eq(&p.currency))
        .filter(revenue_daily::day.ge(&first_day))
        .filter(revenue_daily::day.lt(&end_day))
        .select((
            revenue_daily::day,
            revenue_daily::source,
            revenue_daily::method,
            revenue_daily::invoices,
            revenue_daily::paid_minor,
            revenue_daily::paid_tax_minor,
            revenue_daily::refunds,
            revenue_daily::refunded_minor,
            revenue_daily::refunded_tax_minor,
        ))
        .load(conn)?;
    #[derive(Default, Clone, Copy)]
    struct Sum {
        invoices: i64,
        paid: i64,
        paid_tax: i64,
        refunds: i64,
        refunded: i64,
        refunded_tax: i64,
        recurring: i64,
        non_recurring: i64,
    }
    let mut total = Sum::default();
    let mut series: BTreeMap<String, Sum> = BTreeMap::new();
    let mut by_month: BTreeMap<String, i64> = BTreeMap::new();
    let mut methods: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (day, source, method, invoices, paid, paid_tax, refunds, refunded, refunded_tax) in rows {
        let date = NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap_or(p.from);
        for sum in [
            &mut total,
            series.entry(p.granularity.bucket(date)).or_default(),
        ] {
            sum.invoices += invoices;
            sum.paid += paid;
            sum.paid_tax += paid_tax;
            sum.refunds += refunds;
            sum.refunded += refunded;
            sum.refunded_tax += refunded_tax;
            match source.as_str() {
                "subscription" => sum.recurring += paid - refunded,
                "package" => sum.non_recurring += paid - refunded,
                _ => {}
            }
        }
        *by_month.entry(day[..7].to_owned()).or_default() += paid - refunded;
        let entry = methods.entry(method).or_default();
        entry.0 += invoices;
        entry.1 += paid;
    }
    let net = total.paid - total.refunded;
    let series: Vec<Value> = series
        .iter()
        .map(|(period, sum)| {
            json!({
                "period": period,
                "invoices_paid": sum.invoices,
                "paid": money_i(sum.paid),
                "refunded": money_i(sum.refunded),
                "revenue": money_i(sum.paid - sum.refunded),
                "recurring": money_i(sum.recurring),
                "non_recurring": money_i(sum.non_recurring),
                "tax": money_i(sum.paid_tax - sum.refunded_tax),
            })
        })
        .collect();
    let paid_total: i64 = methods.values().map(|(_, paid)| paid).sum();
    let payment_methods: Vec<Value> = methods
        .iter()
        .map(|(method, (invoices, paid))| {
            json!({
                "method": method,
                "invoices_paid": invoices,
                "paid": money_i(*paid),
                "share": rate(Decimal::from(*paid), Decimal::from(paid_total)).map(|r| r.to_string()),
            })
        })
        .collect();

    // MRR, from the monthly movements.
    let mrr = mrr_months(conn, p.seller, &p.currency, &report_months)?;
    let last = mrr.last().cloned().unwrap_or_default();
    let sum_kind = |kind: &str| -> (i64, i64) {
        mrr.iter()
            .map(|m| m.kind(kind))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (churned, churn_12) = sum_kind("churn");
    let (_, contraction_12) = sum_kind("contraction");
    let (_, expansion_12) = sum_kind("expansion");
    let (_, reactivation_12) = sum_kind("reactivation");
    let customers_months: i64 = mrr.iter().map(|m| m.customers_start).sum();
    let mrr_months_12: i64 = mrr.iter().map(|m| m.start_12).sum();
    let customer_churn = rate(Decimal::from(churned), Decimal::from(customers_months));
    let gross_churn = rate(
        Decimal::from(-(churn_12 + contraction_12)),
        Decimal::from(mrr_months_12),
    );
    let net_churn = rate(
        Decimal::from(-(churn_12 + contraction_12) - expansion_12 - reactivation_12),
        Decimal::from(mrr_months_12),
    );
    let history_churn = {
        let first = first_movement_month(conn, p.seller, &p.currency)?.unwrap_or(p.from);
        let all = mrr_months(conn, p.seller, &p.currency, &months(first, p.to))?;
        let churned: i64 = all.iter().map(|m| m.kind("churn").0).sum();
        let starts: i64 = all.iter().map(|m| m.customers_start).sum();
        rate(Decimal::from(churned), Decimal::from(starts))
    };
    let arpa = arpa_minor(last.end_12, last.customers_end);
    let (ltv_minor, ltv_basis) = ltv(arpa, customer_churn, history_churn);
    let paying: i64 = revenue_monthly::table
        .filter(revenue_monthly::seller.eq(p.seller.key()))
        .filter(revenue_monthly::currency.eq(&p.currency))
        .filter(revenue_monthly::month.ge(&first_month))
        .filter(revenue_monthly::month.le(&last_month))
        .filter(revenue_monthly::paid_minor.gt(0))
        .select(diesel::dsl::count(revenue_monthly::tenant_id).aggregate_distinct())
        .get_result(conn)?;
    let arpu = (paying > 0).then(|| {
        (Decimal::from(net) / Decimal::from(paying))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
    });
    let months_json: Vec<Value> = mrr
        .iter()
        .map(|m| {
            let (new_customers, _) = m.kind("new");
            let (churned, _) = m.kind("churn");
            let (_, churn) = m.kind("churn");
            let (_, contraction) = m.kind("contraction");
            let (_, expansion) = m.kind("expansion");
            let (_, reactivation) = m.kind("reactivation");
            let mut row = json!({
                "month": m.month,
                "mrr_start": money(minor_of_12(m.start_12)),
                "mrr_end": money(minor_of_12(m.end_12)),
                "net_new_mrr": money(minor_of_12(m.end_12) - minor_of_12(m.start_12)),
                "customers_start": m.customers_start,
                "customers_end": m.customers_end,
                "new_customers": new_customers,
                "churned_customers": churned,
                "growth": rate(Decimal::from(m.end_12 - m.start_12), Decimal::from(m.start_12)).map(|r| r.to_string()),
                "customer_churn_rate": rate(Decimal::from(churned), Decimal::from(m.customers_start)).map(|r| r.to_string()),
                "gross_mrr_churn_rate": rate(Decimal::from(-(churn + contraction)), Decimal::from(m.start_12)).map(|r| r.to_string()),
                "net_mrr_churn_rate": rate(Decimal::from(-(churn + contraction) - expansion - reactivation), Decimal::from(m.start_12)).map(|r| r.to_string()),
            });
            for (index, kind) in KINDS.iter().enumerate() {
                row[format!("{kind}_mrr")] = json!(money(minor_of_12(m.deltas_12[index])));
            }
            row
        })
        .collect();

    // Top customers and segments.
    let top = top_customers(
        conn,
        p.seller,
        &p.currency,
        &first_month,
        &last_month,
        i64::from(p.top_customers),
    )?;
    let ids: Vec<i64> = top.iter().map(|(id, _)| *id).collect();
    let names: BTreeMap<i64, String> = tenants::table
        .filter(tenants::id.eq_any(&ids))
        .select((tenants::id, tenants::name))
        .load::<(i64, String)>(conn)?
        .into_iter()
        .collect();
    let customer_mrr: BTreeMap<i64, i64> = mrr_customers::table
        .filter(mrr_customers::seller.eq(p.seller.key()))
        .filter(mrr_customers::currency.eq(&p.currency))
        .select((mrr_customers::tenant_id, mrr_customers::mrr_12))
        .load::<(i64, i64)>(conn)?
        .into_iter()
        .collect();
    let top_json: Vec<Value> = top
        .iter()
        .map(|(id, net)| {
            json!({
                "tenant": id,
                "name": names.get(id),
                "revenue": money_i(*net),
                "mrr": money(minor_of_12(customer_mrr.get(id).copied().unwrap_or(0))),
            })
        })
        .collect();
    let segments = segments(conn, p, &customer_mrr)?;

    // The forecast, over complete months.
    let current = month_start(p.today);
    let history: Vec<f64> = report_months
        .iter()
        .filter(|month| **month < current)
        .map(|month| *by_month.get(&month_key(*month)).unwrap_or(&0) as f64)
        .collect();
    let last_complete = report_months.iter().rev().find(|m| **m < current).copied();
    let forecast = match (forecast::holt(&history, p.forecast_months), last_complete) {
        (Some(forecast), Some(last)) => {
            let round =
                |value: f64| money(Decimal::from_f64_retain(value.round()).unwrap_or_default());
            json!({
                "method": "Holt's linear trend (double exponential smoothing), alpha and beta chosen by least squares; band: 95% interval",
                "alpha": forecast.alpha,
                "beta": forecast.beta,
                "months": forecast.points.iter().map(|point| json!({
                    "month": month_key(last + Months::new(point.ahead)),
                    "revenue": round(point.value),
                    "low": round(point.low),
                    "high": round(point.high),
                })).collect::<Vec<_>>(),
            })
        }
        _ => json!({
            "method": "Holt's linear trend (double exponential smoothing)",
            "months": [],
            "note": format!("needs at least {} complete months of history", forecast::HISTORY_MIN),
        }),
    };

    let mrr_end = minor_of_12(last.end_12);
    Ok(json!({
        "currency": p.currency,
        "from": first_month,
        "to": last_month,
        "granularity": p.granularity.as_str(),
        "revenue": {
            "invoices_paid": total.invoices,
            "paid": money_i(total.paid),
            "refunds": total.refunds,
            "refunded": money_i(total.refunded),
            "revenue": money_i(net),
            "recurring": money_i(total.recurring),
            "non_recurring": money_i(total.non_recurring),
            "tax": money_i(total.paid_tax - total.refunded_tax),
        },
        "series": series,
        "mrr": {
            "mrr": money(mrr_end),
            "arr": money(mrr_end * Decimal::from(12)),
            "customers": last.customers_end,
            "arpa": arpa.map(money),
            "arpu": arpu.map(money),
            "paying_customers": paying,
            "growth": rate(Decimal::from(last.end_12 - last.start_12), Decimal::from(last.start_12)).map(|r| r.to_string()),
            "customer_churn_rate": customer_churn.map(|r| r.to_string()),
            "gross_mrr_churn_rate": gross_churn.map(|r| r.to_string()),
            "net_mrr_churn_rate": net_churn.map(|r| r.to_string()),
            "ltv": ltv_minor.map(money),
            "ltv_basis": ltv_basis,
            "months": months_json,
        },
        "segments": segments,
        "payment_methods": payment_methods,
        "top_customers": top_json,
        "forecast": forecast,
    }))
}

fn first_movement_month(
    conn: &mut DbConnection,
    seller: Seller,
    currency: &str,
) -> QueryResult<Option<NaiveDate>> {
    use crate::db::schema::mrr_monthly::dsl as m;
    let first: Option<String> = m::mrr_monthly
        .filter(m::seller.eq(seller.key()))
        .filter(m::currency.eq(currency))
        .select(m::month)
        .order(m::month)
        .first(conn)
        .optional()?;
    Ok(first.and_then(|month| NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()))
}

/// Customers by segment now, with the at-risk ones listed (dearest first,
/// at most 100).
fn segments(
    conn: &mut DbConnection,
    p: &Params,
    customer_mrr: &BTreeMap<i64, i64>,
) -> QueryResult<Value> {
    let past_due: BTreeSet<i64> = subscriptions::table
        .filter(subscriptions::state.eq("past_due"))
        .select(subscriptions::tenant_id)
        .load::<i64>(conn)?
        .into_iter()
        .collect();
    // The last complete month, and the one before it.
    let current = month_start(p.today);
    let compared = std::cmp::min(month_start(p.to), current - Months::new(1));
    let before = compared - Months::new(1);
    let used = super::usage::monthly_credits(conn, &month_key(compared))?;
    let used_before = super::usage::monthly_credits(conn, &month_key(before))?;
    let keep = Decimal::ONE - p.at_risk_usage_drop;
    let mut counts = BTreeMap::from([("active", 0), ("at_risk", 0), ("churned", 0)]);
    let mut at_risk: Vec<(i64, i64, &str)> = Vec::new();
    for (&tenant, &mrr_12) in customer_mrr {
        if mrr_12 == 0 {
            *counts.get_mut("churned").expect("listed") += 1;
            continue;
        }
        let previous = used_before.get(&tenant).copied().unwrap_or(0);
        let now = used.get(&tenant).copied().unwrap_or(0);
        let dropped = previous > 0 && Decimal::from(now) <= Decimal::from(previous) * keep;
        let reason = match (past_due.contains(&tenant), dropped) {
            (true, _) => Some("past_due"),
            (false, true) => Some("usage_drop"),
            _ => None,
        };
        match reason {
            Some(reason) => {
                *counts.get_mut("at_risk").expect("listed") += 1;
                at_risk.push((tenant, mrr_12, reason));
            }
            None => *counts.get_mut("active").expect("listed") += 1,
        }
    }
    at_risk.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    at_risk.truncate(100);
    Ok(json!({
        "active": counts["active"],
        "at_risk": counts["at_risk"],
        "churned": counts["churned"],
        "usage_compared": [month_key(before), month_key(compared)],
        "at_risk_customers": at_risk.iter().map(|(tenant, mrr_12, reason)| json!({
            "tenant": tenant,
            "mrr": major(minor_of_12(*mrr_12), p.digits).to_string(),
            "reason": reason,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests;
