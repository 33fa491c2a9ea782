//! A process killed mid-write loses nothing it acknowledged and leaves
//! nothing half-applied.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Command as Process, Stdio};

use tollgate::db::DatabaseUrl;
use tollgate::db::testing::TestDatabase;
use tollgate::ledger::{self, queries};
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, SystemClock};

/// Acknowledged transfers to wait for before the kill: enough that the
/// writer is mid-batch, with transfers in flight, when it dies.
const ACKNOWLEDGED_BEFORE_KILL: usize = 600;

#[test]
fn sigkill_loses_no_acknowledged_transfer() {
    let test_db = TestDatabase::new();
    let database = test_db.open();
    let wallet = {
        let mut conn = database.get().unwrap();
        let now = SystemClock.now();
        let (_, wallet) =
            tenants::create(&mut conn, "Crash Test", None, Credits::ZERO, now).unwrap();
        wallet
    };
    let ledger_handle = ledger::Ledger::start(
        database.clone(),
        std::sync::Arc::new(SystemClock),
        ledger::WriterOptions::default(),
    )
    .unwrap();
    ledger_handle
        .submit_blocking(ledger::Command::Grant {
            id: ledger::TransferId::new("funds").unwrap(),
            account: wallet,
            source: ledger::GrantSource::Purchase,
            amount: Credits::from_whole(1_000_000).unwrap(),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    drop(ledger_handle);

    let url = match &test_db.url {
        DatabaseUrl::Postgres(url) => url.clone(),
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
    };
    let mut child = Process::new(env!("CARGO_BIN_EXE_ledger-child"))
        .args([url, wallet.0.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting ledger-child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = HashSet::new();
    while acknowledged.len() < ACKNOWLEDGED_BEFORE_KILL {
        let line = lines
            .next()
            .expect("ledger-child stopped before the kill")
            .unwrap();
        acknowledged.insert(line.strip_prefix("committed ").unwrap().to_owned());
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    child.wait().unwrap();
    // Whatever it printed before dying was acknowledged too.
    for line in lines {
        acknowledged.insert(line.unwrap().strip_prefix("committed ").unwrap().to_owned());
    }

    let reopened = tollgate::db::Database::open(&test_db.url, 2).unwrap();
    let mut conn = reopened.get().unwrap();
    let mut missing = Vec::new();
    for id in &acknowledged {
        let id = ledger::TransferId::new(id.clone()).unwrap();
        if queries::transfer(&mut conn, &id).unwrap().is_none() {
            missing.push(id);
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let report = ledger::audit::audit(&mut conn).unwrap();
    assert!(
        report.is_clean(),
        "after the crash: {:#?}",
        report.violations
    );
    assert!(report.n_transfers as usize >= acknowledged.len() + 1);
}
