use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::billing::invoices::{self, Issuer, Kind, NewDocument, NewLine};
use crate::billing::purchases;
use crate::billing::subscriptions::{State, Subscriptions};
use crate::config::{Plan, parse_plans, parse_pricing};
use crate::db::schema::{invoices as invoice_rows, subscriptions as subscription_rows};
use crate::db::testing::TwoTenants;
use crate::ids::TenantId;
use crate::ledger::{Ledger, WriterOptions};
use crate::units::{Clock, Credits, ManualClock, Timestamp};

const PLANS: &str = r#"
[[plan]]
id = "starter"
name = "Starter"
price = "49.00"
currency = "USD"
interval = "month"
credits = 1000
carryover = { credits_max = 500 }

[[plan]]
id = "professional"
name = "Professional"
price = "149.00"
currency = "USD"
interval = "month"
credits = 5000
carryover = { credits_max = 0 }

[[plan]]
id = "enterprise"
name = "Enterprise"
price = "399.00"
currency = "USD"
interval = "month"
credits = 20000
carryover = { credits_max = 0 }

[[plan]]
id = "basic-annual"
name = "Basic (annual)"
price = "120.00"
currency = "USD"
interval = "year"
credits = 1000
carryover = { credits_max = 0 }
discount_percent = "10"

[[plan]]
id = "team-annual"
name = "Team (annual)"
price = "500.00"
currency = "USD"
interval = "year"
credits = 12000
carryover = { credits_max = 0 }

[[plan]]
id = "professional-annual"
name = "Professional (annual)"
price = "1490.00"
currency = "USD"
interval = "year"
credits = 60000
carryover = { credits_max = 0 }
discount_percent = "12.5"
"#;

fn plans() -> Vec<Plan> {
    parse_plans(std::path::Path::new("plans.toml"), PLANS).unwrap()
}

fn plan(id: &str) -> Plan {
    plans().into_iter().find(|plan| plan.id == id).unwrap()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

#[test]
fn an_annual_plan_of_120_with_10_percent_off_is_9_of_mrr() {
    let basic = plan("basic-annual");
    assert_eq!(basic.net_minor(), 10_800);
    assert_eq!(major(minor_of_12(basic.mrr_12()), 2).to_string(), "9.00");
}

#[test]
fn four_annual_subscriptions_of_500_are_166_67_of_mrr() {
    let team = plan("team-annual");
    let mrr_12: i64 = (0..4).map(|_| team.mrr_12()).sum();
    assert_eq!(major(minor_of_12(mrr_12), 2).to_string(), "166.67");
    // Rounded once: four rounded twelfths would make 166.68.
    assert_eq!(major(minor_of_12(team.mrr_12()), 2).to_string(), "41.67");
}

#[test]
fn arpa_of_5_customers_and_1500_of_mrr_is_300() {
    let mrr_12 = 150_000 * 12;
    assert_eq!(
        arpa_minor(mrr_12, 5).map(|minor| major(minor, 2).to_string()),
        Some("300.00".to_owned())
    );
    assert_eq!(arpa_minor(mrr_12, 0), None);
}

#[test]
fn movements_are_classified_as_chartmogul_defines_them() {
    assert_eq!(mrr::classify(0, 4_900, false), Some("new"));
    assert_eq!(mrr::classify(4_900, 14_900, true), Some("expansion"));
    assert_eq!(mrr::classify(14_900, 4_900, true), Some("contraction"));
    assert_eq!(mrr::classify(4_900, 0, true), Some("churn"));
    assert_eq!(mrr::classify(0, 4_900, true), Some("reactivation"));
    assert_eq!(mrr::classify(4_900, 4_900, true), None);
}

#[test]
fn ltv_divides_arpa_by_churn_and_says_when_it_falls_back() {
    let arpa = Some(Decimal::from(30_000));
    assert_eq!(
        ltv(arpa, Some(Decimal::new(5, 2)), None),
        (Some(Decimal::from(600_000)), "period churn rate")
    );
    let (value, basis) = ltv(arpa, Some(Decimal::ZERO), Some(Decimal::new(2, 2)));
    assert_eq!(value, Some(Decimal::from(1_500_000)));
    assert!(basis.contains("all history"), "{basis}");
    let (value, basis) = ltv(arpa, Some(Decimal::ZERO), None);
    assert_eq!(value, Some(Decimal::from(30_000 * 60)));
    assert!(basis.contains("60-month"), "{basis}");
}

struct History {
    tenants: TwoTenants,
    subscriptions: Subscriptions,
    clock: Arc<ManualClock>,
}

fn history(start: Timestamp) -> History {
    let tenants = TwoTenants::new(start);
    let clock = Arc::new(ManualClock::new(start));
    let ledger = Ledger::start(
        tenants.database.clone(),
        clock.clone(),
        WriterOptions::default(),
    )
    .unwrap();
    let subscriptions = Subscriptions {
        database: tenants.database.clone(),
        ledger,
        plans: Arc::new(plans()),
        issuer: Arc::new(Issuer {
            name: "Tollgate".into(),
            address: String::new(),
            tax_rate: "0.2".parse().unwrap(),
            tax_name: "VAT".into(),
        }),
        clock: clock.clone(),
    };
    History {
        tenants,
        subscriptions,
        clock,
    }
}

fn params(from: &str, to: &str, today: &str) -> Params {
    Params {
        seller: Seller::Platform,
        currency: "USD".into(),
        digits: 2,
        from: day(from),
        to: day(to),
        granularity: Granularity::Month,
        top_customers: 5,
        forecast_months: 3,
        at_risk_usage_drop: Decimal::new(5, 1),
        today: day(today),
    }
}

fn money_of(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

/// MRR straight from the subscriptions table, in twelfths.
fn mrr_now(conn: &mut DbConnection, plans: &[Plan]) -> i64 {
    let live: Vec<String> = subscription_rows::table
        .filter(subscription_rows::state.eq_any(["active", "past_due"]))
        .select(subscription_rows::plan)
        .load(conn)
        .unwrap();
    live.iter()
        .map(|id| plans.iter().find(|plan| &plan.id == id).unwrap().mrr_12())
        .sum()
}

/// Two years of a few hundred tenants subscribing, upgrading,
/// downgrading, buying packages, failing to pay, canceling, coming back
/// and being refunded, through the billing code itself. The report must
/// equal the paid invoices less the credit notes to the cent, month by
/// month, and its MRR must equal what the subscriptions say at every
/// month's end, its movements adding up.
#[test]
fn a_generated_two_year_history_reconciles_to_the_cent() {
    const TENANTS: usize = 200;
    let start = at("2024-01-01T00:00:00Z");
    let h = history(start);
    let plans = plans();
    let packages = parse_pricing(
        std::path::Path::new("pricing.toml"),
        include_str!("../../../../config/pricing.toml"),
    )
    .unwrap()
    .packages;
    let mut rng = StdRng::seed_from_u64(6);
    let mut conn = h.tenants.database.get().unwrap();
    let mut tenants = vec![h.tenants.acme, h.tenants.globex];
    for index in tenants.len()..TENANTS {
        let (tenant, _) = crate::tenants::create(
            &mut conn,
            &format!("Tenant {index}"),
            None,
            Credits::ZERO,
            start,
        )
        .unwrap();
        tenants.push(tenant.id);
    }
    let monthly = ["starter", "professional", "enterprise"];
    let annual = ["basic-annual", "team-annual", "professional-annual"];
    let mut month_end_mrr: BTreeMap<String, i64> = BTreeMap::new();
    let mut unpaid_since: BTreeMap<i64, Timestamp> = BTreeMap::new();
    let (mut refunds, mut upgrades, mut cancels) = (0, 0, 0);

    // Each month: its first instant (renewals due by then run, and what
    // the subscriptions hold then is the previous month's closing MRR),
    // then four steps of tenants acting.
    for month_index in 0..24 {
        let month_start_at =
            Timestamp::from_chrono((start.to_chrono() + Months::new(month_index)).to_utc());
        h.clock
            .advance_micros(month_start_at.micros() - h.clock.now().micros());
        while h.subscriptions.renew_due().unwrap() > 0 {}
        if month_index > 0 {
            let previous =
                month_key((start.to_chrono() + Months::new(month_index - 1)).date_naive());
            month_end_mrr.insert(previous, mrr_now(&mut conn, &plans));
        }
        for week in 0..4 {
            let offset = (week * 7 * 24 + 12) * 3_600 * 1_000_000;
            h.clock
                .advance_micros(month_start_at.micros() + offset - h.clock.now().micros());
            let now = h.clock.now();
            while h.subscriptions.renew_due().unwrap() > 0 {}
            // Renewals: most pay at once, some late, some never.
            let open: Vec<(i64, i64)> = invoice_rows::table
                .filter(invoice_rows::state.eq("open"))
                .filter(invoice_rows::kind.eq("invoice"))
                .select((invoice_rows::id, invoice_rows::tenant_id))
                .load(&mut conn)
                .unwrap();
            for (invoice, tenant) in open {
                let tenant = TenantId(tenant);
                let current = h.subscriptions.current(tenant).unwrap();
                let since = *unpaid_since.entry(invoice).or_insert(now);
                let roll: f64 = rng.random();
                if roll < 0.85 {
                    h.subscriptions.invoice_paid(tenant, invoice).unwrap();
                    unpaid_since.remove(&invoice);
                } else if now.micros() - since.micros() > 20 * 24 * 3_600 * 1_000_000 {
                    invoices::mark_uncollectible(&mut conn, tenant, invoice, now).unwrap();
                    if let Some(subscription) = current {
                        h.subscriptions.end_unpaid(subscription.id).unwrap();
                    }
                    unpaid_since.remove(&invoice);
                } else if let Some(subscription) = current {
                    h.subscriptions.mark_past_due(subscription.id).unwrap();
                }
            }
            for &tenant in &tenants {
                let roll: f64 = rng.random();
                match h.subscriptions.current(tenant).unwrap() {
                    None if roll < 0.06 => {
                        let id = match rng.random_bool(0.7) {
                            true => monthly[rng.random_range(0..3)],
                            false => annual[rng.random_range(0..3)],
                        };
                        let (_, invoice) = h.subscriptions.subscribe(tenant, id).unwrap();
                        h.subscriptions.invoice_paid(tenant, invoice.id).unwrap();
                    }
                    Some(subscription) if subscription.state != State::Incomplete => {
                        if roll < 0.03 && !subscription.cancel_at_period_end {
                            h.subscriptions.cancel_at_period_end(tenant).unwrap();
                            cancels += 1;
                        } else if roll < 0.08 {
                            let pool = match plan(&subscription.plan).interval {
                                crate::config::Interval::Month => &monthly,
                                crate::config::Interval::Year => &annual,
                            };
                            let to = pool[rng.random_range(0..3)];
                            if to != subscription.plan
                                && let Ok(crate::billing::subscriptions::PlanChange::Upgraded {
                                    invoice,
                                    ..
                                }) = h.subscriptions.change_plan(tenant, to)
                            {
                                upgrades += 1;
                                if invoice.state == invoices::State::Open {
                                    h.subscriptions.invoice_paid(tenant, invoice.id).unwrap();
                                }
                            }
                        }
                    }
                    _ => {}
                }
                let roll: f64 = rng.random();
                if roll < 0.04 {
                    let package = &packages[rng.random_range(0..packages.len())];
                    let (purchase, _) = purchases::buy(
                        &mut conn,
                        &h.subscriptions.issuer,
                        &packages,
                        tenant,
                        &package.id,
                        now,
                    )
                    .unwrap();
                    purchases::paid(&mut conn, &h.subscriptions.ledger, &purchase, now).unwrap();
                } else if roll < 0.05 {
                    // A refund of one of its paid invoices not refunded yet.
                    let refunded: Vec<Option<i64>> = invoice_rows::table
                        .filter(invoice_rows::tenant_id.eq(tenant.0))
                        .filter(invoice_rows::kind.eq("credit_note"))
                        .select(invoice_rows::credits_invoice_id)
                        .load(&mut conn)
                        .unwrap();
                    let paid: Vec<i64> = invoice_rows::table
                        .filter(invoice_rows::tenant_id.eq(tenant.0))
                        .filter(invoice_rows::state.eq("paid"))
                        .filter(invoice_rows::total_minor.gt(0))
                        .select(invoice_rows::id)
                        .load(&mut conn)
                        .unwrap();
                    if let Some(&invoice) = paid.iter().find(|id| !refunded.contains(&Some(**id))) {
                        let document = invoices::get(&mut conn, tenant, invoice).unwrap();
                        crate::db::write_transaction(&mut conn, |conn| {
                            let draft = invoices::create_within(
                                conn,
                                &h.subscriptions.issuer,
                                &NewDocument {
                                    tenant,
                                    kind: Kind::CreditNote,
                                    currency: crate::units::Currency::parse("USD").unwrap(),
                                    lines: document
                                        .lines
                                        .iter()
                                        .map(|line| NewLine {
                                            description: line.description.clone(),
                                            quantity: line.quantity,
                                            unit_price_minor: line.unit_price_minor,
                                        })
                                        .collect(),
                                    credits_invoice: Some(invoice),
                                },
                                now,
                            )?;
                            invoices::finalize_within(conn, tenant, draft.id, now)
                        })
                        .unwrap();
                        refunds += 1;
                    }
                }
            }
        }
    }
    let end = at("2026-01-01T00:00:00Z");
    h.clock
        .advance_micros(end.micros() - h.clock.now().micros());
    while h.subscriptions.renew_due().unwrap() > 0 {}
    month_end_mrr.insert("2025-12".to_owned(), mrr_now(&mut conn, &plans));
    assert!(
        refunds > 20 && upgrades > 20 && cancels > 20,
        "{refunds} {upgrades} {cancels}"
    );

    // The report over the two years.
    let report = revenue(&mut conn, &params("2024-01-01", "2025-12-01", "2026-01-15")).unwrap();

    // Revenue equals the documents, to the cent: in total and by month.
    type Doc = (String, i64, i64, Option<i64>, Option<i64>);
    let documents: Vec<Doc> = invoice_rows::table
        .select((
            invoice_rows::kind,
            invoice_rows::subtotal_minor,
            invoice_rows::tax_minor,
            invoice_rows::closed_at,
            invoice_rows::finalized_at,
        ))
        .filter(
            invoice_rows::state
                .eq("paid")
                .or(invoice_rows::kind.eq("credit_note")),
        )
        .load(&mut conn)
        .unwrap();
    let mut by_month: BTreeMap<String, i64> = BTreeMap::new();
    let (mut paid, mut refunded, mut tax) = (0, 0, 0);
    for (kind, subtotal, doc_tax, closed, finalized) in &documents {
        let (sign, when) = match kind.as_str() {
            "invoice" => (1, closed.unwrap()),
            _ => (-1, finalized.unwrap()),
        };
        *by_month
            .entry(super::super::usage::month_of(when))
            .or_default() += sign * subtotal;
        match sign {
            1 => paid += subtotal,
            _ => refunded += subtotal,
        }
        tax += sign * doc_tax;
    }
    let cents = |minor: i64| major(Decimal::from(minor), 2);
    assert_eq!(money_of(&report["revenue"]["paid"]), cents(paid));
    assert_eq!(money_of(&report["revenue"]["refunded"]), cents(refunded));
    assert_eq!(
        money_of(&report["revenue"]["revenue"]),
        cents(paid - refunded)
    );
    assert_eq!(money_of(&report["revenue"]["tax"]), cents(tax));
    let recurring = money_of(&report["revenue"]["recurring"]);
    let non_recurring = money_of(&report["revenue"]["non_recurring"]);
    assert_eq!(recurring + non_recurring, cents(paid - refunded));
    assert!(non_recurring > Decimal::ZERO && recurring > Decimal::ZERO);
    for row in report["series"].as_array().unwrap() {
        let month = row["period"].as_str().unwrap();
        assert_eq!(money_of(&row["revenue"]), cents(by_month[month]), "{month}");
    }
    assert_eq!(report["series"].as_array().unwrap().len(), by_month.len());

    // MRR: each month starts where the last ended, its movements add up,
    // and it ends where the subscriptions say.
    let months = report["mrr"]["months"].as_array().unwrap();
    assert_eq!(months.len(), 24);
    let mut previous_end = Decimal::ZERO;
    for month in months {
        let start = money_of(&month["mrr_start"]);
        assert_eq!(start, previous_end, "{month}");
        let moved: Decimal = KINDS
            .iter()
            .map(|kind| money_of(&month[format!("{kind}_mrr")]))
            .sum();
        let end = money_of(&month["mrr_end"]);
        // Each kind is rounded on its own; the sum is within a cent per kind.
        assert!((start + moved - end).abs() <= Decimal::new(5, 2), "{month}");
        assert_eq!(money_of(&month["net_new_mrr"]), end - start);
        previous_end = end;
    }
    let exact = mrr_months(
        &mut conn,
        Seller::Platform,
        "USD",
        &super::months(day("2024-01-01"), day("2025-12-01")),
    )
    .unwrap();
    for window in exact.windows(2) {
        assert_eq!(window[0].end_12, window[1].start_12);
    }
    for month in &exact {
        assert_eq!(
            month.start_12 + month.deltas_12.iter().sum::<i64>(),
            month.end_12
        );
        assert_eq!(month.end_12, month_end_mrr[&month.month], "{}", month.month);
    }
    // Every change is recorded: what the subscriptions hold now is the
    // last movement's MRR, summed over tenants.
    let now_12 = mrr_now(&mut conn, &plans);
    let movements_12: i64 = mrr_customers::table
        .select(mrr_customers::mrr_12)
        .load::<i64>(&mut conn)
        .unwrap()
        .iter()
        .sum();
    assert_eq!(movements_12, now_12);
    // Customers: a churned customer is counted out, a returning one in.
    let last = exact.last().unwrap();
    let live_customers: i64 = mrr_customers::table
        .filter(mrr_customers::mrr_12.gt(0))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(last.customers_end, live_customers);
    assert!(exact.iter().any(|m| m.kind("reactivation").0 > 0));
    assert!(exact.iter().any(|m| m.kind("contraction").0 > 0));
    assert!(exact.iter().any(|m| m.kind("expansion").0 > 0));
    assert!(report["forecast"]["months"].as_array().unwrap().len() == 3);
    let segments = &report["segments"];
    assert_eq!(
        segments["active"].as_i64().unwrap() + segments["at_risk"].as_i64().unwrap(),
        live_customers
    );
    assert!(segments["churned"].as_i64().unwrap() > 0);
}

#[test]
fn subscriptions_older_than_the_mrr_tables_are_adopted_once() {
    let h = history(at("2026-01-10T00:00:00Z"));
    let acme = h.tenants.acme;
    let (_, invoice) = h.subscriptions.subscribe(acme, "team-annual").unwrap();
    h.subscriptions.invoice_paid(acme, invoice.id).unwrap();
    let mut conn = h.tenants.database.get().unwrap();
    // As if the subscription had been paid before MRR was kept.
    diesel::delete(mrr_customers::table)
        .execute(&mut conn)
        .unwrap();
    let now = at("2026-02-01T00:00:00Z");
    assert_eq!(mrr::adopt(&mut conn, &plans(), now).unwrap(), 1);
    assert_eq!(mrr::adopt(&mut conn, &plans(), now).unwrap(), 0);
    let mrr_12: i64 = mrr_customers::table
        .find((Seller::Platform.key(), acme.0))
        .select(mrr_customers::mrr_12)
        .first(&mut conn)
        .unwrap();
    assert_eq!(mrr_12, plan("team-annual").mrr_12());
}
