//! A process that spends credits as fast as it can and reports each transfer
//! the ledger acknowledged, one line per transfer on stdout, until it is
//! killed. The crash test kills it with SIGKILL mid-stream and then checks
//! that every acknowledged transfer survived.
//!
//! Usage: ledger-child <database-url> <wallet-account-id>

use std::io::Write as _;
use std::sync::Arc;

use tollgate::db::{Database, DatabaseUrl};
use tollgate::ledger::{AccountId, Command, Ledger, PlatformAccount, TransferId, WriterOptions};
use tollgate::units::{Credits, SystemClock};

/// Concurrent spenders, so batches hold several transfers when it dies.
const THREADS: usize = 4;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(wallet)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: ledger-child <database-url> <wallet-account-id>");
    };
    let url = DatabaseUrl::parse(&url, std::path::Path::new("."))?;
    let wallet = AccountId(wallet.parse()?);
    let database = Database::open(&url, 2)?;
    let ledger = Ledger::start(database, Arc::new(SystemClock), WriterOptions::default())?;
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (ledger, stdout) = (ledger.clone(), stdout.clone());
            scope.spawn(move || spend_forever(&ledger, wallet, thread, &stdout));
        }
    });
    Ok(())
}

fn spend_forever(
    ledger: &Ledger,
    wallet: AccountId,
    thread: usize,
    stdout: &std::sync::Mutex<std::io::Stdout>,
) {
    let revenue = PlatformAccount::Revenue.id();
    let one = Credits::from_whole(1).expect("fits");
    for n in 0.. {
        let hold = TransferId::new(format!("hold-{thread}-{n}")).expect("valid id");
        let commands = vec![
            Command::Transfer {
                id: TransferId::new(format!("spend-{thread}-{n}")).expect("valid id"),
                debit: wallet,
                credit: revenue,
                amount: one,
                memo: String::new(),
            },
            Command::Hold {
                id: hold.clone(),
                debit: wallet,
                credit: revenue,
                amount: one,
                timeout_us: 60_000_000,
                memo: String::new(),
            },
        ];
        let mut acknowledged = Vec::new();
        for result in ledger.execute_blocking(commands) {
            acknowledged.push(result.expect("the wallet holds plenty").transfer.id);
        }
        let post = Command::Post {
            id: TransferId::new(format!("post-{thread}-{n}")).expect("valid id"),
            hold,
            amount: Some(Credits::from_micros(500_000)),
            memo: String::new(),
        };
        acknowledged.push(
            ledger
                .submit_blocking(post)
                .expect("hold is pending")
                .transfer
                .id,
        );
        let mut out = stdout.lock().expect("stdout lock");
        for id in acknowledged {
            writeln!(out, "committed {id}").expect("stdout is open");
        }
        out.flush().expect("stdout is open");
    }
}
