//! Metered calls per second, against unmetered calls of the same plugin in
//! the same run: in process (1 and 2 threads), and over HTTP from a load
//! generator on loopback (64 connections, one blocking client thread each)
//! with p50 and p99 latency. On SQLite (the durable default) and on
//! PostgreSQL.
//!
//! Run: `cargo bench -p tollgate --bench metering` (`BENCH_QUICK=1` for a
//! short run; PostgreSQL at `BENCH_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::api::{self, AppState};
use tollgate::auth::{self, Role};
use tollgate::db::testing::TestDatabase;
use tollgate::ledger::{Command, GrantSource, Ledger, TransferId, WriterOptions};
use tollgate::metering::{Meter, Request};
use tollgate::plugins::{self, Registry};
use tollgate::pricing::{ChargeModel, Price, PriceBook};
use tollgate::runtime::{
    Call, CallContext, HttpPolicy, PriceRequest, Runtime, RuntimeConfig, artifacts,
};
use tollgate::secrets::SecretBox;
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, SystemClock};

const CONNECTIONS: usize = 64;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n_calls = if quick { 400 } else { 4_000 };
    let postgres = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    println!(
        "backend   mode                                        calls   seconds   calls/s   p50 ms   p99 ms"
    );
    for (backend, test_db) in [
        ("sqlite", TestDatabase::sqlite()),
        ("postgres", TestDatabase::postgres(postgres)),
    ] {
        run(backend, &test_db, n_calls)?;
    }
    Ok(())
}

fn call() -> Call {
    Call::AdjustPrice(PriceRequest {
        plan: None,
        plugin: "x".into(),
        function: "y".into(),
        units: 1,
        period_units: 0,
        base_price_micros: 7,
    })
}

fn run(backend: &str, test_db: &TestDatabase, n_calls: usize) -> anyhow::Result<()> {
    let database = test_db.open();
    let ledger = Ledger::start(
        database.clone(),
        Arc::new(SystemClock),
        WriterOptions::default(),
    )?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let secrets = Arc::new(SecretBox::new([5; 32]));
    let mut conn = database.get()?;
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/fixture-noop/plugin.toml"),
    )?;
    let wasm = std::fs::read(artifacts::path("fixture-noop").expect("built by host/build.rs"))?;
    plugins::install(
        &mut conn,
        &runtime,
        &manifest,
        &wasm,
        &[],
        SystemClock.now(),
    )?;
    let (tenant, wallet) =
        tenants::create(&mut conn, "Bench", None, Credits::ZERO, SystemClock.now())?;
    ledger.submit_blocking(Command::Grant {
        id: TransferId::new("bench")?,
        account: wallet,
        source: GrantSource::Purchase,
        amount: Credits::from_whole(1_000_000_000).expect("fits"),
        expires_at: None,
        priority: None,
        memo: String::new(),
    })?;
    plugins::enable(
        &mut conn,
        &secrets,
        tenant.id,
        "fixture-noop",
        &BTreeMap::new(),
        SystemClock.now(),
    )?;
    let (_, key) = auth::create_key(
        &mut conn,
        Some(tenant.id),
        Role::Member,
        "bench",
        SystemClock.now(),
    )?;
    drop(conn);
    let registry = Arc::new(Registry::new(runtime.clone()));
    let price = Price {
        plugin: "fixture-noop".into(),
        function: "adjust-price".into(),
        tenant: None,
        effective_from: tollgate::units::Timestamp::from_micros(0),
        per_call: "0.001".parse()?,
        units: ChargeModel::Standard {
            per_unit: Default::default(),
        },
        free_units: BTreeMap::new(),
        per_million_fuel: Default::default(),
        charge_failed: false,
    };
    let meter = Arc::new(Meter::new(
        database.clone(),
        ledger.clone(),
        registry.clone(),
        secrets.clone(),
        Arc::new(PriceBook {
            prices: vec![price],
            rules: Vec::new(),
        }),
        Arc::new(SystemClock),
        HttpPolicy::default(),
        Duration::from_secs(300),
    ));

    // In process: the same plugin called directly, then metered.
    let plugin = registry.get(&mut *database.get()?, "fixture-noop")?;
    for threads in [1, 2] {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..n_calls / threads {
                        runtime
                            .invoke(&plugin, CallContext::new("bench"), call())
                            .result
                            .expect("the no-op succeeds");
                    }
                });
            }
        });
        report(
            backend,
            &format!("unmetered in process, {threads} thread(s)"),
            n_calls,
            started.elapsed(),
            None,
        );
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..n_calls / threads {
                        meter
                            .invoke(Request {
                                tenant: tenant.id,
                                plugin: "fixture-noop".into(),
                                call: call(),
                                idempotency_key: None,
                            })
                            .expect("the metered no-op succeeds");
                    }
                });
            }
        });
        report(
            backend,
            &format!("metered in process, {threads} thread(s)"),
            n_calls,
            started.elapsed(),
            None,
        );
    }

    // Over HTTP: a server on loopback and 64 clients.
    let state = AppState {
        database: database.clone(),
        ledger,
        meter,
        secrets,
        rate_limits: Arc::new(api::rate_limits(1_000_000, 1_000_000)),
        body_bytes_max: 1 << 20,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = tokio.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}/api/v1", listener.local_addr()?);
    tokio.spawn(async move { axum::serve(listener, api::router(state)).await });
    let (elapsed, latencies) = load(&base, &key, n_calls);
    report(
        backend,
        &format!("metered over HTTP, {CONNECTIONS} connections"),
        n_calls,
        elapsed,
        Some(latencies),
    );
    Ok(())
}

/// `n_calls` metered calls from `CONNECTIONS` clients; the time it took
/// and every call's latency.
fn load(base: &str, key: &str, n_calls: usize) -> (Duration, Vec<Duration>) {
    let url = format!("{base}/plugins/fixture-noop/invoke/adjust-price");
    let body = r#"{"plan": null, "plugin": "x", "function": "y", "units": 1, "period_units": 0, "base_price_micros": 7}"#;
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut latencies = Vec::new();
                    for _ in 0..n_calls / CONNECTIONS {
                        let sent = Instant::now();
                        let mut response = agent
                            .post(&url)
                            .header("authorization", &format!("Bearer {key}"))
                            .content_type("application/json")
                            .send(body)
                            .expect("the server answers");
                        let _ = response.body_mut().read_to_string();
                        assert_eq!(response.status(), 200);
                        latencies.push(sent.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("client thread"))
            .collect::<Vec<_>>()
    });
    (started.elapsed(), latencies)
}

fn report(
    backend: &str,
    mode: &str,
    n: usize,
    elapsed: Duration,
    latencies: Option<Vec<Duration>>,
) {
    let seconds = elapsed.as_secs_f64();
    let (p50, p99) = match latencies {
        Some(mut latencies) => {
            latencies.sort();
            let at = |q: f64| {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
            };
            (
                format!("{:.2}", at(0.50).as_secs_f64() * 1e3),
                format!("{:.2}", at(0.99).as_secs_f64() * 1e3),
            )
        }
        None => ("-".into(), "-".into()),
    };
    println!(
        "{backend:<9} {mode:<42} {n:>6} {seconds:>9.3} {:>9.0} {p50:>8} {p99:>8}",
        n as f64 / seconds
    );
}
