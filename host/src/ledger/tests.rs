//! Ledger behaviour on a real database: SQLite by default, PostgreSQL when
//! `TEST_DATABASE_URL` is set. Every test ends with a full audit.

mod concurrency;
mod simulation;

use std::sync::Arc;

use super::queries::{self, Balance};
use super::*;
use crate::db::testing::TestDatabase;
use crate::tenants;
use crate::units::ManualClock;

const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000); // 2026-01-01
const SECOND_US: i64 = 1_000_000;

fn cr(whole: i64) -> Credits {
    Credits::from_whole(whole).unwrap()
}

fn id(text: &str) -> TransferId {
    TransferId::new(text).unwrap()
}

struct Harness {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    database: Database,
    _test_db: TestDatabase,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_options(WriterOptions::default())
    }

    fn with_options(options: WriterOptions) -> Harness {
        let test_db = TestDatabase::new();
        let database = test_db.open();
        let clock = Arc::new(ManualClock::new(START));
        let ledger = Ledger::start(database.clone(), clock.clone(), options).unwrap();
        Harness {
            ledger,
            clock,
            database,
            _test_db: test_db,
        }
    }

    fn wallet(&self, credit_limit: i64) -> AccountId {
        let mut conn = self.database.get().unwrap();
        let (_, wallet) = tenants::create(
            &mut conn,
            "Tenant",
            None,
            cr(credit_limit),
            self.clock.now(),
        )
        .unwrap();
        wallet
    }

    fn run(&self, command: Command) -> CommandResult {
        let result = self.ledger.submit_blocking(command);
        self.assert_audit_clean();
        result
    }

    fn grant(&self, transfer: &str, account: AccountId, amount: i64) -> CommandResult {
        self.run(grant(
            transfer,
            account,
            GrantSource::Purchase,
            cr(amount),
            None,
        ))
    }

    fn spend(&self, transfer: &str, account: AccountId, amount: Credits) -> CommandResult {
        self.run(Command::Transfer {
            id: id(transfer),
            debit: account,
            credit: PlatformAccount::Revenue.id(),
            amount,
            memo: String::new(),
        })
    }

    fn hold(&self, transfer: &str, account: AccountId, amount: i64) -> CommandResult {
        self.run(hold(transfer, account, cr(amount), 60 * SECOND_US))
    }

    fn post(&self, transfer: &str, hold: &str, amount: Option<i64>) -> CommandResult {
        self.run(Command::Post {
            id: id(transfer),
            hold: id(hold),
            amount: amount.map(cr),
            memo: String::new(),
        })
    }

    fn void(&self, transfer: &str, hold: &str) -> CommandResult {
        self.run(Command::Void {
            id: id(transfer),
            hold: id(hold),
            memo: String::new(),
        })
    }

    fn balance(&self, account: AccountId) -> Balance {
        queries::balance(&mut self.database.get().unwrap(), account).unwrap()
    }

    /// (posted, pending) in whole credits.
    fn posted_pending(&self, account: AccountId) -> (i64, i64) {
        let balance = self.balance(account);
        (
            balance.posted.micros() / 1_000_000,
            balance.pending.micros() / 1_000_000,
        )
    }

    fn history(&self, account: AccountId) -> Vec<(TransferKind, String, i64)> {
        let page =
            queries::history(&mut self.database.get().unwrap(), account, None, 1000).unwrap();
        let mut entries: Vec<_> = page
            .entries
            .into_iter()
            .map(|(_, transfer)| {
                let sign = if transfer.credit == account { 1 } else { -1 };
                (
                    transfer.kind,
                    transfer.id.to_string(),
                    sign * transfer.amount.micros() / 1_000_000,
                )
            })
            .collect();
        entries.reverse();
        entries
    }

    fn remaining(&self, account: AccountId) -> Vec<(String, i64, i64)> {
        queries::grants_of(&mut self.database.get().unwrap(), account, false)
            .unwrap()
            .into_iter()
            .map(|grant| {
                (
                    grant.id.to_string(),
                    grant.remaining.micros() / 1_000_000,
                    grant.reserved.micros() / 1_000_000,
                )
            })
            .collect()
    }

    fn assert_audit_clean(&self) {
        let report = audit::audit(&mut self.database.get().unwrap()).unwrap();
        assert!(
            report.is_clean(),
            "ledger audit failed: {:#?}",
            report.violations
        );
    }

    fn n_transfers(&self) -> i64 {
        audit::audit(&mut self.database.get().unwrap())
            .unwrap()
            .n_transfers
    }
}

fn grant(
    transfer: &str,
    account: AccountId,
    source: GrantSource,
    amount: Credits,
    expires_at: Option<Timestamp>,
) -> Command {
    Command::Grant {
        id: id(transfer),
        account,
        source,
        amount,
        expires_at,
        priority: None,
        memo: String::new(),
    }
}

fn hold(transfer: &str, account: AccountId, amount: Credits, timeout_us: i64) -> Command {
    Command::Hold {
        id: id(transfer),
        debit: account,
        credit: PlatformAccount::Revenue.id(),
        amount,
        timeout_us,
        memo: String::new(),
    }
}

fn insufficient(result: CommandResult) -> (i64, i64) {
    match result {
        Err(LedgerError::InsufficientCredits {
            available, amount, ..
        }) => (available.micros() / 1_000_000, amount.micros() / 1_000_000),
        other => panic!("expected insufficient credits, got {other:?}"),
    }
}

/// TigerBeetle's two-phase transfer examples: with 100 credits posted, 60
/// debits posted and 30 pending, 10 more fit and 20 do not.
#[test]
fn tigerbeetle_pending_balance_cases() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 100).unwrap();
    h.spend("s", wallet, cr(60)).unwrap();
    h.hold("h", wallet, 30).unwrap();
    assert_eq!(h.posted_pending(wallet), (40, 30));
    assert_eq!(insufficient(h.spend("too-much", wallet, cr(20))), (10, 20));
    assert_eq!(insufficient(h.hold("too-much-held", wallet, 20)), (10, 20));
    h.spend("fits", wallet, cr(10)).unwrap();
    assert_eq!(h.posted_pending(wallet), (30, 30));
    assert_eq!(h.balance(wallet).available, Credits::ZERO);
}

/// A hold of 100 posted at 60 captures 60 and releases 40.
#[test]
fn partial_post_releases_the_rest() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 100).unwrap();
    h.hold("h", wallet, 100).unwrap();
    assert_eq!(h.posted_pending(wallet), (100, 100));
    assert_eq!(h.balance(wallet).available, Credits::ZERO);
    let receipt = h.post("p", "h", Some(60)).unwrap();
    assert_eq!(receipt.transfer.amount, cr(60));
    assert_eq!(receipt.transfer.pending_id, Some(id("h")));
    assert_eq!(h.posted_pending(wallet), (40, 0));
    assert_eq!(h.balance(wallet).available, cr(40));
    assert_eq!(h.posted_pending(PlatformAccount::Revenue.id()), (60, 0));
    assert_eq!(h.remaining(wallet), [("g".into(), 40, 0)]);
}

#[test]
fn a_hold_resolves_at_most_once() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 100).unwrap();
    h.hold("h1", wallet, 10).unwrap();
    h.post("p1", "h1", None).unwrap();
    let again = h.post("p2", "h1", None);
    assert_eq!(
        again,
        Err(LedgerError::HoldResolved {
            hold: id("h1"),
            state: HoldState::Posted
        })
    );
    assert!(matches!(
        h.void("v1", "h1"),
        Err(LedgerError::HoldResolved { .. })
    ));
    h.hold("h2", wallet, 10).unwrap();
    h.void("v2", "h2").unwrap();
    assert!(matches!(
        h.post("p3", "h2", None),
        Err(LedgerError::HoldResolved { .. })
    ));
    assert_eq!(
        h.post("p4", "nope", None),
        Err(LedgerError::UnknownHold(id("nope")))
    );
    assert_eq!(
        h.post("p5", "h2", Some(11)).unwrap_err(),
        LedgerError::HoldResolved {
            hold: id("h2"),
            state: HoldState::Voided
        }
    );
    h.hold("h3", wallet, 10).unwrap();
    assert_eq!(
        h.post("p6", "h3", Some(11)),
        Err(LedgerError::PostExceedsHold {
            hold: id("h3"),
            held: cr(10),
            amount: cr(11)
        })
    );
    assert_eq!(h.posted_pending(wallet), (90, 10));
}

#[test]
fn a_forgotten_hold_times_out_and_releases_its_credits() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 100).unwrap();
    h.run(hold("h1", wallet, cr(70), 10 * SECOND_US)).unwrap();
    h.run(hold("h2", wallet, cr(20), 10 * SECOND_US)).unwrap();
    h.clock.advance_micros(10 * SECOND_US);
    // Posting after the deadline is refused, and the hold is released.
    assert_eq!(
        h.post("p", "h1", None),
        Err(LedgerError::HoldTimedOut(id("h1")))
    );
    assert_eq!(h.posted_pending(wallet), (100, 20));
    // The sweep times out the other one.
    assert_eq!(h.ledger.expire_due_blocking(100).unwrap(), 1);
    h.assert_audit_clean();
    assert_eq!(h.posted_pending(wallet), (100, 0));
    assert_eq!(h.ledger.expire_due_blocking(100).unwrap(), 0);
    let kinds: Vec<_> = h
        .history(wallet)
        .into_iter()
        .map(|(kind, id, _)| (kind, id))
        .collect();
    assert_eq!(
        kinds,
        [
            (TransferKind::Grant, "g".into()),
            (TransferKind::Hold, "h1".into()),
            (TransferKind::Hold, "h2".into()),
            (TransferKind::Timeout, "~timeout:h1".into()),
            (TransferKind::Timeout, "~timeout:h2".into()),
        ]
    );
    let mut conn = h.database.get().unwrap();
    assert_eq!(
        queries::hold(&mut conn, &id("h1")).unwrap().state,
        HoldState::TimedOut
    );
}

#[test]
fn grants_are_spent_by_priority_then_expiry_then_age() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let day = 86_400 * SECOND_US;
    let at = |days: i64| Some(START.saturating_add_micros(days * day));
    h.run(grant(
        "purchase",
        wallet,
        GrantSource::Purchase,
        cr(10),
        None,
    ))
    .unwrap();
    h.run(grant(
        "allowance-late",
        wallet,
        GrantSource::Allowance,
        cr(10),
        at(30),
    ))
    .unwrap();
    h.run(grant(
        "allowance-soon",
        wallet,
        GrantSource::Allowance,
        cr(10),
        at(5),
    ))
    .unwrap();
    h.run(grant(
        "promo",
        wallet,
        GrantSource::Promotion,
        cr(10),
        at(60),
    ))
    .unwrap();
    h.run(grant(
        "allowance-never",
        wallet,
        GrantSource::Allowance,
        cr(10),
        None,
    ))
    .unwrap();
    h.clock.advance_micros(1);
    h.run(grant(
        "allowance-never-2",
        wallet,
        GrantSource::Allowance,
        cr(10),
        None,
    ))
    .unwrap();
    // Promotions first, then allowances by expiry (none last, older first),
    // purchases last.
    h.spend("s1", wallet, cr(15)).unwrap();
    h.spend("s2", wallet, cr(20)).unwrap();
    h.spend("s3", wallet, cr(7)).unwrap();
    assert_eq!(
        h.remaining(wallet),
        [
            ("promo".into(), 0, 0),
            ("allowance-soon".into(), 0, 0),
            ("allowance-late".into(), 0, 0),
            ("allowance-never".into(), 0, 0),
            ("allowance-never-2".into(), 8, 0),
            ("purchase".into(), 10, 0),
        ]
    );
}

#[test]
fn expired_grants_move_to_the_expired_account_with_their_own_transfer() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let expiry = START.saturating_add_micros(100 * SECOND_US);
    h.run(grant(
        "a",
        wallet,
        GrantSource::Allowance,
        cr(50),
        Some(expiry),
    ))
    .unwrap();
    h.grant("b", wallet, 30).unwrap();
    h.spend("s", wallet, cr(20)).unwrap();
    h.run(hold("h", wallet, cr(20), 1_000 * SECOND_US)).unwrap();
    // 10 of "a" remain free, 20 are reserved by the hold.
    assert_eq!(h.remaining(wallet)[0], ("a".into(), 10, 20));
    h.clock.advance_micros(100 * SECOND_US);
    assert_eq!(h.ledger.expire_due_blocking(100).unwrap(), 1);
    h.assert_audit_clean();
    assert_eq!(h.posted_pending(wallet), (50, 20));
    assert_eq!(h.posted_pending(PlatformAccount::Expired.id()), (10, 0));
    // Spending after expiry draws on "b"; the reservation made before the
    // expiry still holds.
    assert_eq!(insufficient(h.spend("s2", wallet, cr(31))), (30, 31));
    // Posting half the hold spends 10 of "a"; the 10 it releases expire at once.
    h.post("p", "h", Some(10)).unwrap();
    assert_eq!(h.posted_pending(wallet), (30, 0));
    assert_eq!(h.posted_pending(PlatformAccount::Expired.id()), (20, 0));
    assert_eq!(
        h.remaining(wallet),
        [("a".into(), 0, 0), ("b".into(), 30, 0)]
    );
    let history = h.history(wallet);
    assert_eq!(
        &history[history.len() - 3..],
        [
            (TransferKind::Expire, "~expire:a".into(), -10),
            (TransferKind::Post, "p".into(), -10),
            (TransferKind::Expire, "~expire:a:p".into(), -10),
        ]
    );
    // A grant that is already expired cannot be made.
    assert!(matches!(
        h.run(grant(
            "late",
            wallet,
            GrantSource::Promotion,
            cr(1),
            Some(expiry)
        )),
        Err(LedgerError::ExpiryNotInFuture { .. })
    ));
}

#[test]
fn spending_expires_due_grants_without_waiting_for_the_sweep() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let expiry = START.saturating_add_micros(SECOND_US);
    h.run(grant(
        "a",
        wallet,
        GrantSource::Promotion,
        cr(50),
        Some(expiry),
    ))
    .unwrap();
    h.grant("b", wallet, 5).unwrap();
    h.clock.advance_micros(SECOND_US);
    assert_eq!(insufficient(h.spend("s", wallet, cr(6))), (5, 6));
    assert_eq!(h.posted_pending(PlatformAccount::Expired.id()), (50, 0));
    h.spend("s", wallet, cr(5)).unwrap();
    assert_eq!(h.posted_pending(wallet), (0, 0));
}

#[test]
fn a_credit_limit_allows_debt_that_later_grants_repay() {
    let h = Harness::new();
    let wallet = h.wallet(50);
    h.grant("g1", wallet, 20).unwrap();
    h.spend("s1", wallet, cr(60)).unwrap();
    assert_eq!(h.posted_pending(wallet), (-40, 0));
    assert_eq!(insufficient(h.spend("s2", wallet, cr(11))), (10, 11));
    h.hold("h", wallet, 10).unwrap();
    assert_eq!(h.balance(wallet).available, cr(-50));
    assert_eq!(insufficient(h.hold("h2", wallet, 1)), (0, 1));
    // A new grant first repays the 40 owed.
    h.grant("g2", wallet, 100).unwrap();
    assert_eq!(h.posted_pending(wallet), (60, 10));
    assert_eq!(
        h.remaining(wallet),
        [("g1".into(), 0, 0), ("g2".into(), 60, 0)]
    );
    h.void("v", "h").unwrap();
    assert_eq!(h.balance(wallet).available, cr(60));
}

#[test]
fn a_reused_id_returns_the_first_result_or_is_refused() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let first = h.grant("g", wallet, 100).unwrap();
    assert!(!first.replayed);
    let again = h.grant("g", wallet, 100).unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer, first.transfer);
    // Spelling out the default priority is the same request.
    let explicit = Command::Grant {
        id: id("g"),
        account: wallet,
        source: GrantSource::Purchase,
        amount: cr(100),
        expires_at: None,
        priority: Some(GrantSource::Purchase.priority_default()),
        memo: String::new(),
    };
    assert!(h.run(explicit).unwrap().replayed);
    assert_eq!(
        h.grant("g", wallet, 99),
        Err(LedgerError::TransferIdConflict(id("g")))
    );
    assert_eq!(
        h.run(grant("g", wallet, GrantSource::Promotion, cr(100), None)),
        Err(LedgerError::TransferIdConflict(id("g")))
    );
    assert_eq!(
        h.spend("g", wallet, cr(1)),
        Err(LedgerError::TransferIdConflict(id("g")))
    );
    h.hold("h", wallet, 10).unwrap();
    h.post("p", "h", None).unwrap();
    assert!(h.post("p", "h", None).unwrap().replayed);
    assert!(h.post("p", "h", Some(10)).unwrap().replayed);
    assert_eq!(
        h.post("p", "h", Some(9)),
        Err(LedgerError::TransferIdConflict(id("p")))
    );
    assert_eq!(h.posted_pending(wallet), (90, 0));
    assert_eq!(h.n_transfers(), 3);
}

#[test]
fn replays_within_one_batch_move_nothing() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let commands = vec![
        grant("g", wallet, GrantSource::Purchase, cr(10), None),
        grant("g", wallet, GrantSource::Purchase, cr(10), None),
        grant("g", wallet, GrantSource::Purchase, cr(11), None),
        hold("h", wallet, cr(4), SECOND_US),
        Command::Post {
            id: id("p"),
            hold: id("h"),
            amount: None,
            memo: String::new(),
        },
        Command::Post {
            id: id("p"),
            hold: id("h"),
            amount: None,
            memo: String::new(),
        },
    ];
    let results = h.ledger.execute_blocking(commands);
    let replayed: Vec<Result<bool, LedgerError>> = results
        .into_iter()
        .map(|result| result.map(|receipt| receipt.replayed))
        .collect();
    assert_eq!(
        replayed,
        [
            Ok(false),
            Ok(true),
            Err(LedgerError::TransferIdConflict(id("g"))),
            Ok(false),
            Ok(false),
            Ok(true)
        ]
    );
    h.assert_audit_clean();
    assert_eq!(h.posted_pending(wallet), (6, 0));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let revenue = PlatformAccount::Revenue.id();
    h.grant("g", wallet, 100).unwrap();
    let before = (h.posted_pending(wallet), h.n_transfers());
    let transfer = |amount: Credits, debit: AccountId, credit: AccountId| Command::Transfer {
        id: id("t"),
        debit,
        credit,
        amount,
        memo: String::new(),
    };
    let cases: Vec<(Command, LedgerError)> = vec![
        (
            transfer(Credits::ZERO, wallet, revenue),
            LedgerError::AmountNotPositive(Credits::ZERO),
        ),
        (
            transfer(cr(-5), wallet, revenue),
            LedgerError::AmountNotPositive(cr(-5)),
        ),
        (
            transfer(cr(1), AccountId(9999), revenue),
            LedgerError::UnknownAccount(AccountId(9999)),
        ),
        (
            transfer(cr(1), wallet, AccountId(9999)),
            LedgerError::UnknownAccount(AccountId(9999)),
        ),
        (
            transfer(cr(1), wallet, wallet),
            LedgerError::SameAccount(wallet),
        ),
        (
            transfer(cr(1), revenue, wallet),
            LedgerError::WalletCreditNotGrant(wallet),
        ),
        (
            grant("t", revenue, GrantSource::Promotion, cr(1), None),
            LedgerError::GrantToNonWallet(revenue),
        ),
        (
            grant("t", wallet, GrantSource::Promotion, Credits::MAX, None),
            LedgerError::Overflow(GrantSource::Purchase.account()),
        ),
        (
            hold("t", wallet, cr(1), 0),
            LedgerError::TimeoutOutOfRange {
                timeout_us: 0,
                max_us: 86_400 * SECOND_US,
            },
        ),
        (
            Command::Transfer {
                id: id("t"),
                debit: wallet,
                credit: revenue,
                amount: cr(1),
                memo: "x".repeat(MEMO_BYTES_MAX + 1),
            },
            LedgerError::MemoTooLong(MEMO_BYTES_MAX + 1),
        ),
    ];
    for (command, expected) in cases {
        let result = h.run(command.clone());
        // The overflow case names whichever account overflows first.
        match (&result, &expected) {
            (Err(LedgerError::Overflow(_)), LedgerError::Overflow(_)) => {}
            _ => assert_eq!(result, Err(expected), "{command:?}"),
        }
        assert_eq!(
            (h.posted_pending(wallet), h.n_transfers()),
            before,
            "{command:?}"
        );
    }
    assert!(matches!(
        TransferId::new(""),
        Err(LedgerError::InvalidTransferId(_))
    ));
    assert!(matches!(
        TransferId::new("~sys"),
        Err(LedgerError::InvalidTransferId(_))
    ));
    assert!(matches!(
        TransferId::new("a b"),
        Err(LedgerError::InvalidTransferId(_))
    ));
    assert!(TransferId::new("x".repeat(TRANSFER_ID_BYTES_MAX)).is_ok());
    assert!(TransferId::new("x".repeat(TRANSFER_ID_BYTES_MAX + 1)).is_err());
    let mut conn = h.database.get().unwrap();
    assert_eq!(
        queries::wallet_of(&mut conn, crate::ids::TenantId(424242)),
        Err(LedgerError::UnknownTenant(crate::ids::TenantId(424242)))
    );
}

#[test]
fn a_call_with_too_many_commands_is_refused_whole() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let commands: Vec<Command> = (0..=COMMANDS_PER_CALL_MAX)
        .map(|n| {
            grant(
                &format!("g{n}"),
                wallet,
                GrantSource::Promotion,
                cr(1),
                None,
            )
        })
        .collect();
    let results = h.ledger.execute_blocking(commands);
    assert!(
        results
            .iter()
            .all(|result| *result == Err(LedgerError::TooManyCommands(COMMANDS_PER_CALL_MAX + 1)))
    );
    assert_eq!(h.n_transfers(), 0);
}

#[test]
fn history_pages_newest_first_and_sums_to_the_balance() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 100).unwrap();
    for n in 0..25 {
        h.spend(&format!("s{n}"), wallet, cr(1)).unwrap();
    }
    let mut conn = h.database.get().unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = queries::history(&mut conn, wallet, before, 10).unwrap();
        seen.extend(page.entries.into_iter().map(|(_, transfer)| transfer));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(seen[0].id, id("s24"));
    assert_eq!(seen[25].id, id("g"));
    let sum: i64 = seen
        .iter()
        .map(|transfer| match transfer.credit == wallet {
            true => transfer.amount.micros(),
            false => -transfer.amount.micros(),
        })
        .sum();
    assert_eq!(sum, h.balance(wallet).posted.micros());
}

#[test]
fn migrations_apply_and_revert_cleanly() {
    let test_db = TestDatabase::new();
    let database = test_db.open();
    assert!(
        database.migrate().unwrap().is_empty(),
        "a second run applies nothing"
    );
    let reverted = database.revert_all().unwrap();
    assert!(!reverted.is_empty());
    let reapplied = database.migrate().unwrap();
    assert_eq!(reapplied.len(), reverted.len());
    let mut conn = database.get().unwrap();
    let balances = queries::balances(&mut conn).unwrap();
    assert_eq!(balances.len(), PlatformAccount::ALL.len());
    for (balance, platform) in balances.iter().zip(PlatformAccount::ALL) {
        assert_eq!(balance.account, platform.id());
    }
}
