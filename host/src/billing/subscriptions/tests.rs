use super::*;
use crate::config::{Carryover, Interval};
use crate::db::testing::TwoTenants;
use crate::ledger::{PlatformAccount, WriterOptions};
use crate::units::{Currency, ManualClock, Money};

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn credits(whole: i64) -> Credits {
    Credits::from_whole(whole).unwrap()
}

fn starter() -> Plan {
    Plan {
        id: "starter".into(),
        name: "Starter".into(),
        price: Money::from_decimal("49.00".parse().unwrap(), Currency::parse("USD").unwrap())
            .unwrap(),
        interval: Interval::Month,
        credits: credits(1_000),
        carryover: Carryover {
            credits_max: credits(500),
            expires_after_periods: 1,
        },
        tenant: None,
        discount_percent: Default::default(),
    }
}

fn professional() -> Plan {
    Plan {
        id: "professional".into(),
        name: "Professional".into(),
        price: Money::from_decimal("149.00".parse().unwrap(), Currency::parse("USD").unwrap())
            .unwrap(),
        interval: Interval::Month,
        credits: credits(5_000),
        carryover: Carryover {
            credits_max: credits(5_000),
            expires_after_periods: 1,
        },
        tenant: None,
        discount_percent: Default::default(),
    }
}

struct Setup {
    subscriptions: Subscriptions,
    clock: Arc<ManualClock>,
    tenants: TwoTenants,
}

fn setup(start: &str) -> Setup {
    let start = at(start);
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
        plans: Arc::new(vec![starter(), professional()]),
        issuer: Arc::new(Issuer {
            name: "Tollgate".into(),
            address: String::new(),
            tax_rate: "0.2".parse().unwrap(),
            tax_name: "VAT".into(),
        }),
        clock: clock.clone(),
    };
    Setup {
        subscriptions,
        clock,
        tenants,
    }
}

impl Setup {
    fn available(&self, tenant: TenantId) -> Credits {
        let mut conn = self.tenants.database.get().unwrap();
        self.subscriptions.ledger.expire_due_blocking(100).unwrap();
        let wallet = queries::wallet_of(&mut conn, tenant).unwrap();
        queries::balance(&mut conn, wallet).unwrap().available
    }

    fn spend(&self, tenant: TenantId, id: &str, amount: i64) {
        let mut conn = self.tenants.database.get().unwrap();
        let wallet = queries::wallet_of(&mut conn, tenant).unwrap();
        self.subscriptions
            .ledger
            .submit_blocking(Command::Transfer {
                id: TransferId::new(id).unwrap(),
                debit: wallet,
                credit: PlatformAccount::Revenue.id(),
                amount: credits(amount),
                memo: String::new(),
            })
            .unwrap();
    }

    fn set_time(&self, text: &str) {
        let to = at(text).micros();
        self.clock.advance_micros(to - self.clock.now().micros());
    }

    fn invoice_of_period(&self, subscription: i64, period: i32) -> i64 {
        subscription_periods::table
            .find((subscription, period))
            .select(subscription_periods::invoice_id)
            .first(&mut *self.tenants.database.get().unwrap())
            .unwrap()
    }
}

#[test]
fn a_period_is_billed_then_granted_renewed_once_and_carries_over_its_unused_allowance() {
    let s = setup("2026-01-31T09:00:00Z");
    let acme = s.tenants.acme;
    let subs = &s.subscriptions;

    let (subscription, invoice) = subs.subscribe(acme, "starter").unwrap();
    assert_eq!(subscription.state, State::Incomplete);
    assert_eq!(
        (subscription.period_start, subscription.period_end),
        (at("2026-01-31T09:00:00Z"), at("2026-02-28T09:00:00Z"))
    );
    assert_eq!(invoice.display_number().as_deref(), Some("INV-000001"));
    assert_eq!(invoice.state, invoices::State::Open);
    assert_eq!(invoice.totals.total_minor, 5_880, "$49.00 and 20% VAT");
    assert_eq!(
        invoice.lines[0].description,
        "Starter plan, 2026-01-31 to 2026-02-28 (1000 credits)"
    );
    // Nothing is granted before the invoice is paid.
    assert_eq!(s.available(acme), Credits::ZERO);

    let paid = subs.invoice_paid(acme, invoice.id).unwrap();
    assert_eq!(paid.state, State::Active);
    assert_eq!(s.available(acme), credits(1_000));
    // A second notice of the same payment grants nothing more.
    subs.invoice_paid(acme, invoice.id).unwrap();
    assert_eq!(s.available(acme), credits(1_000));

    s.spend(acme, "spend-1", 300);
    assert_eq!(subs.renew_due().unwrap(), 0, "the period has not ended");

    // The period ends: the next one is billed, once; it stays active
    // until collecting its invoice fails.
    s.set_time("2026-02-28T09:00:00Z");
    assert_eq!(subs.renew_due().unwrap(), 1);
    assert_eq!(subs.renew_due().unwrap(), 0);
    let renewed = subs.current(acme).unwrap().unwrap();
    assert_eq!(
        (renewed.state, renewed.period, renewed.period_end),
        (State::Active, 1, at("2026-03-31T09:00:00Z"))
    );
    // The first allowance expired at the period's end.
    assert_eq!(s.available(acme), Credits::ZERO);

    // Paid: the allowance, and 500 of the 700 left unused (the plan's most).
    let second = s.invoice_of_period(renewed.id, 1);
    let active = subs.invoice_paid(acme, second).unwrap();
    assert_eq!(active.state, State::Active);
    assert_eq!(s.available(acme), credits(1_500));
    subs.invoice_paid(acme, second).unwrap();
    assert_eq!(s.available(acme), credits(1_500));

    // Canceled at the period's end: nothing more is billed, and what was
    // granted expires with the period.
    subs.cancel_at_period_end(acme).unwrap();
    s.set_time("2026-03-31T09:00:00Z");
    assert_eq!(subs.renew_due().unwrap(), 1);
    assert_eq!(subs.current(acme).unwrap(), None);
    assert_eq!(s.available(acme), Credits::ZERO);
    let mut conn = s.tenants.database.get().unwrap();
    let billed = invoices::list(&mut conn, acme, invoices::Kind::Invoice, None, 10).unwrap();
    let numbers: Vec<(String, invoices::State)> = billed
        .iter()
        .map(|document| (document.display_number().unwrap(), document.state))
        .collect();
    assert_eq!(
        numbers,
        [
            ("INV-000001".to_owned(), invoices::State::Paid),
            ("INV-000002".to_owned(), invoices::State::Paid),
        ]
    );
    // A canceled tenant may subscribe again.
    subs.subscribe(acme, "starter").unwrap();
}

#[test]
fn a_host_that_was_down_bills_every_period_it_missed() {
    let s = setup("2026-01-15T00:00:00Z");
    let acme = s.tenants.acme;
    let (_, invoice) = s.subscriptions.subscribe(acme, "starter").unwrap();
    s.subscriptions.invoice_paid(acme, invoice.id).unwrap();
    s.set_time("2026-04-20T00:00:00Z");
    let mut runs = Vec::new();
    loop {
        let moved = s.subscriptions.renew_due().unwrap();
        runs.push(moved);
        if moved == 0 {
            break;
        }
    }
    assert_eq!(runs, [1, 1, 1, 0]);
    let current = s.subscriptions.current(acme).unwrap().unwrap();
    assert_eq!(
        (current.period, current.period_start),
        (3, at("2026-04-15T00:00:00Z"))
    );
    // Periods that ended unpaid grant nothing when paid late; the current
    // one grants its allowance.
    s.subscriptions
        .invoice_paid(acme, s.invoice_of_period(current.id, 1))
        .unwrap();
    assert_eq!(s.available(acme), Credits::ZERO);
    let mut conn = s.tenants.database.get().unwrap();
    let current_invoice = s.invoice_of_period(current.id, 3);
    assert_eq!(
        invoices::get(&mut conn, acme, current_invoice)
            .unwrap()
            .state,
        invoices::State::Open,
        "an old period's payment does not settle the current one"
    );
    drop(conn);
    s.subscriptions
        .invoice_paid(acme, s.invoice_of_period(current.id, 3))
        .unwrap();
    assert_eq!(s.available(acme), credits(1_000));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let s = setup("2026-01-15T00:00:00Z");
    let (acme, globex) = (s.tenants.acme, s.tenants.globex);
    assert!(matches!(
        s.subscriptions.subscribe(acme, "platinum"),
        Err(SubscriptionError::UnknownPlan(plan)) if plan == "platinum"
    ));
    let (subscription, invoice) = s.subscriptions.subscribe(acme, "starter").unwrap();
    assert!(matches!(
        s.subscriptions.subscribe(acme, "starter"),
        Err(SubscriptionError::AlreadySubscribed(id)) if id == subscription.id
    ));
    // Globex cannot pay (and so be granted) Acme's period.
    assert!(matches!(
        s.subscriptions.invoice_paid(globex, invoice.id),
        Err(SubscriptionError::NotASubscriptionInvoice(_))
    ));
    assert_eq!(s.available(globex), Credits::ZERO);
    assert!(matches!(
        s.subscriptions.cancel_at_period_end(globex),
        Err(SubscriptionError::NotSubscribed)
    ));
    assert_eq!(s.subscriptions.current(globex).unwrap(), None);
}

#[test]
fn an_upgrade_is_prorated_at_once_and_a_downgrade_waits_for_the_period_end() {
    // April has 30 days; the upgrade comes with 10 of them left.
    let s = setup("2026-04-01T00:00:00Z");
    let acme = s.tenants.acme;
    let subs = &s.subscriptions;
    let (subscription, first) = subs.subscribe(acme, "starter").unwrap();
    subs.invoice_paid(acme, first.id).unwrap();
    assert_eq!(s.available(acme), credits(1_000));

    s.set_time("2026-04-21T00:00:00Z");
    let PlanChange::Upgraded {
        subscription: upgraded,
        invoice,
        proration,
    } = subs.change_plan(acme, "professional").unwrap()
    else {
        panic!("a dearer plan starts at once");
    };
    assert_eq!(upgraded.plan, "professional");
    // A third of $49.00 back, a third of $149.00 charged.
    assert_eq!(
        proration,
        periods::Proration {
            credit_minor: 1_633,
            charge_minor: 4_967,
            due_minor: 3_334
        }
    );
    let lines: Vec<(&str, i64)> = invoice
        .lines
        .iter()
        .map(|line| (line.description.as_str(), line.amount_minor))
        .collect();
    assert_eq!(
        lines,
        [
            (
                "Unused time on the Starter plan, 2026-04-21 to 2026-05-01",
                -1_633
            ),
            (
                "Remaining time on the Professional plan, 2026-04-21 to 2026-05-01",
                4_967
            ),
        ]
    );
    // $33.34 and 20% VAT ($6.668, so $6.67).
    assert_eq!(
        (
            invoice.totals.subtotal_minor,
            invoice.totals.tax_minor,
            invoice.totals.total_minor
        ),
        (3_334, 667, 4_001)
    );
    assert_eq!(s.available(acme), credits(1_000), "granted when paid");
    subs.invoice_paid(acme, invoice.id).unwrap();
    assert_eq!(
        s.available(acme),
        credits(5_000),
        "the 4,000 more of the new plan"
    );
    subs.invoice_paid(acme, invoice.id).unwrap();
    assert_eq!(s.available(acme), credits(5_000));

    // The next period bills the new plan, and carries the unused allowance
    // of the period before (the upgrade's extra credits are not allowance).
    s.set_time("2026-05-01T00:00:00Z");
    assert_eq!(subs.renew_due().unwrap(), 1);
    let second = s.invoice_of_period(subscription.id, 1);
    let mut conn = s.tenants.database.get().unwrap();
    let bill = invoices::get(&mut conn, acme, second).unwrap();
    assert_eq!(bill.totals.subtotal_minor, 14_900);
    subs.invoice_paid(acme, second).unwrap();
    assert_eq!(s.available(acme), credits(6_000));

    // A downgrade waits for the period's end.
    let PlanChange::Scheduled(scheduled) = subs.change_plan(acme, "starter").unwrap() else {
        panic!("a cheaper plan waits");
    };
    assert_eq!(
        (scheduled.plan.as_str(), scheduled.next_plan.as_deref()),
        ("professional", Some("starter"))
    );
    assert!(matches!(
        subs.change_plan(acme, "professional"),
        Err(SubscriptionError::SamePlan(plan)) if plan == "professional"
    ));
    s.set_time("2026-06-01T00:00:00Z");
    assert_eq!(subs.renew_due().unwrap(), 1);
    let june = subs.current(acme).unwrap().unwrap();
    assert_eq!((june.plan.as_str(), june.next_plan), ("starter", None));
    let third = s.invoice_of_period(subscription.id, 2);
    assert_eq!(
        invoices::get(&mut conn, acme, third)
            .unwrap()
            .totals
            .subtotal_minor,
        4_900
    );

    assert!(matches!(
        subs.change_plan(acme, "platinum"),
        Err(SubscriptionError::UnknownPlan(_))
    ));
    assert!(matches!(
        subs.change_plan(s.tenants.globex, "professional"),
        Err(SubscriptionError::NotSubscribed)
    ));
}

#[test]
fn a_custom_plan_is_offered_to_its_tenant_only() {
    let mut s = setup("2026-01-15T00:00:00Z");
    let (acme, globex) = (s.tenants.acme, s.tenants.globex);
    let custom = Plan {
        id: "acme-enterprise".into(),
        name: "Acme Enterprise".into(),
        tenant: Some(acme),
        credits: credits(50_000),
        ..professional()
    };
    s.subscriptions.plans = Arc::new(vec![starter(), professional(), custom]);
    let refused = s.subscriptions.subscribe(globex, "acme-enterprise");
    assert!(
        matches!(&refused, Err(SubscriptionError::UnknownPlan(id)) if id == "acme-enterprise"),
        "{refused:?}"
    );
    s.subscriptions.subscribe(globex, "starter").unwrap();
    assert!(matches!(
        s.subscriptions.change_plan(globex, "acme-enterprise"),
        Err(SubscriptionError::UnknownPlan(_))
    ));
    let (subscription, invoice) = s.subscriptions.subscribe(acme, "acme-enterprise").unwrap();
    assert_eq!(subscription.plan, "acme-enterprise");
    assert_eq!(invoice.totals.subtotal_minor, 14_900);
    s.subscriptions.invoice_paid(acme, invoice.id).unwrap();
    assert_eq!(s.available(acme), credits(50_000));
}

#[test]
fn an_upgrade_that_costs_nothing_is_paid_as_it_is_issued() {
    let mut s = setup("2026-01-15T00:00:00Z");
    let acme = s.tenants.acme;
    let plus = Plan {
        id: "starter-plus".into(),
        name: "Starter Plus".into(),
        credits: credits(2_000),
        ..starter()
    };
    s.subscriptions.plans = Arc::new(vec![starter(), professional(), plus]);
    let (_, invoice) = s.subscriptions.subscribe(acme, "starter").unwrap();
    s.subscriptions.invoice_paid(acme, invoice.id).unwrap();
    s.set_time("2026-01-30T09:00:00Z");
    let PlanChange::Upgraded { invoice, .. } =
        s.subscriptions.change_plan(acme, "starter-plus").unwrap()
    else {
        panic!("a larger plan at the same price is an upgrade")
    };
    assert_eq!(
        (invoice.totals.total_minor, invoice.state),
        (0, invoices::State::Paid)
    );
    // The 1,000 credits more, until the period ends.
    assert_eq!(s.available(acme), credits(2_000));
}
