use std::collections::BTreeMap;
use std::time::Instant;

use super::exact::Invoking;
use super::*;
use crate::db::testing::TestDatabase;
use crate::ledger::{Attachment, Command, GrantSource, PlatformAccount, WriterOptions, audit};
use crate::pricing::{ChargeModel, Price};
use crate::runtime::{Runtime, RuntimeConfig, SearchQuery};
use crate::units::ManualClock;
use crate::{plugins, tenants};

const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

struct Setup {
    meter: Meter,
    database: Database,
    ledger: Ledger,
    clock: Arc<ManualClock>,
    tenant: TenantId,
    _db: TestDatabase,
}

fn price(plugin: &str, function: &str, per_call: &str, per_unit: &str) -> Price {
    Price {
        plugin: plugin.into(),
        function: function.into(),
        tenant: None,
        effective_from: Timestamp::from_micros(0),
        per_call: per_call.parse().unwrap(),
        units: ChargeModel::Standard {
            per_unit: per_unit.parse().unwrap(),
        },
        free_units: BTreeMap::new(),
        per_million_fuel: Default::default(),
        charge_failed: false,
    }
}

/// A tenant holding `credits`, with csv-leads enabled and a file of 1,000
/// leads uploaded, searches priced at 1 credit per lead.
fn setup(credits: i64, prices: Vec<Price>) -> Setup {
    setup_book(
        credits,
        PriceBook {
            prices,
            rules: Vec::new(),
            reseller_plugins: Default::default(),
        },
        &[],
    )
}

/// As [`setup`], with rule bindings and more plugins installed.
fn setup_book(credits: i64, book: PriceBook, more_plugins: &[&str]) -> Setup {
    let db = TestDatabase::new();
    let database = db.open();
    let clock = Arc::new(ManualClock::new(START));
    let ledger = Ledger::start(database.clone(), clock.clone(), WriterOptions::default()).unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let secrets = Arc::new(SecretBox::new([3; 32]));
    let mut conn = database.get().unwrap();
    // Installing compiles; two plugins are all these tests need.
    for (name, manifest, wasm) in crate::runtime::artifacts::FIRST_PARTY {
        if ["csv-leads", "http-leads"].contains(name) || more_plugins.contains(name) {
            let hosts = plugins::Manifest::parse(manifest).unwrap().http_hosts;
            plugins::install(&mut conn, &runtime, manifest, wasm, &hosts, START).unwrap();
        }
    }
    let (tenant, wallet) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, START).unwrap();
    if credits > 0 {
        ledger
            .submit_blocking(Command::Grant {
                id: TransferId::new("grant-1").unwrap(),
                account: wallet,
                source: GrantSource::Purchase,
                amount: Credits::from_whole(credits).unwrap(),
                expires_at: None,
                priority: None,
                memo: String::new(),
            })
            .unwrap();
    }
    plugins::enable(
        &mut conn,
        &secrets,
        tenant.id,
        "csv-leads",
        &BTreeMap::new(),
        START,
    )
    .unwrap();
    let mut csv = String::from("First Name,Email,City\n");
    for n in 0..1_000 {
        csv.push_str(&format!(
            "Lead{n},lead{n}@example.com,{}\n",
            if n < 3 { "Reykjavik" } else { "Paris" }
        ));
    }
    crate::plugins::kv::put_file(
        &mut conn,
        tenant.id,
        "csv-leads",
        "leads.csv",
        csv.as_bytes(),
        START,
    )
    .unwrap();
    let meter = Meter::new(
        database.clone(),
        ledger.clone(),
        Arc::new(Registry::new(runtime)),
        secrets,
        Arc::new(book),
        clock.clone(),
        HttpPolicy::default(),
        Duration::from_secs(300),
    );
    Setup {
        meter,
        database,
        ledger,
        clock,
        tenant: tenant.id,
        _db: db,
    }
}

fn search(tenant: TenantId, location: Option<&str>, limit: u32, cursor: Option<&str>) -> Request {
    Request {
        tenant,
        plugin: "csv-leads".into(),
        call: Call::Search(SearchQuery {
            keywords: None,
            title: None,
            company: None,
            domain: None,
            location: location.map(str::to_owned),
            limit,
            cursor: cursor.map(str::to_owned),
        }),
        idempotency_key: None,
    }
}

fn balance(s: &Setup) -> crate::ledger::queries::Balance {
    let mut conn = s.database.get().unwrap();
    let wallet = queries::wallet_of(&mut conn, s.tenant).unwrap();
    queries::balance(&mut conn, wallet).unwrap()
}

fn revenue(s: &Setup) -> Credits {
    let mut conn = s.database.get().unwrap();
    queries::balance(&mut conn, PlatformAccount::Revenue.id())
        .unwrap()
        .posted
}

fn charged_in_records(s: &Setup) -> Credits {
    let mut conn = s.database.get().unwrap();
    Credits::from_micros(
        records(&mut conn, s.tenant, 10_000)
            .unwrap()
            .iter()
            .map(|record| record.credits)
            .sum(),
    )
}

fn whole(n: i64) -> Credits {
    Credits::from_whole(n).unwrap()
}

#[test]
fn searches_are_charged_per_lead_until_the_balance_is_spent() {
    let s = setup(100, vec![price("csv-leads", "search", "0", "1")]);
    let mut n_calls = 0;
    loop {
        match s.meter.invoke(search(s.tenant, None, 25, None)) {
            Ok(metered) => {
                assert_eq!((metered.units, metered.charged), (25, whole(25)));
                assert!(matches!(metered.result, Ok(Reply::SearchPage(_))));
                n_calls += 1;
            }
            Err(MeterError::InsufficientCredits {
                available,
                required,
            }) => {
                assert_eq!((available, required), (Credits::ZERO, whole(25)));
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(n_calls, 4);
    // The refused call ran nothing and recorded nothing.
    let mut conn = s.database.get().unwrap();
    assert_eq!(records(&mut conn, s.tenant, 100).unwrap().len(), 4);
    // Charged = sum of usage records = ledger debits.
    assert_eq!(charged_in_records(&s), whole(100));
    assert_eq!(revenue(&s), whole(100));
    let balance = balance(&s);
    assert_eq!(
        (balance.posted, balance.pending),
        (Credits::ZERO, Credits::ZERO)
    );
    assert!(audit::audit(&mut conn).unwrap().is_clean());
}

#[test]
fn a_call_is_charged_what_it_returned_and_the_rest_of_its_hold_is_released() {
    let s = setup(100, vec![price("csv-leads", "search", "0.5", "1")]);
    // Only three leads are in Reykjavik: the call held 25.5 and is charged
    // 3.5.
    let metered = s
        .meter
        .invoke(search(s.tenant, Some("reykjavik"), 25, None))
        .unwrap();
    assert_eq!(
        (metered.units, metered.charged),
        (3, Credits::parse("3.5").unwrap())
    );
    let balance = balance(&s);
    assert_eq!(balance.posted, Credits::parse("96.5").unwrap());
    assert_eq!(balance.pending, Credits::ZERO);
    let mut conn = s.database.get().unwrap();
    let record = &records(&mut conn, s.tenant, 1).unwrap()[0];
    assert_eq!(
        (
            record.function.as_str(),
            record.units,
            record.credits,
            record.held,
            record.outcome.as_str(),
            record.state.as_str(),
            record.version.as_str(),
            record.period.as_str(),
        ),
        (
            "search", 3, 3_500_000, 25_500_000, "ok", "settled", "0.1.0", "2026-01"
        )
    );
    assert!(record.fuel > 0);
}

#[test]
fn a_failed_call_is_charged_only_when_its_price_says_so() {
    let mut charged_failures = price("csv-leads", "search", "1", "1");
    charged_failures.charge_failed = true;
    charged_failures.effective_from = START.saturating_add_micros(1_000_000);
    let s = setup(
        100,
        vec![price("csv-leads", "search", "1", "1"), charged_failures],
    );
    // A cursor the plugin never gave: the plugin reports invalid input.
    let metered = s
        .meter
        .invoke(search(s.tenant, None, 25, Some("page-two")))
        .unwrap();
    assert!(matches!(metered.result, Err(CallError::Plugin { .. })));
    assert_eq!(metered.charged, Credits::ZERO);
    assert_eq!(balance(&s).posted, whole(100));
    // From the second price's effective time on, failures pay per call.
    s.clock.advance_micros(1_000_000);
    let metered = s
        .meter
        .invoke(search(s.tenant, None, 25, Some("page-two")))
        .unwrap();
    assert_eq!(metered.charged, whole(1));
    assert_eq!(balance(&s).posted, whole(99));
    let mut conn = s.database.get().unwrap();
    let outcomes: Vec<(String, i64)> = records(&mut conn, s.tenant, 10)
        .unwrap()
        .into_iter()
        .map(|record| (record.outcome, record.credits))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("plugin_error".to_owned(), 1_000_000),
            ("plugin_error".to_owned(), 0)
        ]
    );
    assert_eq!(charged_in_records(&s), revenue(&s));
}

#[test]
fn calls_that_cannot_be_made_charge_nothing_and_say_why() {
    let s = setup(100, vec![price("csv-leads", "search", "0", "1")]);
    let refusal = |request: Request| s.meter.invoke(request).unwrap_err().to_string();
    let mut unpriced = search(s.tenant, None, 10, None);
    unpriced.call = Call::Enrich(crate::runtime::Lead {
        first_name: None,
        last_name: None,
        email: Some("lead1@example.com".into()),
        title: None,
        company: None,
        domain: None,
        linkedin_url: None,
        phone: None,
        location: None,
        time_zone: None,
        custom_fields: Vec::new(),
    });
    assert_eq!(
        refusal(unpriced),
        "plugin csv-leads function enrich has no price in pricing.toml; the operator must add a [[price]] for it"
    );
    let mut not_enabled = search(s.tenant, None, 10, None);
    not_enabled.plugin = "http-leads".into();
    assert_eq!(
        refusal(not_enabled),
        "plugin http-leads is not enabled for this tenant; enable it with its settings first"
    );
    let mut unknown = search(s.tenant, None, 10, None);
    unknown.plugin = "nope".into();
    assert_eq!(refusal(unknown), "plugin nope is not installed");
    let mut wrong = search(s.tenant, None, 10, None);
    wrong.call = Call::ChannelCallback(crate::runtime::Callback {
        headers: Vec::new(),
        body: Vec::new(),
    });
    assert_eq!(
        refusal(wrong),
        "plugin csv-leads is a lead-source plugin and has no function parse-callback"
    );
    assert_eq!(balance(&s).posted, whole(100));
    assert_eq!(revenue(&s), Credits::ZERO);
}

#[test]
fn period_pricing_counts_the_units_of_earlier_calls() {
    // The first 30 leads of a period are 1 credit each, the rest 0.5.
    let mut tiered = price("csv-leads", "search", "0", "0");
    tiered.units = ChargeModel::Graduated {
        tiers: vec![
            crate::pricing::Tier {
                up_to: Some(30),
                per_unit: "1".parse().unwrap(),
                flat: Default::default(),
            },
            crate::pricing::Tier {
                up_to: None,
                per_unit: "0.5".parse().unwrap(),
                flat: Default::default(),
            },
        ],
    };
    let s = setup(100, vec![tiered]);
    let charges: Vec<Credits> = (0..3)
        .map(|_| {
            s.meter
                .invoke(search(s.tenant, None, 20, None))
                .unwrap()
                .charged
        })
        .collect();
    assert_eq!(charges, [whole(20), whole(15), whole(10)]);
    assert_eq!(charged_in_records(&s), whole(45));
    assert_eq!(revenue(&s), whole(45));
}

#[test]
fn recovery_ends_calls_a_crash_left_invoking_and_charges_nothing_for_them() {
    let s = setup(100, vec![price("csv-leads", "search", "0", "1")]);
    let mut conn = s.database.get().unwrap();
    let wallet = queries::wallet_of(&mut conn, s.tenant).unwrap();
    // Three calls that were held (and recorded) but never settled: the
    // host died while the plugins ran. The second outlived its hold; the
    // third cost nothing, so it had none.
    // They started long enough ago (400 s; holds last 300 s here) that
    // their host cannot still be running them.
    let started = START.micros() - 400_000_000;
    for (call_id, held, timeout_us) in [
        ("aa11", 10, 300_000_000),
        ("bb22", 10, 1_000_000),
        ("cc33", 0, 0),
    ] {
        let row = UsageRow {
            id: call_id.into(),
            tenant_id: s.tenant.0,
            plugin: "csv-leads".into(),
            version: "0.1.0".into(),
            function: "search".into(),
            units: 0,
            credits: 0,
            held: held * 1_000_000,
            fuel: 0,
            duration_us: 0,
            outcome: "pending".into(),
            error: None,
            idempotency_key: None,
            period: "2026-01".into(),
            state: "invoking".into(),
            created_at: started,
            reseller_id: None,
            wholesale_held: 0,
            wholesale: 0,
        };
        if held == 0 {
            diesel::insert_into(usage_records::table)
                .values(&row)
                .execute(&mut conn)
                .unwrap();
            continue;
        }
        s.ledger
            .submit_attached_blocking(
                Command::Hold {
                    id: hold_id(call_id),
                    debit: wallet,
                    credit: PlatformAccount::Revenue.id(),
                    amount: whole(held),
                    timeout_us,
                    memo: String::new(),
                },
                Attachment::new(Invoking(row)),
            )
            .unwrap();
    }
    // A call of a host still running (it started just now) is left alone.
    let live = UsageRow {
        id: "dd44".into(),
        tenant_id: s.tenant.0,
        plugin: "csv-leads".into(),
        version: "0.1.0".into(),
        function: "search".into(),
        units: 0,
        credits: 0,
        held: 0,
        fuel: 0,
        duration_us: 0,
        outcome: "pending".into(),
        error: None,
        idempotency_key: None,
        period: "2026-01".into(),
        state: "invoking".into(),
        created_at: START.micros(),
        reseller_id: None,
        wholesale_held: 0,
        wholesale: 0,
    };
    diesel::insert_into(usage_records::table)
        .values(&live)
        .execute(&mut conn)
        .unwrap();
    assert_eq!(balance(&s).pending, whole(20));
    s.clock.advance_micros(2_000_000);
    s.ledger.expire_due_blocking(100).unwrap();
    assert_eq!(s.meter.recover().unwrap(), 3);
    // Running it again finds nothing to do.
    assert_eq!(s.meter.recover().unwrap(), 0);
    let states: BTreeMap<String, (String, i64)> = records(&mut conn, s.tenant, 10)
        .unwrap()
        .into_iter()
        .map(|record| (record.id, (record.state, record.credits)))
        .collect();
    for call_id in ["aa11", "bb22", "cc33"] {
        assert_eq!(states[call_id], ("interrupted".to_owned(), 0), "{call_id}");
    }
    assert_eq!(states["dd44"], ("invoking".to_owned(), 0));
    let balance = balance(&s);
    assert_eq!(
        (balance.posted, balance.pending),
        (whole(100), Credits::ZERO)
    );
    assert_eq!(charged_in_records(&s), revenue(&s));
    assert!(audit::audit(&mut conn).unwrap().is_clean());
}

#[test]
fn a_record_is_written_with_its_hold_or_not_at_all() {
    let s = setup(5, vec![price("csv-leads", "search", "0", "1")]);
    // Refused: no hold, no record.
    assert!(matches!(
        s.meter.invoke(search(s.tenant, None, 25, None)),
        Err(MeterError::InsufficientCredits { .. })
    ));
    let mut conn = s.database.get().unwrap();
    assert!(records(&mut conn, s.tenant, 10).unwrap().is_empty());
    let metered = s.meter.invoke(search(s.tenant, None, 5, None)).unwrap();
    let record = &records(&mut conn, s.tenant, 10).unwrap()[0];
    assert_eq!(
        (record.id.as_str(), record.state.as_str(), record.credits),
        (metered.call_id.as_str(), "settled", 5_000_000)
    );
}

#[test]
fn concurrent_calls_never_spend_beyond_the_balance() {
    // 100 credits cover exactly four searches of 25 leads; 16 callers try.
    let s = setup(100, vec![price("csv-leads", "search", "0", "1")]);
    let outcomes: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| match s.meter.invoke(search(s.tenant, None, 25, None)) {
                    Ok(metered) => {
                        assert_eq!(metered.charged, whole(25));
                        true
                    }
                    Err(MeterError::InsufficientCredits { .. }) => false,
                    Err(other) => panic!("{other}"),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 4);
    let balance = balance(&s);
    assert_eq!(
        (balance.posted, balance.pending),
        (Credits::ZERO, Credits::ZERO)
    );
    assert_eq!(charged_in_records(&s), whole(100));
    assert_eq!(revenue(&s), whole(100));
}

#[test]
fn a_pricing_rule_bound_to_the_tenant_adjusts_the_hold_and_the_charge() {
    let book = PriceBook {
        prices: vec![
            price("csv-leads", "search", "0", "1"),
            price("markup", "adjust-price", "0", "0"),
        ],
        rules: vec![crate::pricing::RuleBinding {
            rule: "markup".into(),
            plan: None,
            tenant: Some(TenantId(1)),
        }],
        reseller_plugins: Default::default(),
    };
    let s = setup_book(100, book, &["markup"]);
    assert_eq!(s.tenant, TenantId(1));
    let mut conn = s.database.get().unwrap();
    let markup = BTreeMap::from([("markup_percent".to_owned(), "20".to_owned())]);
    plugins::enable(
        &mut conn,
        &SecretBox::new([3; 32]),
        s.tenant,
        "markup",
        &markup,
        START,
    )
    .unwrap();
    // Ten leads at 1 credit, marked up 20%.
    let metered = s.meter.invoke(search(s.tenant, None, 10, None)).unwrap();
    assert_eq!((metered.units, metered.charged), (10, whole(12)));
    assert_eq!(balance(&s).posted, whole(88));
    // The rule's own calls are metered: one for the hold, one for the charge.
    let functions: Vec<(String, String, i64)> = records(&mut conn, s.tenant, 10)
        .unwrap()
        .into_iter()
        .map(|record| (record.plugin, record.state, record.credits))
        .collect();
    assert_eq!(
        functions
            .iter()
            .filter(|(plugin, ..)| plugin == "markup")
            .count(),
        2
    );
    assert!(functions.contains(&("csv-leads".into(), "settled".into(), 12_000_000)));
    assert_eq!(charged_in_records(&s), revenue(&s));

    // A rule the tenant has not enabled cannot price: the call is refused
    // before it runs, and nothing is charged.
    // The host forgets what it cached when it changes an enablement itself
    // (the API does); a change made elsewhere is seen within CACHE_TTL.
    plugins::disable(&mut conn, s.tenant, "markup", START).unwrap();
    s.meter.forget_cached();
    let refusal = s
        .meter
        .invoke(search(s.tenant, None, 10, None))
        .unwrap_err();
    assert!(
        matches!(refusal, MeterError::PricingRule { .. }),
        "{refusal}"
    );
    assert!(refusal.to_string().contains("not enabled"), "{refusal}");
    assert_eq!(balance(&s).posted, whole(88));
}

#[test]
fn the_free_units_of_the_tenants_plan_are_not_charged() {
    // On Starter, the first 30 leads of each period are free.
    let mut free = price("csv-leads", "search", "0", "1");
    free.free_units = BTreeMap::from([("starter".to_owned(), 30)]);
    let s = setup(100, vec![free]);
    // Without a subscription every lead is charged.
    let before = s.meter.invoke(search(s.tenant, None, 5, None)).unwrap();
    assert_eq!(before.charged, whole(5));
    let subscriptions = subscriptions(&s);
    let (_, invoice) = subscriptions.subscribe(s.tenant, "starter").unwrap();
    // Unpaid, the subscription gives nothing yet.
    s.meter.forget_cached();
    let unpaid = s.meter.invoke(search(s.tenant, None, 5, None)).unwrap();
    assert_eq!(unpaid.charged, whole(5));
    subscriptions.invoice_paid(s.tenant, invoice.id).unwrap();
    s.meter.forget_cached();
    // 10 leads were charged already this period; 20 more are free, then
    // each is charged again.
    let charges: Vec<Credits> = [15, 10, 10]
        .into_iter()
        .map(|limit| {
            s.meter
                .invoke(search(s.tenant, None, limit, None))
                .unwrap()
                .charged
        })
        .collect();
    assert_eq!(charges, [whole(0), whole(5), whole(10)]);
}

/// The subscriptions of the setup's host, with the plans of `config/`.
fn subscriptions(s: &Setup) -> crate::billing::subscriptions::Subscriptions {
    crate::billing::subscriptions::Subscriptions {
        database: s.database.clone(),
        ledger: s.ledger.clone(),
        plans: Arc::new(
            crate::config::parse_plans(
                std::path::Path::new("plans.toml"),
                include_str!("../../../config/plans.toml"),
            )
            .unwrap(),
        ),
        issuer: Arc::new(crate::billing::invoices::Issuer {
            name: "Tollgate".into(),
            address: String::new(),
            tax_rate: Default::default(),
            tax_name: "Tax".into(),
        }),
        clock: s.clock.clone(),
    }
}

#[test]
fn a_pricing_rule_bound_to_the_tenants_plan_applies_while_it_is_on_the_plan() {
    let book = PriceBook {
        prices: vec![
            price("csv-leads", "search", "0", "1"),
            price("markup", "adjust-price", "0", "0"),
        ],
        rules: vec![crate::pricing::RuleBinding {
            rule: "markup".into(),
            plan: Some("starter".into()),
            tenant: None,
        }],
        reseller_plugins: Default::default(),
    };
    let s = setup_book(100, book, &["markup"]);
    let mut conn = s.database.get().unwrap();
    let markup = BTreeMap::from([("markup_percent".to_owned(), "20".to_owned())]);
    plugins::enable(
        &mut conn,
        &SecretBox::new([3; 32]),
        s.tenant,
        "markup",
        &markup,
        START,
    )
    .unwrap();
    drop(conn);
    let off_plan = s.meter.invoke(search(s.tenant, None, 10, None)).unwrap();
    assert_eq!(off_plan.charged, whole(10));
    let subscriptions = subscriptions(&s);
    let (_, invoice) = subscriptions.subscribe(s.tenant, "starter").unwrap();
    subscriptions.invoice_paid(s.tenant, invoice.id).unwrap();
    s.meter.forget_cached();
    let on_plan = s.meter.invoke(search(s.tenant, None, 10, None)).unwrap();
    assert_eq!(on_plan.charged, whole(12), "marked up 20% on Starter");
}

/// Holds the ledger made: the wallet leases' and the calls' own.
fn holds_made(s: &Setup) -> (usize, usize) {
    use crate::db::schema::transfers;
    let mut conn = s.database.get().unwrap();
    let ids: Vec<String> = transfers::table
        .filter(transfers::kind.eq("hold"))
        .select(transfers::id)
        .load(&mut conn)
        .unwrap();
    let leases = ids.iter().filter(|id| id.starts_with("lease:")).count();
    (leases, ids.len() - leases)
}

/// Runs `threads` callers, each making searches of `limit` leads until
/// it has made `calls` or is refused for want of credits; returns how many
/// were made.
fn callers(s: &Setup, threads: usize, calls: usize, limit: u32) -> usize {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut made = 0;
                    while made < calls {
                        match s.meter.invoke(search(s.tenant, None, limit, None)) {
                            Ok(metered) => {
                                assert!(matches!(metered.result, Ok(Reply::SearchPage(_))));
                                made += 1;
                            }
                            Err(MeterError::InsufficientCredits { .. }) => break,
                            Err(other) => panic!("{other}"),
                        }
                    }
                    made
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .sum()
    })
}

#[test]
fn a_busy_wallets_calls_are_charged_on_a_lease_exactly_and_the_lease_goes_back() {
    // A million credits cover 40,000 of these searches: a lease's worth.
    let s = setup(1_000_000, vec![price("csv-leads", "search", "0", "1")]);
    // Busy from its first call.
    s.meter.lease_after_calls(1);
    assert_eq!(callers(&s, 8, 40, 25), 320);
    let (leases, own) = holds_made(&s);
    assert!(leases >= 1, "a busy wallet's calls go on a lease");
    assert!(own < 320, "{own} of 320 calls held their own credits");
    // Every call has its record, settled, and the records' charges are
    // the ledger's: nothing more, nothing less.
    let mut conn = s.database.get().unwrap();
    let records = records(&mut conn, s.tenant, 1_000).unwrap();
    assert_eq!(records.len(), 320);
    assert!(records.iter().all(|record| record.state == STATE_SETTLED));
    assert_eq!(charged_in_records(&s), whole(320 * 25));
    // An unused lease goes back by itself, soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance(&s).pending > Credits::ZERO {
        assert!(
            Instant::now() < deadline,
            "the idle lease was never given back"
        );
        std::thread::yield_now();
    }
    assert_eq!(revenue(&s), whole(320 * 25));
    let balance = balance(&s);
    assert_eq!(balance.posted, whole(1_000_000 - 320 * 25));
    assert!(audit::audit(&mut conn).unwrap().is_clean());
    // The daily rollups count every call once.
    let used =
        crate::analytics::usage::tenant_daily(&mut conn, s.tenant, "2026-01-01", "2026-01-02")
            .unwrap();
    assert_eq!(used.iter().map(|line| line.sums.calls).sum::<i64>(), 320);
}

#[test]
fn a_leased_wallet_is_spent_to_exactly_zero_by_concurrent_callers() {
    // 1,500 credits at 1 a call: a lease at first, then each call on its own
    // hold as the balance runs low; 8 callers spend it to the last credit.
    let s = setup(1_500, vec![price("csv-leads", "search", "1", "0")]);
    s.meter.lease_after_calls(1);
    assert_eq!(callers(&s, 8, usize::MAX, 1), 1_500);
    assert!(holds_made(&s).0 >= 1, "the wallet started on a lease");
    s.meter.close_leases();
    let balance = balance(&s);
    assert_eq!(
        (balance.posted, balance.pending),
        (Credits::ZERO, Credits::ZERO)
    );
    assert_eq!(charged_in_records(&s), whole(1_500));
    assert_eq!(revenue(&s), whole(1_500));
    let mut conn = s.database.get().unwrap();
    assert!(audit::audit(&mut conn).unwrap().is_clean());
    // Calls after the leases closed hold their own credits.
    s.ledger
        .submit_blocking(Command::Grant {
            id: TransferId::new("grant-2").unwrap(),
            account: queries::wallet_of(&mut conn, s.tenant).unwrap(),
            source: GrantSource::Purchase,
            amount: whole(5_000),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    let before = holds_made(&s);
    s.meter.invoke(search(s.tenant, None, 1, None)).unwrap();
    assert_eq!(holds_made(&s), (before.0, before.1 + 1));
}

#[test]
fn a_wallet_making_a_call_now_and_then_holds_its_own_credits() {
    // Rich enough for a lease, but never busy: 40 calls one after another
    // against a threshold of 1,000 calls within 100 ms.
    let s = setup(1_000_000, vec![price("csv-leads", "search", "0", "1")]);
    s.meter.lease_after_calls(1_000);
    assert_eq!(callers(&s, 1, 40, 25), 40);
    assert_eq!(holds_made(&s), (0, 40));
    // Nothing is set aside between calls.
    assert_eq!(balance(&s).pending, Credits::ZERO);
}

#[test]
fn a_call_the_lease_keeps_from_fitting_is_made_once_the_lease_is_given_back() {
    let s = setup(1_100, vec![price("csv-leads", "search", "0", "1")]);
    s.meter.lease_after_calls(1);
    // Small calls until this host holds a lease on part of the wallet.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.meter.invoke(search(s.tenant, None, 1, None)).unwrap();
        if balance(&s).pending > Credits::ZERO {
            break;
        }
        assert!(Instant::now() < deadline, "no lease was taken");
    }
    // A search of the file's 1,000 leads: more than the lease leaves
    // available, less than the wallet holds.
    let before = balance(&s);
    assert!(whole(1_000) > before.available, "{before:?}");
    assert!(whole(1_000) <= before.posted, "{before:?}");
    let metered = s.meter.invoke(search(s.tenant, None, 1_000, None)).unwrap();
    assert!(metered.result.is_ok(), "{:?}", metered.result);
    assert_eq!(metered.charged, whole(1_000));
    s.meter.close_leases();
    let after = balance(&s);
    assert_eq!(
        after.posted.micros(),
        before.posted.micros() - whole(1_000).micros()
    );
    assert_eq!(after.pending, Credits::ZERO);
    assert_eq!(
        charged_in_records(&s).micros(),
        whole(1_100).micros() - after.posted.micros()
    );
    let mut conn = s.database.get().unwrap();
    assert!(audit::audit(&mut conn).unwrap().is_clean());
}
