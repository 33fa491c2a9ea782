//! Many callers at once: the writer's group commit must keep every balance
//! check exact, in one process and across two.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const SPENDERS: usize = 8;
const ATTEMPTS_PER_SPENDER: usize = 200;

/// Spends 1 credit at a time (hold, then post) from `ledgers` in turn, on
/// `SPENDERS` threads; returns (succeeded, refused for lack of credits).
fn spend_concurrently(ledgers: &[Ledger], wallet: AccountId) -> (usize, usize) {
    let succeeded = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for thread in 0..SPENDERS {
            let ledger = &ledgers[thread % ledgers.len()];
            let (succeeded, refused) = (&succeeded, &refused);
            scope.spawn(move || {
                for attempt in 0..ATTEMPTS_PER_SPENDER {
                    let hold_id = format!("hold-{thread}-{attempt}");
                    let held =
                        ledger.submit_blocking(hold(&hold_id, wallet, cr(1), 60 * SECOND_US));
                    match held {
                        Ok(_) => {}
                        Err(LedgerError::InsufficientCredits { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(other) => panic!("hold {hold_id} failed: {other}"),
                    }
                    let posted = ledger.submit_blocking(Command::Post {
                        id: id(&format!("post-{thread}-{attempt}")),
                        hold: id(&hold_id),
                        amount: None,
                        memo: String::new(),
                    });
                    posted.unwrap_or_else(|error| panic!("posting {hold_id}: {error}"));
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (succeeded.into_inner(), refused.into_inner())
}

#[test]
fn eight_threads_spend_exactly_the_credits_there_are() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 1000).unwrap();
    let (succeeded, refused) = spend_concurrently(std::slice::from_ref(&h.ledger), wallet);
    assert_eq!(succeeded, 1000);
    assert_eq!(refused, SPENDERS * ATTEMPTS_PER_SPENDER - 1000);
    assert_eq!(h.posted_pending(wallet), (0, 0));
    assert_eq!(h.posted_pending(PlatformAccount::Revenue.id()), (1000, 0));
    h.assert_audit_clean();
}

/// Two writers on one database stand for two hosts behind a load balancer.
#[test]
fn two_hosts_on_one_database_never_overspend() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    h.grant("g", wallet, 1000).unwrap();
    let second_host = Ledger::start(
        h.database.clone(),
        h.clock.clone(),
        WriterOptions::default(),
    )
    .unwrap();
    let ledgers = [h.ledger.clone(), second_host];
    let (succeeded, refused) = spend_concurrently(&ledgers, wallet);
    assert_eq!(succeeded, 1000);
    assert_eq!(refused, SPENDERS * ATTEMPTS_PER_SPENDER - 1000);
    assert_eq!(h.posted_pending(wallet), (0, 0));
    h.assert_audit_clean();
}

/// The same id sent to two hosts at once is applied once.
#[test]
fn a_retry_on_another_host_is_applied_once() {
    let h = Harness::new();
    let wallet = h.wallet(0);
    let second_host = Ledger::start(
        h.database.clone(),
        h.clock.clone(),
        WriterOptions::default(),
    )
    .unwrap();
    let ledgers = [h.ledger.clone(), second_host];
    let results: Vec<CommandResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let ledger = &ledgers[n % 2];
                scope.spawn(move || {
                    ledger.submit_blocking(grant(
                        "same",
                        wallet,
                        GrantSource::Purchase,
                        cr(5),
                        None,
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let n_applied = results
        .iter()
        .filter(|result| matches!(result, Ok(receipt) if !receipt.replayed))
        .count();
    assert_eq!(n_applied, 1, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(h.posted_pending(wallet), (5, 0));
    h.assert_audit_clean();
}
