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
            providers: BTreeMap::from([(
                "card".to_owned(),
                BTreeMap::from([
                    ("secret_key".to_owned(), "sk_test_1".to_owned()),
                    ("webhook_secret".to_owned(), "whsec_1".to_owned()),
                    ("api_base_url".to_owned(), gateway.base_url()),
                ]),
            )]),
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
