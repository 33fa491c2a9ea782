//! Payments through the real card plugin against a fake card gateway on
//! loopback: renewals collected from the saved card, the dunning schedule
//! when it is declined, and two hosts on one database; SQLite or
//! PostgreSQL (TEST_DATABASE_URL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tollgate::billing::invoices::{self, Issuer};
use tollgate::billing::payments::{MethodKind, NewMethod, PaymentState, Payments};
use tollgate::billing::subscriptions::{State, Subscriptions};
use tollgate::config::PaymentSettings;
use tollgate::db::testing::TestDatabase;
use tollgate::ids::TenantId;
use tollgate::ledger::{Ledger, WriterOptions, queries};
use tollgate::metering::Meter;
use tollgate::plugins::{self, Registry};
use tollgate::runtime::{HttpPolicy, Runtime, RuntimeConfig};
use tollgate::secrets::SecretBox;
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, ManualClock, Timestamp};

#[allow(dead_code)]
mod support;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

const DAY_US: i64 = 86_400_000_000;

/// The gateway's answers: payment intent `pi_{n}` approved, or declined.
fn approved(n: u32) -> (u16, String) {
    (200, format!(r#"{{"id": "pi_{n}", "status": "succeeded"}}"#))
}

fn declined(n: u32) -> (u16, String) {
    (
        402,
        format!(
            r#"{{"error": {{"type": "card_error", "code": "card_declined", "message": "Your card was declined.", "payment_intent": {{"id": "pi_{n}"}}}}}}"#
        ),
    )
}

struct Host {
    payments: Arc<Payments>,
}

struct World {
    gateway: support::FakeServer,
    clock: Arc<ManualClock>,
    database: tollgate::db::Database,
    acme: TenantId,
    /// Acme's saved card.
    card: i64,
    hosts: Vec<Host>,
    /// The credit packages of `config/pricing.toml`.
    packages: Vec<tollgate::config::CreditPackage>,
    _db: TestDatabase,
}

impl World {
    /// Acme, with a saved card, and `n_hosts` hosts on one database whose
    /// card gateway answers `gateway` in order.
    fn new(gateway: Vec<(u16, String)>, n_hosts: usize) -> World {
        let gateway = support::FakeServer::start(gateway);
        let db = TestDatabase::new();
        let database = db.open();
        let clock = Arc::new(ManualClock::new(at("2026-01-15T00:00:00Z")));
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let mut conn = database.get().unwrap();
        let gateway_host = gateway.addr.to_string();
        for (name, manifest, wasm) in tollgate::runtime::artifacts::FIRST_PARTY {
            if *name == "bank-transfer" {
                let hosts = plugins::Manifest::parse(manifest).unwrap().http_hosts;
                plugins::install(&mut conn, &runtime, manifest, wasm, &hosts, clock.now()).unwrap();
            }
            if *name == "card" {
                // The gateway is the fake one, approved for the plugin.
                let manifest = manifest.replace("api.stripe.com", &gateway_host);
                plugins::install(
                    &mut conn,
                    &runtime,
                    &manifest,
                    wasm,
                    std::slice::from_ref(&gateway_host),
                    clock.now(),
                )
                .unwrap();
            }
        }
        let (acme, _) =
            tenants::create(&mut conn, "Acme", None, Credits::ZERO, clock.now()).unwrap();
        drop(conn);
        let pricing = tollgate::config::parse_pricing(
            std::path::Path::new("pricing.toml"),
            include_str!("../../config/pricing.toml"),
        )
        .unwrap();
        let plans = Arc::new(
            tollgate::config::parse_plans(
                std::path::Path::new("plans.toml"),
                include_str!("../../config/plans.toml"),
            )
            .unwrap(),
        );
        let settings = PaymentSettings {
            dunning_retry_days: vec![1, 1, 8],
            providers: BTreeMap::from([
                (
                    "bank-transfer".to_owned(),
                    BTreeMap::from([
                        ("account_name".to_owned(), "Tollgate Ltd".to_owned()),
                        ("iban".to_owned(), "GB33BUKB20201555555555".to_owned()),
                        ("bic".to_owned(), "BUKBGB22".to_owned()),
                        ("callback_secret".to_owned(), "bank-secret".to_owned()),
                    ]),
                ),
                (
                    "card".to_owned(),
                    BTreeMap::from([
                        ("secret_key".to_owned(), "sk_test_1".to_owned()),
                        ("webhook_secret".to_owned(), "whsec_1".to_owned()),
                        ("api_base_url".to_owned(), gateway.base_url()),
                    ]),
                ),
            ]),
        };
        let hosts: Vec<Host> = (0..n_hosts)
            .map(|_| {
                let ledger =
                    Ledger::start(database.clone(), clock.clone(), WriterOptions::default())
                        .unwrap();
                let meter = Arc::new(Meter::new(
                    database.clone(),
                    ledger.clone(),
                    Arc::new(Registry::new(runtime.clone())),
                    Arc::new(SecretBox::new([9; 32])),
                    Arc::new(pricing.book.clone()),
                    clock.clone(),
                    HttpPolicy::default(),
                    Duration::from_secs(300),
                ));
                let subscriptions = Arc::new(Subscriptions {
                    database: database.clone(),
                    ledger,
                    plans: plans.clone(),
                    issuer: Arc::new(Issuer {
                        name: "Tollgate".into(),
                        address: String::new(),
                        tax_rate: "0".parse().unwrap(),
                        tax_name: "Tax".into(),
                    }),
                    clock: clock.clone(),
                });
                Host {
                    payments: Arc::new(Payments::new(meter, subscriptions, &settings)),
                }
            })
            .collect();
        let card = hosts[0]
            .payments
            .add_method(
                acme.id,
                &NewMethod {
                    provider: "card".into(),
                    method: MethodKind::Card,
                    token: "pm_card_visa".into(),
                    label: None,
                    make_default: false,
                },
            )
            .unwrap();
        assert!(card.is_default, "the first method is the default");
        assert_eq!(card.label, "card …visa via card");
        World {
            gateway,
            clock,
            database,
            acme: acme.id,
            card: card.id,
            hosts,
            packages: pricing.packages.clone(),
            _db: db,
        }
    }

    fn payments(&self) -> &Payments {
        &self.hosts[0].payments
    }

    fn subscriptions(&self) -> &Subscriptions {
        &self.payments().subscriptions
    }

    fn advance_days(&self, days: i64) {
        self.clock.advance_micros(days * DAY_US);
    }

    fn state(&self) -> State {
        self.subscriptions()
            .current(self.acme)
            .unwrap()
            .map_or(State::Canceled, |subscription| subscription.state)
    }

    fn available(&self) -> Credits {
        let ledger = &self.subscriptions().ledger;
        ledger.expire_due_blocking(1_000).unwrap();
        let mut conn = self.database.get().unwrap();
        let wallet = queries::wallet_of(&mut conn, self.acme).unwrap();
        queries::balance(&mut conn, wallet).unwrap().available
    }

    fn invoice_state(&self, invoice: i64) -> invoices::State {
        let mut conn = self.database.get().unwrap();
        invoices::get(&mut conn, self.acme, invoice).unwrap().state
    }

    /// Subscribes Acme to Starter and pays the first period with its card.
    fn subscribe(&self) {
        let (_, invoice) = self
            .subscriptions()
            .subscribe(self.acme, "starter")
            .unwrap();
        let paid = self
            .payments()
            .pay(self.acme, invoice.id, self.card)
            .unwrap();
        assert_eq!(paid.state, PaymentState::Succeeded, "{paid:?}");
        assert_eq!(self.state(), State::Active);
        assert_eq!(self.available(), credits(1_000));
    }

    /// The renewal invoice of the current period.
    fn renewal_invoice(&self) -> i64 {
        let payments = self.payments().list(self.acme).unwrap();
        payments[0].invoice
    }
}

fn credits(whole: i64) -> Credits {
    Credits::from_whole(whole).unwrap()
}

#[test]
fn a_declined_renewal_goes_through_dunning_and_recovers() {
    let world = World::new(vec![approved(1), declined(2), declined(3), approved(4)], 1);
    world.subscribe();
    let payments = world.payments();

    // The period ends: the renewal is billed and charged to the card,
    // which is declined. The tenant is past due, retried after one day.
    world
        .clock
        .advance_micros(at("2026-02-15T00:00:00Z").micros() - world.clock.now().micros());
    assert_eq!(world.subscriptions().renew_due().unwrap(), 1);
    assert_eq!(payments.collect_due().unwrap(), 1);
    assert_eq!(world.state(), State::PastDue);
    let invoice = world.renewal_invoice();
    assert_eq!(world.invoice_state(invoice), invoices::State::Open);
    let failed = &payments.list(world.acme).unwrap()[0];
    assert_eq!(
        (failed.state, failed.failure_reason.as_deref()),
        (
            PaymentState::Failed,
            Some("card_declined: Your card was declined.")
        )
    );
    assert_eq!(world.available(), Credits::ZERO, "nothing granted unpaid");
    assert_eq!(payments.collect_due().unwrap(), 0, "not before a day");
    world.advance_days(1);
    assert_eq!(payments.collect_due().unwrap(), 1);
    assert_eq!(world.state(), State::PastDue);

    // The second retry, a day later, goes through: active again, the
    // period's allowance and the carryover (500 of the 1,000 left) granted.
    world.advance_days(1);
    assert_eq!(payments.collect_due().unwrap(), 1);
    assert_eq!(world.state(), State::Active);
    assert_eq!(world.invoice_state(invoice), invoices::State::Paid);
    assert_eq!(world.available(), credits(1_500));
    assert_eq!(
        payments.collect_due().unwrap(),
        0,
        "nothing left to collect"
    );

    let states: Vec<PaymentState> = payments
        .list(world.acme)
        .unwrap()
        .iter()
        .rev()
        .map(|payment| payment.state)
        .collect();
    assert_eq!(
        states,
        [
            PaymentState::Succeeded,
            PaymentState::Failed,
            PaymentState::Failed,
            PaymentState::Succeeded
        ]
    );
    // Each attempt asked the gateway once, with a key of its own, for the
    // plan's price in cents, with the saved card's token.
    let requests = world.gateway.requests();
    let keys: Vec<&str> = requests
        .iter()
        .map(|request| request.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "tollgate-payment-1",
            "tollgate-payment-2",
            "tollgate-payment-3",
            "tollgate-payment-4"
        ]
    );
    for request in &requests {
        assert!(
            request
                .body
                .starts_with("amount=4900&currency=usd&customer=tenant-")
                && request.body.contains("payment_method=pm_card_visa"),
            "{}",
            request.body
        );
    }
}

#[test]
fn a_renewal_declined_through_every_retry_is_uncollectible_and_ends_the_subscription() {
    let world = World::new(
        vec![
            approved(1),
            declined(2),
            declined(3),
            declined(4),
            declined(5),
        ],
        1,
    );
    world.subscribe();
    let payments = world.payments();
    world
        .clock
        .advance_micros(at("2026-02-15T00:00:00Z").micros() - world.clock.now().micros());
    assert_eq!(world.subscriptions().renew_due().unwrap(), 1);
    let renewed = world.subscriptions().current(world.acme).unwrap().unwrap();
    let mut attempts = vec![payments.collect_due().unwrap()];
    // Retries after 1, 1 and 8 days; nothing is tried in between.
    for days in [1, 1, 7, 1] {
        world.advance_days(days);
        attempts.push(payments.collect_due().unwrap());
    }
    assert_eq!(attempts, [1, 1, 1, 0, 1]);
    assert_eq!(
        world.state(),
        State::Canceled,
        "no live subscription is left"
    );
    let mut conn = world.database.get().unwrap();
    let renewal = invoices::list(&mut conn, world.acme, invoices::Kind::Invoice, None, 10)
        .unwrap()
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(renewal.state, invoices::State::Uncollectible);
    drop(conn);
    assert_eq!(world.available(), Credits::ZERO);
    world.advance_days(30);
    assert_eq!(payments.collect_due().unwrap(), 0);
    assert_eq!(world.subscriptions().renew_due().unwrap(), 0);
    assert_eq!(world.gateway.requests().len(), 5);
    assert_eq!(
        renewed.state,
        State::Active,
        "active until the first decline"
    );
}

#[test]
fn two_hosts_renew_and_charge_each_period_once() {
    let world = World::new(vec![approved(1), approved(2)], 2);
    world.subscribe();
    world
        .clock
        .advance_micros(at("2026-02-15T00:00:00Z").micros() - world.clock.now().micros());
    // Both hosts sweep at the same moment.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = world
        .hosts
        .iter()
        .map(|host| {
            let (payments, barrier) = (host.payments.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let renewed = payments.subscriptions.renew_due().unwrap();
                let collected = payments.collect_due().unwrap();
                (renewed, collected)
            })
        })
        .collect();
    let results: Vec<(usize, usize)> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    let renewed: usize = results.iter().map(|(renewed, _)| renewed).sum();
    let collected: usize = results.iter().map(|(_, collected)| collected).sum();
    assert_eq!((renewed, collected), (1, 1), "{results:?}");
    assert_eq!(world.gateway.requests().len(), 2, "one charge per period");
    assert_eq!(world.state(), State::Active);
    assert_eq!(world.available(), credits(1_500));
    let succeeded = world
        .payments()
        .list(world.acme)
        .unwrap()
        .iter()
        .filter(|payment| payment.state == PaymentState::Succeeded)
        .count();
    assert_eq!(succeeded, 2);
}

impl World {
    /// Sells Acme a credit package: the purchase and its open invoice.
    fn buy(&self, package: &str) -> (tollgate::billing::purchases::Purchase, invoices::Document) {
        let mut conn = self.database.get().unwrap();
        tollgate::billing::purchases::buy(
            &mut conn,
            &self.subscriptions().issuer,
            &self.packages,
            self.acme,
            package,
            self.clock.now(),
        )
        .unwrap()
    }

    /// Saves a bank transfer as one of Acme's payment methods.
    fn save_bank_transfer(&self, make_default: bool) -> tollgate::billing::payments::PaymentMethod {
        self.payments()
            .add_method(
                self.acme,
                &NewMethod {
                    provider: "bank-transfer".into(),
                    method: MethodKind::BankTransfer,
                    token: String::new(),
                    label: None,
                    make_default,
                },
            )
            .unwrap()
    }

    fn set_time(&self, text: &str) {
        let to = at(text).micros();
        assert!(to >= self.clock.now().micros(), "time runs forward");
        self.clock.advance_micros(to - self.clock.now().micros());
    }

    /// Spends `whole` credits of Acme's (a call's charge, in short).
    fn spend(&self, id: &str, whole: i64) {
        let mut conn = self.database.get().unwrap();
        let wallet = queries::wallet_of(&mut conn, self.acme).unwrap();
        self.subscriptions()
            .ledger
            .submit_blocking(tollgate::ledger::Command::Transfer {
                id: tollgate::ledger::TransferId::new(id).unwrap(),
                debit: wallet,
                credit: tollgate::ledger::PlatformAccount::Revenue.id(),
                amount: credits(whole),
                memo: String::new(),
            })
            .unwrap();
    }

    /// Renews what is due and collects it, as the scheduler does.
    fn sweep(&self) -> (usize, usize) {
        (
            self.subscriptions().renew_due().unwrap(),
            self.payments().collect_due().unwrap(),
        )
    }

    /// The sum of Acme's wallet's transfers of `kind`.
    fn total(&self, kind: tollgate::ledger::TransferKind) -> Credits {
        let mut conn = self.database.get().unwrap();
        let wallet = queries::wallet_of(&mut conn, self.acme).unwrap();
        let filter = queries::HistoryFilter {
            kinds: vec![kind],
            ..Default::default()
        };
        let (mut sum, mut before) = (Credits::ZERO, None);
        loop {
            let page =
                queries::history_filtered(&mut conn, wallet, &filter, before, 1_000).unwrap();
            for (_, transfer) in &page.entries {
                sum = sum.checked_add(transfer.amount).unwrap();
            }
            match page.next {
                Some(next) => before = Some(next),
                None => return sum,
            }
        }
    }
}

/// A year of billing for one tenant under a controlled clock: Starter, spent
/// each month, twelve renewals with carryover and expiry, an upgrade in the
/// middle of a period, a downgrade, a declined card that goes through
/// dunning and recovers, and a package bought by bank transfer and
/// confirmed. Then invoices, payments, grants and the ledger reconcile.
#[test]
fn a_simulated_year_reconciles_to_the_cent() {
    // The card gateway's answers, in the order the year asks: period 0,
    // renewals 1 to 3, the upgrade, renewals 4 to 7, renewal 8 declined
    // twice then approved, renewals 9 to 12.
    let mut answers = Vec::new();
    for n in 1..=16 {
        answers.push(match n {
            10 | 11 => declined(n),
            _ => approved(n),
        });
    }
    let world = World::new(answers, 1);
    let payments = world.payments();
    let subscriptions = world.subscriptions();
    let acme = world.acme;

    // Period 0, from 15 January: 1,000 credits; 300 spent, 700 unused.
    world.subscribe();
    world.spend("jan", 300);
    // Each renewal: carried = the unused allowance, at most the plan's
    // credits_max (Starter 500, Professional 5,000), spent first.
    let expect = |when: &str, period: u32, plan: &str, available: i64| {
        world.set_time(when);
        assert_eq!(world.sweep(), (1, 1), "{when}");
        let current = subscriptions.current(acme).unwrap().unwrap();
        assert_eq!(
            (current.period, current.plan.as_str(), current.state),
            (period, plan, State::Active),
            "{when}"
        );
        assert_eq!(world.available(), credits(available), "{when}");
    };
    expect("2026-02-15T00:00:00Z", 1, "starter", 500 + 1_000);
    world.spend("feb", 800); // 500 carried, 300 of the allowance: 700 unused
    expect("2026-03-15T00:00:00Z", 2, "starter", 500 + 1_000);
    world.spend("mar", 200); // carried credits only: 1,000 unused
    expect("2026-04-15T00:00:00Z", 3, "starter", 500 + 1_000);

    // Half-way through the 30 days of period 3, an upgrade to Professional:
    // $24.50 of Starter credited, $74.50 of Professional charged, $50.00
    // paid by card; 4,000 more credits until the period ends.
    world.set_time("2026-04-30T00:00:00Z");
    let tollgate::billing::subscriptions::PlanChange::Upgraded {
        invoice, proration, ..
    } = subscriptions.change_plan(acme, "professional").unwrap()
    else {
        panic!("an upgrade")
    };
    assert_eq!(
        (
            proration.credit_minor,
            proration.charge_minor,
            invoice.totals.total_minor
        ),
        (2_450, 7_450, 5_000)
    );
    let paid = payments.pay(acme, invoice.id, world.card).unwrap();
    assert_eq!(paid.state, PaymentState::Succeeded);
    assert_eq!(world.available(), credits(500 + 1_000 + 4_000));
    world.spend("apr", 3_000); // carried 500, allowance 1,000, upgrade 1,500
    expect("2026-05-15T00:00:00Z", 4, "professional", 5_000);
    world.spend("may", 1_000); // 4,000 unused
    expect("2026-06-15T00:00:00Z", 5, "professional", 4_000 + 5_000);
    // A downgrade waits for the period's end.
    let scheduled = subscriptions.change_plan(acme, "starter").unwrap();
    assert!(matches!(
        scheduled,
        tollgate::billing::subscriptions::PlanChange::Scheduled(_)
    ));
    world.spend("jun", 4_500); // carried 4,000, allowance 500: 4,500 unused
    expect("2026-07-15T00:00:00Z", 6, "starter", 500 + 1_000);
    expect("2026-08-15T00:00:00Z", 7, "starter", 500 + 1_000);
    world.spend("aug", 500); // carried only: 1,000 unused

    // Renewal 8: the card is declined twice; past due, nothing granted,
    // until the second retry goes through two days later.
    world.set_time("2026-09-15T00:00:00Z");
    assert_eq!(world.sweep(), (1, 1));
    assert_eq!(world.state(), State::PastDue);
    assert_eq!(world.available(), Credits::ZERO);
    world.set_time("2026-09-16T00:00:00Z");
    assert_eq!(world.sweep(), (0, 1));
    assert_eq!(world.state(), State::PastDue);
    world.set_time("2026-09-17T00:00:00Z");
    assert_eq!(world.sweep(), (0, 1));
    assert_eq!(world.state(), State::Active);
    assert_eq!(world.available(), credits(500 + 1_000));
    world.spend("sep", 1_200); // carried 500, allowance 700: 300 unused
    expect("2026-10-15T00:00:00Z", 9, "starter", 300 + 1_000);

    // A package of 1,000 credits by bank transfer ($10.00 less 5%): pending,
    // nothing granted, until the operator confirms the transfer arrived.
    world.set_time("2026-10-20T00:00:00Z");
    let bank = world.save_bank_transfer(false);
    let (purchase, package_invoice) = world.buy("pack-1000");
    assert_eq!(package_invoice.totals.total_minor, 950);
    let pending = payments.pay(acme, package_invoice.id, bank.id).unwrap();
    assert_eq!(pending.state, PaymentState::Pending);
    assert_eq!(world.available(), credits(1_300));
    world.set_time("2026-10-22T00:00:00Z");
    payments.record_received(acme, package_invoice.id).unwrap();
    assert_eq!(world.available(), credits(2_300));
    world.spend("oct", 1_500); // carried 300, allowance 1,000, package 200
    expect("2026-11-15T00:00:00Z", 10, "starter", 1_000 + 800);
    world.spend("nov", 100); // 900 unused
    expect("2026-12-15T00:00:00Z", 11, "starter", 500 + 1_000 + 800);
    expect("2027-01-15T00:00:00Z", 12, "starter", 500 + 1_000 + 800);
    world.set_time("2027-01-20T00:00:00Z");
    assert_eq!(world.sweep(), (0, 0), "twelve renewals, no more");

    // Invoices: thirteen periods, the upgrade and the package, all paid,
    // numbered without gaps.
    let mut conn = world.database.get().unwrap();
    let billed = invoices::list(&mut conn, acme, invoices::Kind::Invoice, None, 100).unwrap();
    let numbers: Vec<String> = billed
        .iter()
        .map(|document| document.display_number().unwrap())
        .collect();
    let expected_numbers: Vec<String> = (1..=15).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected_numbers);
    assert!(
        billed
            .iter()
            .all(|document| document.state == invoices::State::Paid)
    );
    let invoiced: i64 = billed
        .iter()
        .map(|document| document.totals.total_minor)
        .sum();
    // Starter 11 × $49.00, Professional 2 × $149.00, the upgrade $50.00,
    // the package $9.50.
    assert_eq!(invoiced, 11 * 4_900 + 2 * 14_900 + 5_000 + 950);
    drop(conn);

    // Payments: one succeeded for each invoice, and the two declines.
    let all = payments.list(acme).unwrap();
    let succeeded: i64 = all
        .iter()
        .filter(|payment| payment.state == PaymentState::Succeeded)
        .map(|payment| payment.amount_minor)
        .sum();
    assert_eq!(succeeded, invoiced);
    let states: Vec<(PaymentState, &str)> = all
        .iter()
        .map(|payment| (payment.state, payment.provider.as_str()))
        .collect();
    assert_eq!(states.len(), 17);
    assert_eq!(
        states
            .iter()
            .filter(|(state, _)| *state == PaymentState::Failed)
            .count(),
        2
    );
    assert_eq!(world.gateway.requests().len(), 16);
    assert!(purchase.id > 0);

    // The ledger: granted = allowances (13 periods) + carried + the upgrade's
    // 4,000 + the package; all of it spent, expired or still available.
    use tollgate::ledger::TransferKind;
    let allowances = 11 * 1_000 + 2 * 5_000;
    // Periods 1 to 12.
    let carried: i64 = [500, 500, 500, 0, 4_000, 500, 500, 500, 300, 0, 500, 500]
        .iter()
        .sum();
    assert_eq!(
        world.total(TransferKind::Grant),
        credits(allowances + carried + 4_000 + 1_000)
    );
    let spent = 300 + 800 + 200 + 3_000 + 1_000 + 4_500 + 500 + 1_200 + 1_500 + 100;
    assert_eq!(world.total(TransferKind::Transfer), credits(spent));
    assert_eq!(world.available(), credits(2_300));
    assert_eq!(
        world.total(TransferKind::Expire),
        credits(allowances + carried + 5_000 - spent - 2_300)
    );
    assert_eq!(world.total(TransferKind::Expire), credits(18_900));
    let mut conn = world.database.get().unwrap();
    let report = tollgate::ledger::audit::audit(&mut conn).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_refund_gives_the_money_back_takes_back_unspent_credits_and_issues_a_credit_note() {
    let world = World::new(
        vec![
            approved(1),
            (200, r#"{"id": "re_1", "status": "succeeded"}"#.to_owned()),
        ],
        1,
    );
    let payments = world.payments();
    let acme = world.acme;
    let (_, invoice) = world.buy("pack-1000");
    let paid = payments.pay(acme, invoice.id, world.card).unwrap();
    assert_eq!(paid.state, PaymentState::Succeeded);
    world.spend("used", 300);
    assert_eq!(world.available(), credits(700));

    // Another tenant's refund of it finds nothing.
    assert!(matches!(
        payments.refund(TenantId(acme.0 + 1000), paid.id),
        Err(tollgate::billing::payments::PaymentError::PaymentNotFound(
            _
        ))
    ));
    let (refund, note) = payments.refund(acme, paid.id).unwrap();
    assert_eq!(
        (
            refund.state,
            refund.amount_minor,
            refund.credits_revoked,
            refund.provider_reference.as_deref()
        ),
        (PaymentState::Succeeded, 950, credits(700), Some("re_1"))
    );
    // The 300 spent stay spent; the 700 left are gone.
    assert_eq!(world.available(), Credits::ZERO);
    assert_eq!(
        (note.kind, note.credits_invoice, note.totals.total_minor),
        (invoices::Kind::CreditNote, Some(invoice.id), 950)
    );
    assert_eq!(note.display_number().as_deref(), Some("CN-000001"));
    assert_eq!(
        note.lines[0].description,
        "Refund of INV-000001: 1000 credits (package pack-1000, 5% off)"
    );
    assert_eq!(refund.credit_note, Some(note.id));
    // Once is all.
    assert!(matches!(
        payments.refund(acme, paid.id),
        Err(tollgate::billing::payments::PaymentError::AlreadyRefunded { .. })
    ));
    let requests = world.gateway.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[1].path.as_str(), requests[1].body.as_str()),
        ("/v1/refunds", "payment_intent=pi_1&amount=950")
    );
    assert_eq!(
        requests[1].header("idempotency-key"),
        Some(format!("tollgate-refund-{}", refund.id).as_str())
    );
    let mut conn = world.database.get().unwrap();
    let report = tollgate::ledger::audit::audit(&mut conn).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn what_a_stopped_host_paid_but_did_not_grant_is_granted_by_the_next_sweep() {
    use diesel::prelude::*;
    let world = World::new(Vec::new(), 1);
    let payments = world.payments();
    let acme = world.acme;
    let buy = |package: &str| world.buy(package).1;
    // A host marked one invoice paid and died before granting.
    let first = buy("pack-500");
    let mut conn = world.database.get().unwrap();
    invoices::mark_paid(&mut conn, acme, first.id, world.clock.now()).unwrap();
    drop(conn);
    // Another recorded a bank transfer's success and died before settling.
    let second = buy("pack-1000");
    let bank = world.save_bank_transfer(true);
    let pending = payments.pay(acme, second.id, bank.id).unwrap();
    let mut conn = world.database.get().unwrap();
    use tollgate::db::schema::payments as rows;
    diesel::update(rows::table.find(pending.id))
        .set(rows::state.eq("succeeded"))
        .execute(&mut conn)
        .unwrap();
    drop(conn);
    assert_eq!(world.available(), Credits::ZERO);

    assert_eq!(payments.settle_paid().unwrap(), 2);
    assert_eq!(world.available(), credits(1_500));
    assert_eq!(world.invoice_state(second.id), invoices::State::Paid);
    assert_eq!(payments.settle_paid().unwrap(), 0, "nothing more to do");
    assert_eq!(world.available(), credits(1_500));
}

/// A card gateway's webhook, signed as Stripe signs them.
fn stripe_webhook(
    secret: &[u8],
    event: &str,
    kind: &str,
    intent: &str,
) -> tollgate::runtime::Callback {
    let body = format!(
        r#"{{"id": "{event}", "type": "{kind}", "data": {{"object": {{"id": "{intent}", "amount": 500, "currency": "usd", "last_payment_error": {{"code": "card_declined", "message": "Declined."}}}}}}}}"#
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature = support::hmac_sha256_hex(secret, format!("{now}.{body}").as_bytes());
    tollgate::runtime::Callback {
        headers: vec![tollgate::runtime::Field {
            name: "Stripe-Signature".into(),
            value: format!("t={now},v1={signature}"),
        }],
        body: body.into_bytes(),
    }
}

#[test]
fn card_webhooks_replayed_out_of_order_or_forged_never_grant_twice() {
    use tollgate::billing::payments::{Notified, PaymentError};
    // Both cards ask for authentication: the outcome comes by webhook.
    let world = World::new(
        vec![
            (
                200,
                r#"{"id": "pi_a", "status": "requires_action"}"#.to_owned(),
            ),
            (
                200,
                r#"{"id": "pi_b", "status": "requires_action"}"#.to_owned(),
            ),
            (
                200,
                r#"{"id": "pi_c", "status": "requires_action"}"#.to_owned(),
            ),
            (
                200,
                r#"{"id": "pi_d", "status": "requires_action"}"#.to_owned(),
            ),
            approved(5),
        ],
        1,
    );
    let payments = world.payments();
    let acme = world.acme;
    let pay = || {
        let (_, invoice) = world.buy("pack-500");
        let payment = payments.pay(acme, invoice.id, world.card).unwrap();
        assert_eq!(payment.state, PaymentState::Pending, "{payment:?}");
        (invoice.id, payment.id)
    };
    let (invoice_a, _) = pay();
    let (invoice_b, payment_b) = pay();
    let notify = |event: &str, kind: &str, intent: &str| {
        payments
            .notify("card", stripe_webhook(b"whsec_1", event, kind, intent))
            .unwrap()
    };
    let applied = |applied: usize, duplicates: usize| Notified {
        events: 1,
        duplicates,
        applied,
    };

    // A: the success, then a failure sent earlier that arrives late.
    assert_eq!(
        notify("evt_a2", "payment_intent.succeeded", "pi_a"),
        applied(1, 0)
    );
    assert_eq!(world.available(), credits(500));
    assert_eq!(
        notify("evt_a1", "payment_intent.payment_failed", "pi_a"),
        applied(0, 0)
    );
    // B: a failure, then the success of the customer's second try.
    assert_eq!(
        notify("evt_b1", "payment_intent.payment_failed", "pi_b"),
        applied(1, 0)
    );
    let failed = payments.list(acme).unwrap();
    let failed = failed
        .iter()
        .find(|payment| payment.id == payment_b)
        .unwrap();
    assert_eq!(
        (failed.state, failed.failure_reason.as_deref()),
        (PaymentState::Failed, Some("card_declined: Declined."))
    );
    assert_eq!(world.available(), credits(500));
    assert_eq!(
        notify("evt_b2", "payment_intent.succeeded", "pi_b"),
        applied(1, 0)
    );
    assert_eq!(world.available(), credits(1_000));
    // Every one of them replayed: nothing more.
    for (event, kind, intent) in [
        ("evt_a1", "payment_intent.payment_failed", "pi_a"),
        ("evt_a2", "payment_intent.succeeded", "pi_a"),
        ("evt_b1", "payment_intent.payment_failed", "pi_b"),
        ("evt_b2", "payment_intent.succeeded", "pi_b"),
    ] {
        assert_eq!(notify(event, kind, intent), applied(0, 1));
    }
    // Forged: signed with a guessed secret; refused, nothing read.
    let forged = payments.notify(
        "card",
        stripe_webhook(b"whsec_guess", "evt_c", "payment_intent.succeeded", "pi_a"),
    );
    assert!(
        matches!(&forged, Err(PaymentError::Forged(reason)) if reason == "the signature does not match the body"),
        "{forged:?}"
    );
    assert_eq!(world.available(), credits(1_000));
    // A refund made at the provider for a payment still pending grants
    // nothing and settles nothing.
    let (invoice_c, _) = pay();
    assert_eq!(notify("evt_c1", "charge.refunded", "pi_c"), applied(0, 0));
    assert_eq!(world.available(), credits(1_000));
    assert_eq!(world.invoice_state(invoice_c), invoices::State::Open);
    // D fails, the tenant pays the invoice again and it goes through; then
    // the provider reports D succeeded after all: the invoice is settled
    // once, the credits granted once, and the notice is answered.
    let (invoice_d, payment_d) = pay();
    assert_eq!(
        notify("evt_d1", "payment_intent.payment_failed", "pi_d"),
        applied(1, 0)
    );
    let again = payments.pay(acme, invoice_d, world.card).unwrap();
    assert_eq!(again.state, PaymentState::Succeeded);
    assert_eq!(world.available(), credits(1_500));
    notify("evt_d2", "payment_intent.succeeded", "pi_d");
    assert_eq!(world.available(), credits(1_500));
    let listed = payments.list(acme).unwrap();
    let d = listed
        .iter()
        .find(|payment| payment.id == payment_d)
        .unwrap();
    assert_eq!(
        d.state,
        PaymentState::Failed,
        "the second charge is the operator's to refund"
    );
    assert_eq!(world.invoice_state(invoice_a), invoices::State::Paid);
    assert_eq!(world.invoice_state(invoice_b), invoices::State::Paid);
    let states: Vec<PaymentState> = payments
        .list(acme)
        .unwrap()
        .iter()
        .map(|payment| payment.state)
        .collect();
    assert_eq!(
        states,
        [
            PaymentState::Succeeded,
            PaymentState::Failed,
            PaymentState::Pending,
            PaymentState::Succeeded,
            PaymentState::Succeeded
        ]
    );
}
