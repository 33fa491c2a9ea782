//! Metered calls per second, against unmetered calls of the same plugin in
//! the same run: in process (1 and 2 threads), and over HTTP from a load
//! generator on loopback (64 connections, one blocking client thread each)
//! with p50 and p99 latency; and 64 in-process callers who are a
//! reseller's tenant, each call charged at retail to the tenant and at
//! wholesale to the reseller; and, as a probe of the ledger writer's
//! ceiling, 64 callers each making one plain spend with its settled usage
//! record (what a call costs the writer when it is one ledger command). On
//! SQLite (the durable default) and on PostgreSQL.
//!
//! Run: `cargo bench -p tollgate --bench metering` (`BENCH_QUICK=1` for a
//! short run, `BENCH_ONLY=http` for the metered HTTP row alone,
//! `BENCH_ONLY=unmetered` for the unmetered one, `BENCH_BACKEND=sqlite` or `postgres` for one backend; PostgreSQL at `BENCH_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::api::{self, AppState};
use tollgate::auth::{self, Role};
use tollgate::db::DbConnection;
use tollgate::db::schema::usage_records;
use tollgate::db::testing::TestDatabase;
use tollgate::ledger::{
    Attached, Attachment, Command, GrantSource, Ledger, PlatformAccount, TransferId, WriterOptions,
};
use tollgate::metering::{Meter, Request, UsageRow};
use tollgate::plugins::{self, ActivePlugin, Registry};
use tollgate::pricing::{ChargeModel, Price, PriceBook};
use tollgate::resale;
use tollgate::runtime::{
    Call, CallContext, HttpPolicy, PluginKind, PriceRequest, Runtime, RuntimeConfig, artifacts,
};
use tollgate::sandbox;
use tollgate::secrets::SecretBox;
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, SystemClock};

const CONNECTIONS: usize = 64;

/// The server's allocator (`src/main.rs`), for metered and unmetered alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Warnings (a ledger batch retried command by command, say) show.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    if std::env::var("BENCH_SQL").is_ok() {
        diesel::connection::set_default_instrumentation(sql_profile::instrument)?;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n_calls = if quick { 400 } else { 4_000 };
    let postgres = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    println!(
        "backend   mode                                        calls   seconds   calls/s   p50 ms   p99 ms"
    );
    let only = std::env::var("BENCH_BACKEND").ok();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|only| only != backend) {
            continue;
        }
        let test_db = match backend {
            "sqlite" => TestDatabase::sqlite(),
            _ => TestDatabase::postgres(postgres.clone()),
        };
        run(backend, &test_db, n_calls)?;
        if std::env::var("BENCH_SQL").is_ok() {
            sql_profile::print();
        }
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
    // A reseller's tenant, at a 30% markup: each of its calls holds and
    // settles on its wallet and on the reseller's, in one batch each.
    let now = SystemClock.now();
    let (reseller, reseller_wallet) =
        tenants::create_reseller(&mut conn, "Bench reseller", Credits::ZERO, now)?;
    let retail = resale::Settings {
        pricing: resale::PricingDocument {
            markup_percent: 30.into(),
            ..Default::default()
        },
        thresholds: Vec::new(),
        updated_at: None,
    };
    resale::store(&mut conn, reseller.id, &retail, now)?;
    let (resold, resold_wallet) =
        tenants::create_for_reseller(&mut conn, reseller.id, "Bench resold", Credits::ZERO, now)?;
    for (id, wallet) in [
        ("bench-reseller", reseller_wallet),
        ("bench-resold", resold_wallet),
    ] {
        ledger.submit_blocking(Command::Grant {
            id: TransferId::new(id)?,
            account: wallet,
            source: GrantSource::Purchase,
            amount: Credits::from_whole(1_000_000_000).expect("fits"),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })?;
    }
    plugins::enable(
        &mut conn,
        &secrets,
        resold.id,
        "fixture-noop",
        &BTreeMap::new(),
        now,
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
            reseller_plugins: Default::default(),
        }),
        Arc::new(SystemClock),
        HttpPolicy::default(),
        Duration::from_secs(300),
    ));

    // In process: the same plugin called directly, then metered.
    let plugin = registry.get(&mut *database.get()?, "fixture-noop")?;
    let metered = |tenant, threads: usize, n_metered: usize| {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..n_metered / threads {
                        meter
                            .invoke(Request {
                                tenant,
                                plugin: "fixture-noop".into(),
                                call: call(),
                                idempotency_key: None,
                            })
                            .expect("the metered no-op succeeds");
                    }
                });
            }
        });
    };
    // Metered calls wait for the ledger's commits, which concurrent callers
    // share: 64 callers are the in-process counterpart of 64 connections.
    // `BENCH_ONLY=http` runs the metered HTTP row alone, and
    // `BENCH_ONLY=unmetered` the unmetered one (for a profiler).
    let only = std::env::var("BENCH_ONLY").ok();
    let only_http = only.is_some();
    let rows: &[usize] = if only_http { &[] } else { &[1, 2, 64] };
    for &threads in rows {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads.min(2) {
                scope.spawn(|| {
                    for _ in 0..n_calls / threads.min(2) {
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
            &format!("unmetered in process, {} thread(s)", threads.min(2)),
            n_calls,
            started.elapsed(),
            None,
        );
        let n_metered = if threads > 2 { n_calls * 4 } else { n_calls };
        let before = writer_stats(&ledger);
        let started = Instant::now();
        metered(tenant.id, threads, n_metered);
        let elapsed = started.elapsed();
        report(
            backend,
            &format!("metered in process, {threads} thread(s)"),
            n_metered,
            elapsed,
            None,
        );
        commits(&ledger, before, elapsed);
    }
    if !only_http {
        // The writer's cost of a call that is one ledger command: a spend and
        // its settled usage record in one commit, no hold and no plugin. What
        // a metered call would cost it if its hold were not a ledger command
        // (docs/BENCHMARKS.md, "the ceiling of this write path").
        let before = writer_stats(&ledger);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    for _ in 0..n_calls * 4 / 64 {
                        let id = uuid::Uuid::now_v7().simple().to_string();
                        let spend = Command::Transfer {
                            id: TransferId::new(format!("spend-{id}")).expect("valid"),
                            debit: wallet,
                            credit: PlatformAccount::Revenue.id(),
                            amount: Credits::from_micros(1_000),
                            memo: "fixture-noop adjust-price: 1 units".into(),
                        };
                        let record = Settled(settled_record(id, tenant.id));
                        let results = ledger.execute_attached_blocking(
                            vec![spend],
                            vec![Some(Attachment::new(record))],
                        );
                        results[0].as_ref().expect("the spend is applied");
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        report(
            backend,
            "one command a call: spend + record, 64",
            n_calls * 4,
            elapsed,
            None,
        );
        commits(&ledger, before, elapsed);

        let before = writer_stats(&ledger);
        let started = Instant::now();
        metered(resold.id, 64, n_calls * 4);
        let elapsed = started.elapsed();
        report(
            backend,
            "metered in process, 64, resold tenant",
            n_calls * 4,
            elapsed,
            None,
        );
        commits(&ledger, before, elapsed);
    }

    // Over HTTP: a server on loopback and 64 clients; first one that only
    // invokes the plugin, then Tollgate's.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let unmetered = tokio.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let unmetered_address = unmetered.local_addr()?;
    let router = unmetered_router(runtime.clone(), plugin.clone());
    tokio.spawn(async move { axum::serve(unmetered, router).await });
    if only.as_deref() != Some("http") {
        load(unmetered_address, "none", CONNECTIONS * 10);
        let (elapsed, latencies) = load(unmetered_address, "none", n_calls * 10);
        report(
            backend,
            &format!("unmetered over HTTP, {CONNECTIONS} connections"),
            n_calls * 10,
            elapsed,
            Some(latencies),
        );
    }

    if only.as_deref() == Some("unmetered") {
        return Ok(());
    }
    let ledger_stats = ledger.clone();
    let subscriptions = Arc::new(tollgate::billing::subscriptions::Subscriptions {
        database: database.clone(),
        ledger: ledger_stats.clone(),
        plans: Arc::new(Vec::new()),
        issuer: Arc::new(tollgate::billing::invoices::Issuer::from_settings(
            &Default::default(),
        )),
        clock: Arc::new(SystemClock),
    });
    let state = AppState::new(api::Services {
        database: database.clone(),
        ledger,
        meter: meter.clone(),
        secrets,
        keys: Default::default(),
        issuer: Arc::new(tollgate::billing::invoices::Issuer::from_settings(
            &Default::default(),
        )),
        subscriptions: subscriptions.clone(),
        packages: Arc::new(Vec::new()),
        payments: Arc::new(tollgate::billing::payments::Payments::new(
            meter,
            subscriptions,
            &Default::default(),
        )),
        analytics: Default::default(),
        engagement: Default::default(),
        rate_limits: Arc::new(api::rate_limits(1_000_000, 1_000_000)),
        body_bytes_max: 1 << 20,
    });
    let listener = tokio.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    tokio.spawn(async move { axum::serve(listener, api::router(state)).await });
    // Warm up the connections, the caches and the pool first.
    load(address, &key, CONNECTIONS * 10);
    let before = writer_stats(&ledger_stats);
    let (elapsed, latencies) = load(address, &key, n_calls * 10);
    report(
        backend,
        &format!("metered over HTTP, {CONNECTIONS} connections"),
        n_calls * 10,
        elapsed,
        Some(latencies),
    );
    commits(&ledger_stats, before, elapsed);
    Ok(())
}

/// A server that answers the metered route by invoking the plugin and
/// nothing else: the same body parsing, blocking-pool hop and JSON reply
/// as Tollgate's handler, without authentication, metering or the ledger.
fn unmetered_router(runtime: Arc<Runtime>, plugin: Arc<ActivePlugin>) -> axum::Router {
    let handler = move |body: axum::body::Bytes| {
        let (runtime, plugin) = (runtime.clone(), plugin.clone());
        async move {
            let reply = tokio::task::spawn_blocking(move || {
                let call =
                    sandbox::parse_call(PluginKind::PricingRule, "adjust-price", &body, Vec::new())
                        .expect("the bench's body is valid");
                runtime
                    .invoke(&plugin, CallContext::new("bench"), call)
                    .result
                    .expect("the no-op succeeds")
            })
            .await
            .expect("the call finishes");
            axum::Json(sandbox::reply_json(&reply))
        }
    };
    axum::Router::new().route(
        "/api/v1/plugins/fixture-noop/invoke/adjust-price",
        axum::routing::post(handler),
    )
}

/// `n_calls` calls from `CONNECTIONS` HTTP/1.1 connections kept
/// alive, driven from one thread (so the load generator takes at most one
/// of the machine's two cores); the time it took and every call's latency.
fn load(address: std::net::SocketAddr, key: &str, n_calls: usize) -> (Duration, Vec<Duration>) {
    use http_body_util::{BodyExt as _, Full};
    let body = r#"{"plan": null, "plugin": "x", "function": "y", "units": 1, "period_units": 0, "base_price_micros": 7}"#;
    let authorization = format!("Bearer {key}");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client.block_on(async {
        let started = Instant::now();
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let authorization = authorization.clone();
            connections.spawn(async move {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                for _ in 0..n_calls / CONNECTIONS {
                    let request =
                        hyper::Request::post("/api/v1/plugins/fixture-noop/invoke/adjust-price")
                            .header("host", "bench")
                            .header("authorization", &authorization)
                            .header("content-type", "application/json")
                            .body(Full::new(hyper::body::Bytes::from_static(body.as_bytes())))
                            .expect("request");
                    let sent = Instant::now();
                    sender.ready().await.expect("connection ready");
                    let response = sender.send_request(request).await.expect("response");
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes();
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                    latencies.push(sent.elapsed());
                }
                latencies
            });
        }
        let mut latencies = Vec::with_capacity(n_calls);
        while let Some(joined) = connections.join_next().await {
            latencies.extend(joined.expect("client task"));
        }
        (started.elapsed(), latencies)
    })
}

/// The ledger's batches and commands so far, and the time its writer
/// thread has spent on a CPU.
fn writer_stats(ledger: &Ledger) -> (u64, u64, Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = ledger.stats();
    (
        stats.n_batches.load(Relaxed),
        stats.n_commands.load(Relaxed),
        writer_cpu(),
    )
}

/// The CPU time of the thread named `ledger-writer`, from Linux's
/// per-thread scheduler statistics (zero elsewhere).
fn writer_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "ledger-writer" {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let on_cpu_ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok());
        return Duration::from_nanos(on_cpu_ns.unwrap_or(0));
    }
    Duration::ZERO
}

/// The ledger's commits since `writer_stats` said `before`.
fn commits(ledger: &Ledger, before: (u64, u64, Duration), elapsed: Duration) {
    let (batches, commands, cpu) = writer_stats(ledger);
    let (batches, commands, cpu) = (batches - before.0, commands - before.1, cpu - before.2);
    println!(
        "            ({batches} commits, {:.1} ledger commands per commit; the writer on a CPU {:.0}% of the time, {:.0} µs a commit)",
        commands as f64 / batches.max(1) as f64,
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
        cpu.as_micros() as f64 / batches.max(1) as f64,
    );
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

/// A settled usage record written with the spend that charges for it,
/// and counted into the usage rollups, as a settlement writes it.
struct Settled(UsageRow);

impl Attached for Settled {
    fn write_all(conn: &mut DbConnection, rows: &[&Settled]) -> diesel::QueryResult<()> {
        use diesel::RunQueryDsl as _;
        let rows: Vec<&UsageRow> = rows.iter().map(|Settled(row)| row).collect();
        for chunk in rows.chunks(128) {
            match conn {
                DbConnection::Sqlite(conn) => diesel::insert_into(usage_records::table)
                    .values(chunk.iter().map(|row| (*row).clone()).collect::<Vec<_>>())
                    .execute(conn)?,
                DbConnection::Postgres(conn) => diesel::insert_into(usage_records::table)
                    .values(chunk.iter().map(|row| (*row).clone()).collect::<Vec<_>>())
                    .execute(conn)?,
            };
        }
        // The usage rollups, as a settlement batch upserts them.
        tollgate::analytics::usage::record(conn, &rows)
    }
}

/// The record of a no-op call charged 0.001 credit, as its settlement
/// leaves it.
fn settled_record(id: String, tenant: tollgate::ids::TenantId) -> UsageRow {
    let now = SystemClock.now();
    UsageRow {
        id,
        tenant_id: tenant.0,
        plugin: "fixture-noop".into(),
        version: "0.1.0".into(),
        function: "adjust-price".into(),
        units: 1,
        credits: 1_000,
        held: 1_000,
        fuel: 1_000,
        duration_us: 10,
        outcome: "ok".into(),
        error: None,
        idempotency_key: None,
        period: tollgate::metering::period_of(now),
        state: "settled".into(),
        created_at: now.micros(),
        reseller_id: None,
        wholesale_held: 0,
        wholesale: 0,
    }
}

/// `BENCH_SQL=1`: every statement the run made, by its SQL (bound values
/// left out), with how often and how long: where the database time goes.
mod sql_profile {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use diesel::connection::{Instrumentation, InstrumentationEvent};

    static STATEMENTS: Mutex<Option<HashMap<String, (u64, Duration)>>> = Mutex::new(None);

    pub fn instrument() -> Option<Box<dyn Instrumentation>> {
        let mut started: Option<Instant> = None;
        Some(Box::new(
            move |event: InstrumentationEvent<'_>| match event {
                InstrumentationEvent::StartQuery { .. } => started = Some(Instant::now()),
                InstrumentationEvent::FinishQuery { query, .. } => {
                    let elapsed = started.take().map(|at| at.elapsed()).unwrap_or_default();
                    let text = query.to_string();
                    let sql = text.split(" -- binds:").next().unwrap_or("").to_owned();
                    let mut statements = STATEMENTS.lock().unwrap();
                    let entry = statements
                        .get_or_insert_with(HashMap::new)
                        .entry(sql)
                        .or_default();
                    entry.0 += 1;
                    entry.1 += elapsed;
                }
                _ => {}
            },
        ))
    }

    pub fn print() {
        let statements = STATEMENTS.lock().unwrap().take().unwrap_or_default();
        let mut rows: Vec<_> = statements.into_iter().collect();
        rows.sort_by_key(|(_, (_, time))| std::cmp::Reverse(*time));
        println!("   count   total ms   µs each  statement");
        for (sql, (count, time)) in rows.iter().take(25) {
            let sql: String = sql.chars().take(110).collect();
            println!(
                "{count:>8} {:>10.1} {:>9.1}  {sql}",
                time.as_secs_f64() * 1e3,
                time.as_secs_f64() * 1e6 / *count as f64
            );
        }
    }
}
