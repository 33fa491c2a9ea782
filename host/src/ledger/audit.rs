//! Checking the ledger's invariants against what is stored, from one
//! consistent snapshot. Tests run this after every step of the simulation;
//! operators run it with `tollgate credits audit`.
//!
//! The invariants:
//! - every account's posted and pending totals equal the sum of its history;
//! - all accounts together sum to zero, posted and pending;
//! - every hold was resolved at most once, and exactly the resolved ones were;
//! - no wallet's available balance is below its credit limit;
//! - each wallet's grants back its posted balance, less any debt, and debt
//!   exists only when no grant has credits left;
//! - each grant's amount equals what is left of it plus what was drawn on it.

use std::collections::HashMap;

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use super::TransferKind;
use super::rows::{AccountRow, GrantRow, HoldRow};
use crate::db::DbConnection;
use crate::db::schema::{accounts, allocations, grants, holds, transfers};

/// What an audit read and what it found wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub n_accounts: usize,
    pub n_transfers: i64,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

pub fn audit(conn: &mut DbConnection) -> QueryResult<AuditReport> {
    conn.transaction(|conn| {
        if let DbConnection::Postgres(_) = conn {
            conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
        }
        audit_snapshot(conn)
    })
}

type Sums = HashMap<i64, i64>;

fn audit_snapshot(conn: &mut DbConnection) -> QueryResult<AuditReport> {
    let mut violations = Vec::new();
    let accounts: Vec<AccountRow> = accounts::table
        .order(accounts::id)
        .select(AccountRow::as_select())
        .load(conn)?;
    let n_transfers: i64 = transfers::table.count().get_result(conn)?;

    // Summed here rather than in SQL: SUM of a BIGINT is NUMERIC on
    // PostgreSQL, and an audit reads every row anyway.
    let mut debited: Sums = HashMap::new();
    let mut credited: Sums = HashMap::new();
    let moves: Vec<(String, i64, i64, i64)> = transfers::table
        .select((
            transfers::kind,
            transfers::debit_account_id,
            transfers::credit_account_id,
            transfers::amount,
        ))
        .load(conn)?;
    for (kind, debit, credit, amount) in moves {
        if TransferKind::parse(&kind).is_some_and(TransferKind::is_posted) {
            *debited.entry(debit).or_default() += amount;
            *credited.entry(credit).or_default() += amount;
        }
    }
    let holds: Vec<HoldRow> = holds::table.select(HoldRow::as_select()).load(conn)?;
    let mut held_out: Sums = HashMap::new();
    let mut held_in: Sums = HashMap::new();
    for hold in holds.iter().filter(|hold| hold.state == "pending") {
        *held_out.entry(hold.debit_account_id).or_default() += hold.amount;
        *held_in.entry(hold.credit_account_id).or_default() += hold.amount;
    }

    let (mut posted_total, mut pending_out_total, mut pending_in_total) = (0_i128, 0_i128, 0_i128);
    for account in &accounts {
        let id = account.id;
        let history = [
            ("debits_posted", account.debits_posted, debited.get(&id)),
            ("credits_posted", account.credits_posted, credited.get(&id)),
            ("debits_pending", account.debits_pending, held_out.get(&id)),
            ("credits_pending", account.credits_pending, held_in.get(&id)),
        ];
        for (field, stored, from_history) in history {
            let from_history = from_history.copied().unwrap_or(0);
            if stored != from_history {
                violations.push(format!(
                    "account {id}: {field} is {stored} but its history sums to {from_history}"
                ));
            }
        }
        posted_total += i128::from(account.posted());
        pending_out_total += i128::from(account.debits_pending);
        pending_in_total += i128::from(account.credits_pending);
        if let Some(limit) = account.credit_limit
            && account.available() < -limit
        {
            violations.push(format!(
                "account {id}: available {} is below its limit of -{limit}",
                account.available()
            ));
        }
    }
    if posted_total != 0 {
        violations.push(format!("posted balances sum to {posted_total}, not zero"));
    }
    if pending_out_total != pending_in_total {
        violations.push(format!(
            "pending debits sum to {pending_out_total} but pending credits to {pending_in_total}"
        ));
    }

    check_holds(conn, &holds, &mut violations)?;
    check_grants(conn, &accounts, &mut violations)?;
    Ok(AuditReport {
        n_accounts: accounts.len(),
        n_transfers,
        violations,
    })
}

fn check_holds(
    conn: &mut DbConnection,
    holds: &[HoldRow],
    violations: &mut Vec<String>,
) -> QueryResult<()> {
    let resolutions: Vec<(Option<String>, i64)> = transfers::table
        .filter(transfers::pending_id.is_not_null())
        // A revoke's pending_id names the grant it took back from.
        .filter(transfers::kind.ne(TransferKind::Revoke.as_str()))
        .group_by(transfers::pending_id)
        .select((transfers::pending_id, diesel::dsl::count_star()))
        .load(conn)?;
    let resolutions: HashMap<String, i64> = resolutions
        .into_iter()
        .filter_map(|(id, count)| id.map(|id| (id, count)))
        .collect();
    let n_hold_transfers: i64 = transfers::table
        .filter(transfers::kind.eq(TransferKind::Hold.as_str()))
        .count()
        .get_result(conn)?;
    if n_hold_transfers != holds.len() as i64 {
        violations.push(format!(
            "{n_hold_transfers} hold transfers but {} holds",
            holds.len()
        ));
    }
    for hold in holds {
        let n_resolutions = resolutions.get(&hold.id).copied().unwrap_or(0);
        let expected = i64::from(hold.state != "pending");
        if n_resolutions != expected {
            violations.push(format!(
                "hold {} is {} and was resolved {n_resolutions} times",
                hold.id, hold.state
            ));
        }
    }
    Ok(())
}

fn check_grants(
    conn: &mut DbConnection,
    accounts: &[AccountRow],
    violations: &mut Vec<String>,
) -> QueryResult<()> {
    let grants: Vec<GrantRow> = grants::table.select(GrantRow::as_select()).load(conn)?;
    let mut drawn: HashMap<String, i64> = HashMap::new();
    let draws: Vec<(String, i64)> = allocations::table
        .inner_join(transfers::table.on(transfers::id.eq(allocations::transfer_id)))
        .filter(transfers::kind.ne(TransferKind::Hold.as_str()))
        .select((allocations::grant_id, allocations::amount))
        .load(conn)?;
    for (grant_id, amount) in draws {
        *drawn.entry(grant_id).or_default() += amount;
    }
    let mut by_account: HashMap<i64, Vec<&GrantRow>> = HashMap::new();
    for grant in &grants {
        by_account.entry(grant.account_id).or_default().push(grant);
        let drawn = drawn.get(&grant.id).copied().unwrap_or(0);
        if grant.amount != grant.remaining + grant.reserved + drawn {
            violations.push(format!(
                "grant {}: amount {} is not remaining {} + reserved {} + drawn {drawn}",
                grant.id, grant.amount, grant.remaining, grant.reserved
            ));
        }
        if grant.expired && grant.remaining != 0 {
            violations.push(format!(
                "grant {} expired with {} remaining",
                grant.id, grant.remaining
            ));
        }
    }
    for account in accounts.iter().filter(|account| account.is_wallet()) {
        let grants = by_account.remove(&account.id).unwrap_or_default();
        let remaining: i64 = grants.iter().map(|grant| grant.remaining).sum();
        let reserved: i64 = grants.iter().map(|grant| grant.reserved).sum();
        let debt = remaining + reserved - account.posted();
        if debt < 0 {
            violations.push(format!(
                "wallet {}: posted {} exceeds what its grants back ({})",
                account.id,
                account.posted(),
                remaining + reserved
            ));
        }
        if debt > 0 && remaining > 0 {
            violations.push(format!(
                "wallet {}: owes {debt} while its grants have {remaining} free",
                account.id
            ));
        }
        if reserved > account.debits_pending {
            violations.push(format!(
                "wallet {}: grants reserve {reserved} but only {} is pending",
                account.id, account.debits_pending
            ));
        }
    }
    for account in by_account.keys() {
        violations.push(format!("account {account} has grants but is not a wallet"));
    }
    Ok(())
}
