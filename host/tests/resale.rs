//! Resale, end to end under a manual clock: a reseller's tenants pay its
//! retail prices for calls and plan periods, the reseller pays the
//! platform's prices for the same, both through the one metered path and
//! the ledger, and its margin is the difference to the last millionth of a
//! credit and the last cent; a reseller whose wallet runs out has its
//! tenants' calls refused after its alerts. SQLite or PostgreSQL
//! (TEST_DATABASE_URL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use tollgate::analytics::Seller;
use tollgate::analytics::report::{self, Granularity, Params};
use tollgate::billing::invoices::{self, Issuer};
use tollgate::billing::subscriptions::Subscriptions;
use tollgate::db::schema::usage_records;
use tollgate::db::testing::TestDatabase;
use tollgate::ids::TenantId;
use tollgate::ledger::{
    AccountId, Command, GrantSource, Ledger, TransferId, WriterOptions, queries,
};
use tollgate::metering::{Meter, MeterError, Request, UsageRow};
use tollgate::plugins::{self, Registry};
use tollgate::pricing::{ChargeModel, Price, PriceBook, Tier};
use tollgate::resale::{self, PricingDocument};
use tollgate::runtime::{Call, HttpPolicy, Runtime, RuntimeConfig, SearchQuery};
use tollgate::secrets::SecretBox;
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, ManualClock, Timestamp};

#[path = "support/smtp.rs"]
mod smtp;

const DAY_US: i64 = 86_400_000_000;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn credits(text: &str) -> Credits {
    Credits::parse(text).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// The platform's price of a csv-leads search: 0.05 a call, and its leads
/// graduated, 0.7 each for a period's first 10 and 0.33 after.
fn search_price() -> Price {
    Price {
        plugin: "csv-leads".into(),
        function: "search".into(),
        tenant: None,
        effective_from: Timestamp::from_micros(0),
        per_call: dec("0.05"),
        units: ChargeModel::Graduated {
            tiers: vec![
                Tier {
                    up_to: Some(10),
                    per_unit: dec("0.7"),
                    flat: Decimal::ZERO,
                },
                Tier {
                    up_to: None,
                    per_unit: dec("0.33"),
                    flat: Decimal::ZERO,
                },
            ],
        },
        free_units: BTreeMap::new(),
        per_million_fuel: Decimal::ZERO,
        charge_failed: false,
    }
}

struct World {
    clock: Arc<ManualClock>,
    database: tollgate::db::Database,
    ledger: Ledger,
    meter: Meter,
    secrets: Arc<SecretBox>,
    subscriptions: Subscriptions,
    _db: TestDatabase,
}

impl World {
    fn new(start: &str) -> World {
        let db = TestDatabase::new();
        let database = db.open();
        let clock = Arc::new(ManualClock::new(at(start)));
        let ledger =
            Ledger::start(database.clone(), clock.clone(), WriterOptions::default()).unwrap();
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let mut conn = database.get().unwrap();
        for (name, manifest, wasm) in tollgate::runtime::artifacts::FIRST_PARTY {
            if *name == "csv-leads" {
                let hosts = plugins::Manifest::parse(manifest).unwrap().http_hosts;
                plugins::install(&mut conn, &runtime, manifest, wasm, &hosts, clock.now()).unwrap();
            }
        }
        let secrets = Arc::new(SecretBox::new([3; 32]));
        let meter = Meter::new(
            database.clone(),
            ledger.clone(),
            Arc::new(Registry::new(runtime)),
            secrets.clone(),
            Arc::new(PriceBook {
                prices: vec![search_price()],
                rules: Vec::new(),
                reseller_plugins: Default::default(),
            }),
            clock.clone(),
            HttpPolicy::default(),
            Duration::from_secs(300),
        );
        let subscriptions = Subscriptions {
            database: database.clone(),
            ledger: ledger.clone(),
            plans: Arc::new(
                tollgate::config::parse_plans(
                    std::path::Path::new("plans.toml"),
                    include_str!("../../config/plans.toml"),
                )
                .unwrap(),
            ),
            issuer: Arc::new(Issuer {
                name: "Tollgate".into(),
                address: "1 Main Street".into(),
                tax_rate: dec("0.2"),
                tax_name: "VAT".into(),
            }),
            clock: clock.clone(),
        };
        World {
            clock,
            database,
            ledger,
            meter,
            secrets,
            subscriptions,
            _db: db,
        }
    }

    fn grant(&self, tenant: TenantId, amount: &str) {
        let wallet = queries::wallet_of(&mut self.database.get().unwrap(), tenant).unwrap();
        self.ledger
            .submit_blocking(Command::Grant {
                id: TransferId::new(format!("grant-{tenant}")).unwrap(),
                account: wallet,
                source: GrantSource::Purchase,
                amount: credits(amount),
                expires_at: None,
                priority: None,
                memo: String::new(),
            })
            .unwrap();
    }

    /// A tenant (of `reseller`, or sold to directly) with `grant` credits
    /// and csv-leads enabled on a file of 50 leads.
    fn tenant(&self, name: &str, reseller: Option<TenantId>, grant: &str) -> TenantId {
        let mut conn = self.database.get().unwrap();
        let now = self.clock.now();
        let (tenant, _) = match reseller {
            Some(reseller) => {
                tenants::create_for_reseller(&mut conn, reseller, name, Credits::ZERO, now)
            }
            None => tenants::create(&mut conn, name, None, Credits::ZERO, now),
        }
        .unwrap();
        plugins::enable(
            &mut conn,
            &self.secrets,
            tenant.id,
            "csv-leads",
            &BTreeMap::new(),
            now,
        )
        .unwrap();
        let mut csv = String::from("First Name,Email\n");
        for n in 0..50 {
            csv.push_str(&format!("Lead{n},lead{n}@example.com\n"));
        }
        plugins::kv::put_file(
            &mut conn,
            tenant.id,
            "csv-leads",
            "leads.csv",
            csv.as_bytes(),
            now,
        )
        .unwrap();
        drop(conn);
        self.grant(tenant.id, grant);
        tenant.id
    }

    /// A reseller, North Agency, at `markup_percent`, alerted below
    /// `thresholds`, with its wallet.
    fn reseller(&self, markup_percent: &str, thresholds: Vec<Credits>) -> (TenantId, AccountId) {
        let mut conn = self.database.get().unwrap();
        let now = self.clock.now();
        let (reseller, wallet) =
            tenants::create_reseller(&mut conn, "North Agency", Credits::ZERO, now).unwrap();
        let pricing = PricingDocument {
            markup_percent: dec(markup_percent),
            ..Default::default()
        };
        let settings = resale::Settings {
            pricing,
            thresholds,
            updated_at: None,
        };
        resale::store(&mut conn, reseller.id, &settings, now).unwrap();
        (reseller.id, wallet)
    }

    fn search(
        &self,
        tenant: TenantId,
        limit: u32,
    ) -> Result<tollgate::metering::Metered, MeterError> {
        self.meter.invoke(Request {
            tenant,
            plugin: "csv-leads".into(),
            call: Call::Search(SearchQuery {
                keywords: None,
                title: None,
                company: None,
                domain: None,
                location: None,
                limit,
                cursor: None,
            }),
            idempotency_key: None,
        })
    }

    fn records(&self, tenant: TenantId) -> Vec<UsageRow> {
        usage_records::table
            .filter(usage_records::tenant_id.eq(tenant.0))
            .order((usage_records::created_at, usage_records::id))
            .select(UsageRow::as_select())
            .load(&mut self.database.get().unwrap())
            .unwrap()
    }

    fn balance(&self, account: AccountId) -> queries::Balance {
        queries::balance(&mut self.database.get().unwrap(), account).unwrap()
    }
}

/// `amount` marked up by 30%, rounded half away from zero to `places`.
fn plus_30_percent(amount: Decimal, places: u32) -> Decimal {
    (amount * dec("1.3")).round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero)
}

#[test]
fn three_tenants_at_a_30_percent_markup_pay_retail_and_the_reseller_pays_wholesale_to_the_cent() {
    let world = World::new("2027-03-01T00:00:00Z");
    let (reseller, reseller_wallet) = world.reseller("30", Vec::new());
    let sales = queries::sales_account_of(&mut world.database.get().unwrap(), reseller).unwrap();
    world.grant(reseller, "100000");
    // Three tenants of the reseller's, and for each a twin the platform
    // sells to directly that makes exactly the same calls: what the twin
    // pays is the platform's price for them.
    let resold: Vec<TenantId> = ["Alpha", "Beta", "Gamma"]
        .iter()
        .map(|name| world.tenant(name, Some(reseller), "5000"))
        .collect();
    let twins: Vec<TenantId> = ["Alpha twin", "Beta twin", "Gamma twin"]
        .iter()
        .map(|name| world.tenant(name, None, "5000"))
        .collect();

    // Each resold tenant subscribes to Starter (49.00 at the platform's
    // price, so 63.70 at retail) and pays.
    for &tenant in &resold {
        let (_, invoice) = world.subscriptions.subscribe(tenant, "starter").unwrap();
        assert_eq!(invoice.lines[0].unit_price_minor, 6370, "{invoice:?}");
        world
            .subscriptions
            .invoice_paid(tenant, invoice.id)
            .unwrap();
    }

    // A month of searches: every day, each tenant and its twin search for
    // a few leads, a different number each day and tenant.
    for day in 0..30 {
        world
            .clock
            .set(at("2027-03-01T09:00:00Z").saturating_add_micros(day * DAY_US));
        for (index, (&tenant, &twin)) in resold.iter().zip(&twins).enumerate() {
            let limit = (day as u32 * 7 + index as u32 * 3) % 9 + 1;
            let sold = world.search(tenant, limit).unwrap();
            let direct = world.search(twin, limit).unwrap();
            assert!(sold.result.is_ok() && direct.result.is_ok());
        }
    }

    // The period ends: each subscription renews, invoiced at retail.
    world.clock.set(at("2027-04-01T01:00:00Z"));
    assert_eq!(world.subscriptions.renew_due().unwrap(), 3);

    let (mut retail_total, mut wholesale_total) = (Credits::ZERO, Credits::ZERO);
    for (&tenant, &twin) in resold.iter().zip(&twins) {
        let (sold, direct) = (world.records(tenant), world.records(twin));
        assert_eq!(sold.len(), 30);
        assert_eq!(direct.len(), 30);
        for (sold, direct) in sold.iter().zip(&direct) {
            assert_eq!(sold.units, direct.units);
            assert_eq!(sold.reseller_id, Some(reseller.0));
            assert_eq!(direct.reseller_id, None);
            // The reseller pays the platform's price for the same call...
            assert_eq!(sold.wholesale, direct.credits, "{sold:?} {direct:?}");
            // ...and its tenant pays that plus 30%.
            let wholesale = Credits::from_micros(direct.credits).to_decimal();
            assert_eq!(
                Credits::from_micros(sold.credits).to_decimal(),
                plus_30_percent(wholesale, 6),
                "{sold:?}"
            );
            retail_total = retail_total
                .checked_add(Credits::from_micros(sold.credits))
                .unwrap();
            wholesale_total = wholesale_total
                .checked_add(Credits::from_micros(sold.wholesale))
                .unwrap();
        }
    }
    assert!(
        wholesale_total > credits("100"),
        "a month of use: {wholesale_total}"
    );

    // The ledger agrees: the tenants' retail charges are in the reseller's
    // sales account, and its wallet paid the wholesale ones.
    assert_eq!(world.balance(sales).posted, retail_total);
    assert_eq!(
        world.balance(reseller_wallet).posted,
        credits("100000").checked_sub(wholesale_total).unwrap()
    );
    assert_eq!(world.balance(reseller_wallet).pending, Credits::ZERO);

    // Each plan period (the first and the renewal) was invoiced at retail,
    // and charged to the reseller at the platform's price.
    // The reseller issued them, under its name, from a number series of its
    // own.
    let mut conn = world.database.get().unwrap();
    let mut numbers = Vec::new();
    for &tenant in &resold {
        let documents =
            invoices::list(&mut conn, tenant, invoices::Kind::Invoice, None, 10).unwrap();
        assert_eq!(documents.len(), 2);
        for document in documents {
            assert_eq!(document.lines[0].unit_price_minor, 6370);
            assert_eq!(document.totals.subtotal_minor, 6370);
            assert_eq!(document.issuer, "North Agency");
            assert_eq!(document.reseller, Some(reseller));
            numbers.push(document.number.unwrap());
        }
    }
    numbers.sort();
    assert_eq!(numbers, (1..=6).collect::<Vec<i64>>());
    // They are the reseller's revenue, not the platform's: the platform's
    // revenue report counts none of the three it saw paid.
    let platform_invoices: Vec<i64> = tollgate::db::schema::revenue_daily::table
        .filter(tollgate::db::schema::revenue_daily::seller.eq(0))
        .select(tollgate::db::schema::revenue_daily::invoices)
        .load(&mut conn)
        .unwrap();
    assert_eq!(platform_invoices.iter().sum::<i64>(), 0);

    // The margins, by tenant and plugin for the month, add up exactly.
    let calls = resale::call_margins(&mut conn, reseller, "2027-03", "2027-04").unwrap();
    assert_eq!(calls.len(), 3);
    let sum = |pick: fn(&resale::CallMargin) -> Credits| {
        Credits::from_micros(calls.iter().map(|row| pick(row).micros()).sum())
    };
    assert_eq!(sum(|row| row.retail), retail_total);
    assert_eq!(sum(|row| row.wholesale), wholesale_total);
    assert_eq!(
        sum(|row| row.margin),
        retail_total.checked_sub(wholesale_total).unwrap()
    );
    for (row, &tenant) in calls.iter().zip(&resold) {
        assert_eq!(
            (row.period.as_str(), row.tenant, row.calls),
            ("2027-03", tenant, 30)
        );
    }
    let plans = resale::plan_margins(&mut conn, reseller, "2027-03", "2027-04").unwrap();
    assert_eq!(plans.len(), 6);
    assert!(
        plans
            .iter()
            .all(|row| (row.retail_minor, row.wholesale_minor) == (6370, 4900))
    );
    assert_eq!(
        plans
            .iter()
            .map(|row| row.retail_minor - row.wholesale_minor)
            .sum::<i64>(),
        6 * 1470
    );
    // The platform invoices the reseller March's plan periods at its own
    // prices, a line per tenant, once.
    let platform = invoices::Issuer {
        name: "Tollgate".into(),
        address: "1 Main Street".into(),
        tax_rate: dec("0.2"),
        tax_name: "VAT".into(),
    };
    let now = world.clock.now();
    let march = resale::invoice_month(&mut conn, &platform, reseller, "2027-03", now).unwrap();
    assert_eq!((march.issuer.as_str(), march.reseller), ("Tollgate", None));
    assert_eq!(march.tenant, reseller.0);
    assert_eq!(march.lines.len(), 3);
    assert!(march.lines.iter().all(|line| line.unit_price_minor == 4900));
    assert_eq!(march.totals.subtotal_minor, 3 * 4900);
    let again = resale::invoice_month(&mut conn, &platform, reseller, "2027-03", now).unwrap();
    assert_eq!(again.id, march.id);
    // A month not over yet is not invoiced, nor one with nothing to bill.
    assert!(matches!(
        resale::invoice_month(&mut conn, &platform, reseller, "2027-04", now),
        Err(resale::ResaleError::MonthNotOver(_))
    ));
    assert!(matches!(
        resale::invoice_month(&mut conn, &platform, reseller, "2027-02", now),
        Err(resale::ResaleError::NothingToInvoice(_))
    ));
    // Another reseller's figures hold none of these.
    let (other, _) =
        tenants::create_reseller(&mut conn, "South Agency", Credits::ZERO, world.clock.now())
            .unwrap();
    assert!(
        resale::call_margins(&mut conn, other.id, "2027-01", "2027-12")
            .unwrap()
            .is_empty()
    );
    assert!(
        resale::plan_margins(&mut conn, other.id, "2027-01", "2027-12")
            .unwrap()
            .is_empty()
    );
}

/// The revenue report of `seller` over March and April 2027, seen on
/// 15 April.
fn revenue_report(world: &World, seller: Seller) -> Value {
    let day = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
    let params = Params {
        seller,
        currency: "USD".into(),
        digits: 2,
        from: day("2027-03-01"),
        to: day("2027-04-01"),
        granularity: Granularity::Month,
        top_customers: 5,
        forecast_months: 3,
        at_risk_usage_drop: dec("0.5"),
        today: day("2027-04-15"),
    };
    report::revenue(&mut world.database.get().unwrap(), &params).unwrap()
}

#[test]
fn a_resellers_revenue_analytics_count_its_tenants_at_retail_and_the_platforms_at_wholesale() {
    let world = World::new("2027-03-01T00:00:00Z");
    let (reseller, _) = world.reseller("30", Vec::new());
    let (other, _) = world.reseller("10", Vec::new());
    world.grant(reseller, "1000");
    let resold: Vec<TenantId> = ["Alpha", "Beta", "Gamma"]
        .iter()
        .map(|name| world.tenant(name, Some(reseller), "100"))
        .collect();
    let direct = world.tenant("Direct", None, "100");
    // In March all four subscribe to Starter and pay: 63.70 at the
    // reseller's retail price, 49.00 at the platform's.
    for &tenant in resold.iter().chain([&direct]) {
        let (_, invoice) = world.subscriptions.subscribe(tenant, "starter").unwrap();
        world
            .subscriptions
            .invoice_paid(tenant, invoice.id)
            .unwrap();
    }
    // Gamma cancels; on 1 April Alpha, Beta and Direct renew, Gamma
    // churns. Alpha pays its renewal, Beta and Direct have not yet.
    world.subscriptions.cancel_at_period_end(resold[2]).unwrap();
    world.clock.set(at("2027-04-01T01:00:00Z"));
    assert_eq!(world.subscriptions.renew_due().unwrap(), 4);
    let mut conn = world.database.get().unwrap();
    let renewal = invoices::list(&mut conn, resold[0], invoices::Kind::Invoice, None, 10)
        .unwrap()
        .pop()
        .unwrap();
    drop(conn);
    world
        .subscriptions
        .invoice_paid(resold[0], renewal.id)
        .unwrap();

    // The reseller's report: its invoices, its tenants, its prices.
    let sold = revenue_report(&world, Seller::Reseller(reseller));
    assert_eq!(sold["revenue"]["invoices_paid"], 4, "{sold:#}");
    assert_eq!(sold["revenue"]["revenue"], "254.80");
    assert_eq!(sold["revenue"]["recurring"], "254.80");
    assert_eq!(sold["series"][0]["revenue"], "191.10");
    assert_eq!(sold["series"][1]["revenue"], "63.70");
    let (march, april) = (&sold["mrr"]["months"][0], &sold["mrr"]["months"][1]);
    assert_eq!(
        (&march["mrr_start"], &march["new_mrr"], &march["mrr_end"]),
        (
            &Value::from("0.00"),
            &Value::from("191.10"),
            &Value::from("191.10")
        )
    );
    assert_eq!(
        (&march["new_customers"], &march["customers_end"]),
        (&3.into(), &3.into())
    );
    assert_eq!(
        (
            &april["churn_mrr"],
            &april["mrr_end"],
            &april["customers_end"]
        ),
        (
            &Value::from("-63.70"),
            &Value::from("127.40"),
            &Value::from(2)
        )
    );
    assert_eq!(april["customer_churn_rate"], "0.3333");
    assert_eq!(april["gross_mrr_churn_rate"], "0.3333");
    assert_eq!(sold["mrr"]["mrr"], "127.40");
    assert_eq!(sold["mrr"]["arr"], "1528.80");
    assert_eq!(sold["mrr"]["customers"], 2);
    assert_eq!(sold["mrr"]["arpa"], "63.70");
    // 254.80 paid by three tenants.
    assert_eq!(sold["mrr"]["paying_customers"], 3);
    assert_eq!(sold["mrr"]["arpu"], "84.93");
    // LTV: ARPA over the period's churn, 1 of 3 + 3 starting customers.
    assert_eq!(sold["mrr"]["customer_churn_rate"], "0.3333");
    assert_eq!(sold["mrr"]["ltv"], "191.12");
    let top: Vec<(i64, &str)> = sold["top_customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["tenant"].as_i64().unwrap(),
                row["revenue"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        top,
        vec![
            (resold[0].0, "127.40"),
            (resold[1].0, "63.70"),
            (resold[2].0, "63.70")
        ]
    );
    assert_eq!(sold["segments"]["active"], 2);
    assert_eq!(sold["segments"]["churned"], 1);

    // The platform's: the direct tenant's invoice, and every tenant's MRR at
    // the platform's price (what it charges the reseller for the resold).
    let platform = revenue_report(&world, Seller::Platform);
    assert_eq!(platform["revenue"]["invoices_paid"], 1, "{platform:#}");
    assert_eq!(platform["revenue"]["revenue"], "49.00");
    assert_eq!(platform["mrr"]["months"][0]["mrr_end"], "196.00");
    assert_eq!(platform["mrr"]["mrr"], "147.00");
    assert_eq!(platform["mrr"]["customers"], 3);
    assert_eq!(platform["top_customers"][0]["tenant"], direct.0);
    assert_eq!(platform["top_customers"].as_array().unwrap().len(), 1);

    // Another reseller's report holds nothing of this one's.
    let empty = revenue_report(&world, Seller::Reseller(other));
    assert_eq!(empty["revenue"]["invoices_paid"], 0);
    assert_eq!(empty["mrr"]["mrr"], "0.00");
    assert_eq!(empty["mrr"]["customers"], 0);
    assert!(empty["top_customers"].as_array().unwrap().is_empty());

    // A database whose resold tenants' MRR at retail was never kept (one
    // from before these rollups) adopts it once, at start.
    let mut conn = world.database.get().unwrap();
    use tollgate::db::schema::mrr_customers;
    diesel::delete(mrr_customers::table.filter(mrr_customers::seller.eq(reseller.0)))
        .execute(&mut conn)
        .unwrap();
    let plans = world.subscriptions.plans.clone();
    let now = world.clock.now();
    assert_eq!(
        tollgate::analytics::mrr::adopt(&mut conn, &plans, now).unwrap(),
        2
    );
    assert_eq!(
        tollgate::analytics::mrr::adopt(&mut conn, &plans, now).unwrap(),
        0
    );
    let customers: Vec<(i64, i64)> = mrr_customers::table
        .filter(mrr_customers::seller.eq(reseller.0))
        .order(mrr_customers::tenant_id)
        .select((mrr_customers::tenant_id, mrr_customers::mrr_12))
        .load(&mut conn)
        .unwrap();
    assert_eq!(
        customers,
        vec![(resold[0].0, 6370 * 12), (resold[1].0, 6370 * 12)]
    );
}

#[test]
fn a_reseller_whose_wallet_runs_out_is_alerted_first_then_its_tenants_calls_are_refused() {
    let world = World::new("2027-03-01T00:00:00Z");
    let (reseller, reseller_wallet) = world.reseller("30", vec![credits("6"), credits("3")]);
    world.grant(reseller, "10");
    let tenant = world.tenant("Alpha", Some(reseller), "1000");
    let tenant_wallet = queries::wallet_of(&mut world.database.get().unwrap(), tenant).unwrap();
    tenants::set_email(
        &mut world.database.get().unwrap(),
        reseller,
        Some("ops@north.example"),
    )
    .unwrap();

    // One lead a search: 0.75 at wholesale while the period's first ten
    // leads last, so the reseller's 10 credits cover 13 searches.
    let mut alerts_before = Vec::new();
    for n in 0..13 {
        world
            .clock
            .set(at("2027-03-02T09:00:00Z").saturating_add_micros(n * 60_000_000));
        world.search(tenant, 1).unwrap();
        alerts_before.push(
            resale::alerts(&mut world.database.get().unwrap(), reseller, 10)
                .unwrap()
                .len(),
        );
    }
    // The alerts came as the balance fell below 6 (after the 6th search,
    // 10 − 6 × 0.75 = 5.5) and below 3 (after the 10th, 2.5); searches 11
    // to 13 cost 0.05 + 0.33 each, past the first tier.
    let wallet = world.balance(reseller_wallet);
    let alerts = resale::alerts(&mut world.database.get().unwrap(), reseller, 10).unwrap();
    assert_eq!(
        alerts
            .iter()
            .map(|alert| alert.threshold)
            .collect::<Vec<_>>(),
        vec![credits("3"), credits("6")],
        "newest first"
    );
    assert_eq!(alerts_before[4], 0);
    assert_eq!(alerts_before[5], 1);
    assert_eq!(alerts_before[8], 1);
    assert_eq!(alerts_before[9], 2);
    assert_eq!(alerts[1].balance, credits("5.5"));
    assert_eq!(alerts[0].balance, credits("2.5"));
    // Each alert is emailed to the reseller, before any call is refused.
    let server = smtp::SmtpSpool::start();
    let mailer = tollgate::mail::Mailer {
        database: world.database.clone(),
        settings: tollgate::config::MailSettings {
            smtp_host: "127.0.0.1".into(),
            smtp_port: server.port,
            smtp_security: "none".into(),
            from_address: "billing@platform.example".into(),
            ..Default::default()
        },
        platform: world.subscriptions.issuer.clone(),
        public_url: "https://platform.example".into(),
        clock: world.clock.clone(),
    };
    assert_eq!(mailer.send_due().unwrap().sent, 2);
    let emails = server.received();
    for (email, (threshold, balance)) in emails.iter().zip([("6", "5.5"), ("3", "2.5")]) {
        assert_eq!(email.rcpt_tos, vec!["ops@north.example"]);
        assert_eq!(email.mail_from, "billing@platform.example");
        let message = mail_parser::MessageParser::default()
            .parse(email.data.as_bytes())
            .unwrap();
        assert_eq!(
            message.subject(),
            Some(format!("Your wallet is below {threshold} credits").as_str())
        );
        let text = message.body_text(0).unwrap();
        assert!(
            text.contains(&format!(
                "Your wholesale wallet fell below {threshold} credits: {balance} credits were left"
            )),
            "{text}"
        );
        assert!(text.contains("reseller_balance_exhausted"), "{text}");
    }

    // Spend the rest; then the next call is refused, naming the reason.
    let mut refused = None;
    for n in 0..20 {
        world
            .clock
            .set(at("2027-03-03T09:00:00Z").saturating_add_micros(n * 60_000_000));
        match world.search(tenant, 1) {
            Ok(_) => continue,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let error = refused.expect("the wallet ran out");
    assert!(
        matches!(error, MeterError::ResellerBalanceExhausted { reseller: r, .. } if r == reseller),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("your provider's account cannot cover this call")
    );
    let records = world.records(tenant).len();
    let (tenant_before, reseller_before) =
        (world.balance(tenant_wallet), world.balance(reseller_wallet));
    assert!(
        reseller_before.available < credits("0.38"),
        "{wallet:?} {reseller_before:?}"
    );

    // Refused again: nothing was recorded, held or charged on either side.
    let error = world.search(tenant, 1).unwrap_err();
    assert!(matches!(error, MeterError::ResellerBalanceExhausted { .. }));
    assert_eq!(world.records(tenant).len(), records);
    assert_eq!(world.balance(tenant_wallet), tenant_before);
    assert_eq!(world.balance(reseller_wallet), reseller_before);
    assert!(
        world
            .records(tenant)
            .iter()
            .all(|record| record.state == "settled")
    );

    // Topped up, the reseller's tenants call again.
    world
        .ledger
        .submit_blocking(Command::Grant {
            id: TransferId::new("top-up").unwrap(),
            account: reseller_wallet,
            source: GrantSource::Purchase,
            amount: credits("100"),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    world.search(tenant, 1).unwrap();
}
