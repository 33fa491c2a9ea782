//! How fast the analytics reports answer over a large history: 10,000
//! tenants, two years of monthly subscription invoices with plan changes,
//! cancellations and returns, and 10 million usage records, on SQLite and
//! on PostgreSQL.
//!
//! The history is written fast (rows inserted many per statement, in large
//! transactions) but its rollups through the very functions the metered
//! path and billing call (`analytics::usage::record`,
//! `analytics::revenue::invoice_paid`, `analytics::mrr::sync`), so the
//! reports read what a real history would leave. Then each report is
//! asked for repeatedly and timed.
//!
//! Run: `cargo bench -p tollgate --bench analytics`. `BENCH_QUICK=1` for
//! a small history, `BENCH_BACKEND=sqlite` or `postgres` for one backend;
//! PostgreSQL at `BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; each run creates and drops
//! its own database there).

use std::time::{Duration, Instant};

use chrono::{Months, NaiveDate};
use diesel::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tollgate::analytics::report::{self, Granularity, Params};
use tollgate::analytics::{mrr, revenue, roi, usage};
use tollgate::billing::invoices::{Document, Kind, State, Totals};
use tollgate::config::{Plan, Settings, parse_plans};
use tollgate::db::schema::{invoices, subscription_periods, subscriptions, tenants, usage_records};
use tollgate::db::testing::TestDatabase;
use tollgate::db::{self, DbConnection};
use tollgate::ids::TenantId;
use tollgate::metering::UsageRow;
use tollgate::units::Timestamp;

struct Sizes {
    tenants: i64,
    records: i64,
    repeats: usize,
}

fn main() -> anyhow::Result<()> {
    let sizes = match std::env::var("BENCH_QUICK").is_ok() {
        true => Sizes {
            tenants: 1_000,
            records: 200_000,
            repeats: 5,
        },
        false => Sizes {
            tenants: 10_000,
            records: 10_000_000,
            repeats: 20,
        },
    };
    let postgres = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let only = std::env::var("BENCH_BACKEND").ok();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|only| only != backend) {
            continue;
        }
        let test_db = match backend {
            "sqlite" => TestDatabase::sqlite(),
            _ => TestDatabase::postgres(postgres.clone()),
        };
        let database = test_db.open();
        let mut conn = database.get()?;
        let started = Instant::now();
        generate(&mut conn, &sizes)?;
        println!(
            "{backend}: {} tenants, {} usage records, written in {:.0} s",
            sizes.tenants,
            sizes.records,
            started.elapsed().as_secs_f64()
        );
        // Fresh statistics for the planner, as autovacuum would gather.
        match &mut *conn {
            DbConnection::Postgres(c) => diesel::sql_query("ANALYZE").execute(c)?,
            DbConnection::Sqlite(c) => diesel::sql_query("ANALYZE").execute(c)?,
        };
        measure(backend, &mut conn, &sizes)?;
    }
    Ok(())
}

/// The history runs over 2024 and 2025.
fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date")
}

fn micros(day: NaiveDate) -> i64 {
    Timestamp::from_chrono(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()).micros()
}

const DAY_US: i64 = 86_400 * 1_000_000;

fn generate(conn: &mut DbConnection, sizes: &Sizes) -> anyhow::Result<()> {
    let plans = parse_plans(
        std::path::Path::new("plans.toml"),
        include_str!("../../config/plans.toml"),
    )?;
    let monthly: Vec<&Plan> = plans
        .iter()
        .filter(|plan| plan.interval == tollgate::config::Interval::Month)
        .collect();
    let mut rng = StdRng::seed_from_u64(6);
    let t0 = micros(start());

    // Tenants, each subscribed from the start on a monthly plan.
    let mut plan_of: Vec<usize> = Vec::new();
    for chunk in (1..=sizes.tenants).collect::<Vec<_>>().chunks(1_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|id| {
                (
                    tenants::id.eq(*id),
                    tenants::name.eq(format!("Tenant {id}")),
                    tenants::created_at.eq(t0),
                )
            })
            .collect();
        let subs: Vec<_> = chunk
            .iter()
            .map(|id| {
                let plan = rng.random_range(0..monthly.len());
                plan_of.push(plan);
                (
                    subscriptions::id.eq(*id),
                    subscriptions::tenant_id.eq(*id),
                    subscriptions::plan.eq(monthly[plan].id.clone()),
                    subscriptions::state.eq("active"),
                    subscriptions::anchor.eq(t0),
                    subscriptions::current_period.eq(0),
                    subscriptions::cancel_at_period_end.eq(false),
                    subscriptions::created_at.eq(t0),
                )
            })
            .collect();
        match conn {
            DbConnection::Sqlite(c) => {
                diesel::insert_into(tenants::table)
                    .values(&rows)
                    .execute(c)?;
                diesel::insert_into(subscriptions::table)
                    .values(&subs)
                    .execute(c)?;
            }
            DbConnection::Postgres(c) => {
                diesel::insert_into(tenants::table)
                    .values(&rows)
                    .execute(c)?;
                diesel::insert_into(subscriptions::table)
                    .values(&subs)
                    .execute(c)?;
            }
        }
    }
    if let DbConnection::Postgres(c) = conn {
        // Explicit ids above; later inserts take the next ones.
        diesel::sql_query("SELECT setval(pg_get_serial_sequence('tenants', 'id'), 1000000)")
            .execute(c)?;
    }

    // Each month: some tenants change plan, cancel or come back (their
    // MRR moves), and every subscribed tenant's invoice is paid.
    let mut canceled = vec![false; sizes.tenants as usize];
    for month in 0..24_u32 {
        let month_start = start() + Months::new(month);
        let at = micros(month_start) + DAY_US;
        db::write_transaction(conn, |conn| {
            for tenant in 1..=sizes.tenants {
                let index = (tenant - 1) as usize;
                let roll: f64 = rng.random();
                let changed = match (canceled[index], month) {
                    (_, 0) => true,
                    (true, _) if roll < 0.2 => {
                        canceled[index] = false;
                        true
                    }
                    (false, _) if roll < 0.02 => {
                        canceled[index] = true;
                        true
                    }
                    (false, _) if roll < 0.08 => {
                        plan_of[index] = rng.random_range(0..monthly.len());
                        true
                    }
                    _ => false,
                };
                if changed {
                    diesel::update(subscriptions::table.find(tenant))
                        .set((
                            subscriptions::plan.eq(monthly[plan_of[index]].id.clone()),
                            subscriptions::state.eq(match canceled[index] {
                                true => "canceled",
                                false => "active",
                            }),
                        ))
                        .execute(conn)?;
                    mrr::sync(conn, TenantId(tenant), &plans, Timestamp::from_micros(at))?;
                }
                if canceled[index] {
                    continue;
                }
                let plan = monthly[plan_of[index]];
                let id = i64::from(month) * 1_000_000 + tenant;
                let document = Document {
                    id,
                    tenant,
                    kind: Kind::Invoice,
                    issuer: "Tollgate".into(),
                    number: Some(id),
                    state: State::Paid,
                    currency: "USD".into(),
                    totals: Totals {
                        subtotal_minor: plan.net_minor(),
                        tax_minor: 0,
                        total_minor: plan.net_minor(),
                    },
                    tax_rate: Decimal::ZERO,
                    tax_name: "Tax".into(),
                    credits_invoice: None,
                    lines: Vec::new(),
                    created_at: Timestamp::from_micros(at),
                    finalized_at: Some(Timestamp::from_micros(at)),
                    closed_at: Some(Timestamp::from_micros(at)),
                    reseller: None,
                };
                let row = (
                    invoices::id.eq(id),
                    invoices::tenant_id.eq(tenant),
                    invoices::kind.eq("invoice"),
                    invoices::issuer.eq("Tollgate"),
                    invoices::number.eq(id),
                    invoices::state.eq("paid"),
                    invoices::currency.eq("USD"),
                    invoices::subtotal_minor.eq(plan.net_minor()),
                    invoices::tax_rate.eq("0"),
                    invoices::tax_name.eq("Tax"),
                    invoices::tax_minor.eq(0_i64),
                    invoices::total_minor.eq(plan.net_minor()),
                    invoices::created_at.eq(at),
                    invoices::finalized_at.eq(at),
                    invoices::closed_at.eq(at),
                );
                let period = (
                    subscription_periods::subscription_id.eq(tenant),
                    subscription_periods::period.eq(month as i32),
                    subscription_periods::plan.eq(plan.id.clone()),
                    subscription_periods::starts_at.eq(micros(month_start)),
                    subscription_periods::ends_at.eq(micros(month_start + Months::new(1))),
                    subscription_periods::invoice_id.eq(id),
                    subscription_periods::granted.eq(true),
                );
                match conn {
                    DbConnection::Sqlite(c) => {
                        diesel::insert_into(invoices::table)
                            .values(row)
                            .execute(c)?;
                        diesel::insert_into(subscription_periods::table)
                            .values(period)
                            .execute(c)?;
                    }
                    DbConnection::Postgres(c) => {
                        diesel::insert_into(invoices::table)
                            .values(row)
                            .execute(c)?;
                        diesel::insert_into(subscription_periods::table)
                            .values(period)
                            .execute(c)?;
                    }
                }
                revenue::invoice_paid(conn, &document)?;
            }
            anyhow::Ok(())
        })?;
    }

    // Usage: calls spread over the two years, added to the rollups a
    // batch at a time as settlements add them.
    let span = micros(start() + Months::new(24)) - t0;
    let functions = [
        ("csv-leads", "search"),
        ("http-leads", "enrich"),
        ("email", "send"),
    ];
    let batch = 10_000;
    let mut written = 0;
    while written < sizes.records {
        let n = batch.min(sizes.records - written);
        let mut rows: Vec<UsageRow> = (0..n)
            .map(|i| {
                let (plugin, function) = functions[rng.random_range(0..functions.len())];
                let units = rng.random_range(0..25_i64);
                let created_at = t0 + rng.random_range(0..span);
                UsageRow {
                    id: format!("{:032x}", written + i),
                    tenant_id: rng.random_range(1..=sizes.tenants),
                    plugin: plugin.into(),
                    version: "1.0.0".into(),
                    function: function.into(),
                    units,
                    credits: units * 1_000_000,
                    held: units * 1_000_000,
                    fuel: 800_000,
                    duration_us: 60,
                    outcome: "ok".into(),
                    error: None,
                    idempotency_key: None,
                    period: usage::month_of(created_at),
                    state: "settled".into(),
                    created_at,
                    reseller_id: None,
                    wholesale_held: 0,
                    wholesale: 0,
                }
            })
            .collect();
        rows.sort_by_key(|row| row.created_at);
        db::write_transaction(conn, |conn| {
            for chunk in rows.chunks(db::ROWS_PER_INSERT_MAX) {
                match conn {
                    DbConnection::Sqlite(c) => diesel::insert_into(usage_records::table)
                        .values(chunk)
                        .execute(c)?,
                    DbConnection::Postgres(c) => diesel::insert_into(usage_records::table)
                        .values(chunk)
                        .execute(c)?,
                };
            }
            let refs: Vec<&UsageRow> = rows.iter().collect();
            usage::record(conn, &refs)?;
            anyhow::Ok(())
        })?;
        written += n;
    }
    Ok(())
}

fn time<T>(
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Duration, Duration)> {
    f()?; // warm the caches
    let mut times: Vec<Duration> = (0..repeats)
        .map(|_| {
            let started = Instant::now();
            f().map(|_| started.elapsed())
        })
        .collect::<anyhow::Result<_>>()?;
    times.sort();
    Ok((times[times.len() / 2], *times.last().expect("at least one")))
}

/// A report to time; answers something of its size, so it is not optimised away.
type Case<'a> = Box<dyn FnMut(&mut DbConnection) -> anyhow::Result<usize> + 'a>;

fn measure(backend: &str, conn: &mut DbConnection, sizes: &Sizes) -> anyhow::Result<()> {
    let settings = Settings::default().analytics;
    let params = |from: NaiveDate, to: NaiveDate, granularity| Params {
        seller: tollgate::analytics::Seller::Platform,
        currency: "USD".into(),
        digits: 2,
        from,
        to,
        granularity,
        top_customers: 10,
        forecast_months: 3,
        at_risk_usage_drop: settings.at_risk_usage_drop,
        today: start() + Months::new(24),
    };
    let last = start() + Months::new(23);
    let two_years = params(start(), last, Granularity::Month);
    let year_by_day = params(start() + Months::new(12), last, Granularity::Day);
    let one_month = params(last, last, Granularity::Month);
    let report = report::revenue(conn, &two_years)?;
    println!(
        "{backend}: MRR at the end {} over {} customers; {} at risk, {} churned",
        report["mrr"]["mrr"],
        report["mrr"]["customers"],
        report["segments"]["at_risk"],
        report["segments"]["churned"]
    );
    let tenant = TenantId(sizes.tenants / 2);
    let (year_from, year_end) = ("2025-01-01", "2026-01-01");
    let (month_from, month_end) = ("2025-12-01", "2026-01-01");
    let cases: Vec<(&str, Case)> = vec![
        (
            "revenue report, 24 months by month",
            Box::new(|c| Ok(report::revenue(c, &two_years)?.to_string().len())),
        ),
        (
            "revenue report, 12 months by day",
            Box::new(|c| Ok(report::revenue(c, &year_by_day)?.to_string().len())),
        ),
        (
            "monthly financial report",
            Box::new(|c| Ok(report::revenue(c, &one_month)?.to_string().len())),
        ),
        (
            "tenant usage, 30 days",
            Box::new(move |c| Ok(usage::tenant_daily(c, tenant, month_from, month_end)?.len())),
        ),
        (
            "tenant usage, 365 days",
            Box::new(move |c| Ok(usage::tenant_daily(c, tenant, year_from, year_end)?.len())),
        ),
        (
            "tenant ROI, 365 days",
            Box::new(move |c| {
                let lines = usage::tenant_daily(c, tenant, year_from, year_end)?;
                Ok(roi::compute(
                    &usage::by_function(&lines),
                    &Settings::default().analytics,
                    Decimal::new(1, 2),
                    2,
                )
                .lines
                .len())
            }),
        ),
        (
            "platform usage, 30 days",
            Box::new(move |c| Ok(usage::platform_daily(c, month_from, month_end)?.len())),
        ),
        (
            "platform usage, 365 days",
            Box::new(move |c| Ok(usage::platform_daily(c, year_from, year_end)?.len())),
        ),
    ];
    println!("{backend}: report                                  p50 ms    max ms");
    for (name, mut case) in cases {
        let (p50, max) = time(sizes.repeats, || case(conn))?;
        println!(
            "{backend}: {name:<40} {:>7.1} {:>9.1}",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
