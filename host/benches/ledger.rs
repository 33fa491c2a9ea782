//! Durable ledger throughput: transfers per second on SQLite and PostgreSQL,
//! one transfer per commit and batched (group commit), measured in one run so
//! the ratios hold on a noisy machine.
//!
//! Run: `cargo bench -p tollgate --bench ledger`. PostgreSQL is reached at
//! `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`;
//! each run creates and drops its own database there). Set `BENCH_QUICK=1`
//! for a short smoke run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tollgate::db::Database;
use tollgate::db::testing::TestDatabase;
use tollgate::ledger::{
    AccountId, Command, GrantSource, Ledger, PlatformAccount, TransferId, WriterOptions, audit,
};
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, SystemClock};

struct Sizes {
    single: usize,
    batched: usize,
    concurrent: usize,
}

fn main() -> anyhow::Result<()> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let sizes = match quick {
        true => Sizes {
            single: 200,
            batched: 10_000,
            concurrent: 2_000,
        },
        false => Sizes {
            single: 2_000,
            batched: 200_000,
            concurrent: 40_000,
        },
    };
    println!("backend   mode                          transfers   seconds   transfers/s");
    let postgres = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    for (backend, test_db) in [
        ("sqlite", TestDatabase::sqlite()),
        ("postgres", TestDatabase::postgres(postgres)),
    ] {
        let database = test_db.open();
        run_backend(backend, &database, &sizes)?;
    }
    Ok(())
}

fn run_backend(backend: &str, database: &Database, sizes: &Sizes) -> anyhow::Result<()> {
    let ledger = Ledger::start(
        database.clone(),
        Arc::new(SystemClock),
        WriterOptions::default(),
    )?;
    let wallet = {
        let mut conn = database.get()?;
        tenants::create(&mut conn, "Bench", None, Credits::ZERO, SystemClock.now())?.1
    };
    let funds = Command::Grant {
        id: TransferId::new("funds")?,
        account: wallet,
        source: GrantSource::Purchase,
        amount: Credits::from_whole(1_000_000_000).expect("fits"),
        expires_at: None,
        priority: None,
        memo: String::new(),
    };
    ledger.submit_blocking(funds)?;
    let spend = |prefix: &str, n: usize| spend(wallet, prefix, n);

    // One caller, one transfer per call: every transfer commits alone.
    let started = Instant::now();
    for n in 0..sizes.single {
        ledger.submit_blocking(spend("single", n))?;
    }
    report(backend, "one per commit", sizes.single, started.elapsed());

    // One caller, 1,000 transfers per call: one commit per call.
    let started = Instant::now();
    let mut n = 0;
    while n < sizes.batched {
        let commands: Vec<Command> = (n..n + 1_000).map(|n| spend("batch", n)).collect();
        for result in ledger.execute_blocking(commands) {
            result?;
        }
        n += 1_000;
    }
    report(
        backend,
        "batched, 1,000 per call",
        sizes.batched,
        started.elapsed(),
    );

    // 64 callers, one transfer per call: the writer groups them.
    let callers = 64;
    let batches_before = ledger.stats().n_batches.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for caller in 0..callers {
            let ledger = &ledger;
            scope.spawn(move || {
                for n in (caller..sizes.concurrent).step_by(callers) {
                    ledger
                        .submit_blocking(spend("concurrent", n))
                        .expect("funded");
                }
            });
        }
    });
    report(
        backend,
        "64 callers, group commit",
        sizes.concurrent,
        started.elapsed(),
    );
    let n_batches = ledger.stats().n_batches.load(Ordering::Relaxed) - batches_before;
    println!(
        "{backend:<9}   (64 callers: {n_batches} commits, {:.1} transfers per commit)",
        sizes.concurrent as f64 / n_batches as f64
    );

    let mut conn = database.get()?;
    let report = audit::audit(&mut conn)?;
    anyhow::ensure!(report.is_clean(), "audit failed: {:?}", report.violations);
    Ok(())
}

fn spend(wallet: AccountId, prefix: &str, n: usize) -> Command {
    Command::Transfer {
        id: TransferId::new(format!("{prefix}-{n}")).expect("valid id"),
        debit: wallet,
        credit: PlatformAccount::Revenue.id(),
        amount: Credits::from_micros(1_000),
        memo: String::new(),
    }
}

fn report(backend: &str, mode: &str, n: usize, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{backend:<9} {mode:<29} {n:>9} {seconds:>9.3} {:>13.0}",
        n as f64 / seconds
    );
}
