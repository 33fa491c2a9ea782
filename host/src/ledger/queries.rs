//! Reading the ledger: balances, grants, holds and cursor-paged history, and
//! opening tenant wallets. Reads run on pooled connections beside the writer
//! and never block it (SQLite's WAL, PostgreSQL's MVCC).

use diesel::prelude::*;

use super::rows::{AccountRow, GrantRow, HoldRow, TransferRow, WALLET_KIND};
use super::{AccountId, GrantSource, HoldState, LedgerError, Transfer, TransferId};
use crate::db::DbConnection;
use crate::db::schema::{accounts, grants, holds, transfers};
use crate::ids::TenantId;
use crate::units::{Credits, Timestamp};

/// Most history entries one page returns.
pub const HISTORY_PAGE_MAX: usize = 1_000;

/// An account's balances.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Balance {
    pub account: AccountId,
    /// Credits in minus credits out, holds not counted.
    pub posted: Credits,
    /// Credits reserved by pending holds.
    pub pending: Credits,
    /// Posted less pending.
    pub available: Credits,
    /// How far below zero `available` may go; `None` for platform accounts.
    pub credit_limit: Option<Credits>,
}

impl Balance {
    pub(super) fn from_row(row: &AccountRow) -> Balance {
        Balance {
            account: AccountId(row.id),
            posted: Credits::from_micros(row.posted()),
            pending: Credits::from_micros(row.debits_pending),
            available: Credits::from_micros(row.available()),
            credit_limit: row.credit_limit.map(Credits::from_micros),
        }
    }
}

/// A grant of credits to a wallet, and what is left of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Grant {
    pub id: TransferId,
    pub account: AccountId,
    pub source: GrantSource,
    pub priority: i32,
    pub amount: Credits,
    /// Not yet spent, reserved or expired.
    pub remaining: Credits,
    /// Reserved by pending holds.
    pub reserved: Credits,
    pub expires_at: Option<Timestamp>,
    pub expired: bool,
    pub created_at: Timestamp,
}

impl Grant {
    fn from_row(row: GrantRow) -> Grant {
        Grant {
            id: TransferId::stored(row.id.clone()),
            account: AccountId(row.account_id),
            source: row.source(),
            priority: row.priority,
            amount: Credits::from_micros(row.amount),
            remaining: Credits::from_micros(row.remaining),
            reserved: Credits::from_micros(row.reserved),
            expires_at: row.expires_at.map(Timestamp::from_micros),
            expired: row.expired,
            created_at: Timestamp::from_micros(row.created_at),
        }
    }
}

/// A two-phase hold.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Hold {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Credits,
    pub expires_at: Timestamp,
    pub state: HoldState,
    pub resolved_by: Option<TransferId>,
}

/// One page of an account's history, newest first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryPage {
    /// Each transfer with its position in the ledger (a cursor).
    pub entries: Vec<(i64, Transfer)>,
    /// Pass as `before` to get the next (older) page; `None` on the last.
    pub next: Option<i64>,
}

/// Opens the credit wallet of a tenant, with its credit limit.
pub fn open_wallet(
    conn: &mut DbConnection,
    tenant: TenantId,
    credit_limit: Credits,
    now: Timestamp,
) -> Result<AccountId, LedgerError> {
    if credit_limit < Credits::ZERO {
        return Err(LedgerError::NegativeCreditLimit(credit_limit));
    }
    let code = format!("tenant:{tenant}:{WALLET_KIND}");
    diesel::insert_into(accounts::table)
        .values((
            accounts::code.eq(&code),
            accounts::kind.eq(WALLET_KIND),
            accounts::tenant_id.eq(tenant.0),
            accounts::credit_limit.eq(credit_limit.micros()),
            accounts::created_at.eq(now.micros()),
        ))
        .execute(conn)?;
    wallet_of(conn, tenant)
}

/// The kind of a reseller's sales account.
pub const SALES_KIND: &str = "sales";

/// Opens a reseller's sales account, which its tenants' charges at its
/// retail prices credit. Like the platform's revenue account, it has no
/// limit and receives no grants.
pub fn open_sales_account(
    conn: &mut DbConnection,
    reseller: TenantId,
    now: Timestamp,
) -> Result<AccountId, LedgerError> {
    diesel::insert_into(accounts::table)
        .values((
            accounts::code.eq(format!("tenant:{reseller}:{SALES_KIND}")),
            accounts::kind.eq(SALES_KIND),
            accounts::tenant_id.eq(reseller.0),
            accounts::created_at.eq(now.micros()),
        ))
        .execute(conn)?;
    sales_account_of(conn, reseller)
}

/// A reseller's sales account.
pub fn sales_account_of(
    conn: &mut DbConnection,
    reseller: TenantId,
) -> Result<AccountId, LedgerError> {
    accounts::table
        .filter(accounts::tenant_id.eq(reseller.0))
        .filter(accounts::kind.eq(SALES_KIND))
        .select(accounts::id)
        .first::<i64>(conn)
        .optional()?
        .map(AccountId)
        .ok_or(LedgerError::UnknownTenant(reseller))
}

/// The credit wallet of a tenant.
pub fn wallet_of(conn: &mut DbConnection, tenant: TenantId) -> Result<AccountId, LedgerError> {
    accounts::table
        .filter(accounts::tenant_id.eq(tenant.0))
        .filter(accounts::kind.eq(WALLET_KIND))
        .select(accounts::id)
        .first::<i64>(conn)
        .optional()?
        .map(AccountId)
        .ok_or(LedgerError::UnknownTenant(tenant))
}

pub fn balance(conn: &mut DbConnection, account: AccountId) -> Result<Balance, LedgerError> {
    accounts::table
        .find(account.0)
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?
        .map(|row| Balance::from_row(&row))
        .ok_or(LedgerError::UnknownAccount(account))
}

/// Every account's balance, platform accounts first.
pub fn balances(conn: &mut DbConnection) -> Result<Vec<Balance>, LedgerError> {
    let rows: Vec<AccountRow> = accounts::table
        .order(accounts::id)
        .select(AccountRow::as_select())
        .load(conn)?;
    Ok(rows.iter().map(Balance::from_row).collect())
}

/// A wallet's grants in spending order; with `open_only`, just those with
/// credits remaining or reserved.
pub fn grants_of(
    conn: &mut DbConnection,
    account: AccountId,
    open_only: bool,
) -> Result<Vec<Grant>, LedgerError> {
    let mut query = grants::table
        .filter(grants::account_id.eq(account.0))
        .select(GrantRow::as_select())
        .into_boxed();
    if open_only {
        query = query.filter(grants::remaining.gt(0).or(grants::reserved.gt(0)));
    }
    let mut rows: Vec<GrantRow> = query.load(conn)?;
    rows.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    Ok(rows.into_iter().map(Grant::from_row).collect())
}

pub fn hold(conn: &mut DbConnection, id: &TransferId) -> Result<Hold, LedgerError> {
    let row: HoldRow = holds::table
        .find(id.as_str())
        .select(HoldRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| LedgerError::UnknownHold(id.clone()))?;
    Ok(Hold {
        id: id.clone(),
        debit: AccountId(row.debit_account_id),
        credit: AccountId(row.credit_account_id),
        amount: Credits::from_micros(row.amount),
        expires_at: Timestamp::from_micros(row.expires_at),
        state: row.state(),
        resolved_by: row.resolved_by.map(TransferId::stored),
    })
}

pub fn transfer(conn: &mut DbConnection, id: &TransferId) -> Result<Option<Transfer>, LedgerError> {
    let row: Option<TransferRow> = transfers::table
        .filter(transfers::id.eq(id.as_str()))
        .select(TransferRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(|row| row.to_transfer()))
}

/// The transfers into or out of an account, newest first, `limit` at a time
/// (at most [`HISTORY_PAGE_MAX`]), older than the cursor `before`.
pub fn history(
    conn: &mut DbConnection,
    account: AccountId,
    before: Option<i64>,
    limit: usize,
) -> Result<HistoryPage, LedgerError> {
    history_filtered(conn, account, &HistoryFilter::default(), before, limit)
}

/// Which transfers a history lists: of these kinds (all when empty), made
/// at or after `from` and before `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub kinds: Vec<super::TransferKind>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// [`history`], of the transfers `filter` keeps.
pub fn history_filtered(
    conn: &mut DbConnection,
    account: AccountId,
    filter: &HistoryFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<HistoryPage, LedgerError> {
    let limit = limit.clamp(1, HISTORY_PAGE_MAX);
    let mut query = transfers::table
        .filter(
            transfers::debit_account_id
                .eq(account.0)
                .or(transfers::credit_account_id.eq(account.0)),
        )
        .order(transfers::seq.desc())
        .limit(limit as i64 + 1)
        .select((transfers::seq, TransferRow::as_select()))
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(transfers::seq.lt(before));
    }
    if !filter.kinds.is_empty() {
        let kinds: Vec<&str> = filter.kinds.iter().map(|kind| kind.as_str()).collect();
        query = query.filter(transfers::kind.eq_any(kinds));
    }
    if let Some(from) = filter.from {
        query = query.filter(transfers::created_at.ge(from.micros()));
    }
    if let Some(to) = filter.to {
        query = query.filter(transfers::created_at.lt(to.micros()));
    }
    let mut rows: Vec<(i64, TransferRow)> = query.load(conn)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match more {
        true => rows.last().map(|(seq, _)| *seq),
        false => None,
    };
    Ok(HistoryPage {
        entries: rows
            .into_iter()
            .map(|(seq, row)| (seq, row.to_transfer()))
            .collect(),
        next,
    })
}
