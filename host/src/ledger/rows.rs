//! The ledger's rows as diesel reads and writes them, and their conversions
//! into the ledger's types. Values in rows were validated before they were
//! written, so reading them back only asserts.

use diesel::prelude::*;

use super::{AccountId, Command, GrantSource, HoldState, Transfer, TransferId, TransferKind};
use crate::db::schema::{accounts, allocations, grants, holds, transfers};
use crate::units::{Credits, Timestamp};

/// The `kind` of a tenant's credit wallet in `accounts`.
pub const WALLET_KIND: &str = "credits";

#[derive(Queryable, Selectable, Clone, Debug, PartialEq, Eq)]
#[diesel(table_name = accounts)]
pub struct AccountRow {
    pub id: i64,
    pub kind: String,
    pub tenant_id: Option<i64>,
    pub credit_limit: Option<i64>,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

impl AccountRow {
    /// Tenant wallets are the only accounts with a limit: platform accounts
    /// are sources and sinks that may go as far negative as they must.
    pub fn is_wallet(&self) -> bool {
        self.kind == WALLET_KIND && self.credit_limit.is_some()
    }

    pub fn posted(&self) -> i64 {
        self.credits_posted - self.debits_posted
    }

    /// What may still be spent or held before the limit: posted credits less
    /// pending holds.
    pub fn available(&self) -> i64 {
        self.posted() - self.debits_pending
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq, Eq)]
#[diesel(table_name = transfers, treat_none_as_default_value = false)]
pub struct TransferRow {
    pub id: String,
    pub kind: String,
    pub debit_account_id: i64,
    pub credit_account_id: i64,
    pub amount: i64,
    pub pending_id: Option<String>,
    pub memo: String,
    pub created_at: i64,
}

impl TransferRow {
    pub fn to_transfer(&self) -> Transfer {
        Transfer {
            id: TransferId::stored(self.id.clone()),
            kind: TransferKind::parse(&self.kind)
                .unwrap_or_else(|| panic!("transfer {} has unknown kind {:?}", self.id, self.kind)),
            debit: AccountId(self.debit_account_id),
            credit: AccountId(self.credit_account_id),
            amount: Credits::from_micros(self.amount),
            pending_id: self.pending_id.clone().map(TransferId::stored),
            memo: self.memo.clone(),
            created_at: Timestamp::from_micros(self.created_at),
        }
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq, Eq)]
#[diesel(table_name = grants, treat_none_as_default_value = false)]
pub struct GrantRow {
    pub id: String,
    pub account_id: i64,
    pub source: String,
    pub priority: i32,
    pub amount: i64,
    pub remaining: i64,
    pub reserved: i64,
    pub expires_at: Option<i64>,
    pub expired: bool,
    pub created_at: i64,
}

impl GrantRow {
    /// Spending order: priority, then earliest expiry (none last), then
    /// oldest, then id so the order is total.
    pub fn order_key(&self) -> (i32, i64, i64, &str) {
        (
            self.priority,
            self.expires_at.unwrap_or(i64::MAX),
            self.created_at,
            &self.id,
        )
    }

    pub fn source(&self) -> GrantSource {
        GrantSource::parse(&self.source)
            .unwrap_or_else(|| panic!("grant {} has unknown source {:?}", self.id, self.source))
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq, Eq)]
#[diesel(table_name = holds, treat_none_as_default_value = false)]
pub struct HoldRow {
    pub id: String,
    pub debit_account_id: i64,
    pub credit_account_id: i64,
    pub amount: i64,
    pub timeout_us: i64,
    pub expires_at: i64,
    pub state: String,
    pub resolved_by: Option<String>,
}

impl HoldRow {
    pub fn state(&self) -> HoldState {
        HoldState::parse(&self.state)
            .unwrap_or_else(|| panic!("hold {} has unknown state {:?}", self.id, self.state))
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq, Eq)]
#[diesel(table_name = allocations, treat_none_as_default_value = false)]
pub struct AllocationRow {
    pub transfer_id: String,
    pub grant_id: String,
    pub amount: i64,
}

/// Rebuilds the command that created a stored transfer, so that a retry can
/// be compared with it field by field. System transfers (expiry, timeout)
/// answer no command and give `None`.
pub fn stored_command(
    transfer: &TransferRow,
    grant: Option<&GrantRow>,
    hold: Option<&HoldRow>,
) -> Option<Command> {
    let id = TransferId::stored(transfer.id.clone());
    let amount = Credits::from_micros(transfer.amount);
    let memo = transfer.memo.clone();
    let command = match TransferKind::parse(&transfer.kind)? {
        TransferKind::Grant => {
            let grant = grant?;
            Command::Grant {
                id,
                account: AccountId(transfer.credit_account_id),
                source: grant.source(),
                amount,
                expires_at: grant.expires_at.map(Timestamp::from_micros),
                priority: Some(grant.priority),
                memo,
            }
        }
        TransferKind::Transfer => Command::Transfer {
            id,
            debit: AccountId(transfer.debit_account_id),
            credit: AccountId(transfer.credit_account_id),
            amount,
            memo,
        },
        TransferKind::Hold => Command::Hold {
            id,
            debit: AccountId(transfer.debit_account_id),
            credit: AccountId(transfer.credit_account_id),
            amount,
            timeout_us: hold?.timeout_us,
            memo,
        },
        TransferKind::Post => Command::Post {
            id,
            hold: TransferId::stored(transfer.pending_id.clone()?),
            amount: Some(amount),
            memo,
        },
        TransferKind::Void => Command::Void {
            id,
            hold: TransferId::stored(transfer.pending_id.clone()?),
            memo,
        },
        TransferKind::Revoke => Command::Revoke {
            id,
            account: AccountId(transfer.debit_account_id),
            grant: TransferId::stored(transfer.pending_id.clone()?),
            amount,
            memo,
        },
        TransferKind::Timeout | TransferKind::Expire => return None,
    };
    Some(command)
}
