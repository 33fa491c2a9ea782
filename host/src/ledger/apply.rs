//! Applying commands to the ledger's state in memory, one batch at a time.
//!
//! The writer loads the rows a batch needs (accounts, open grants, holds,
//! transfers whose ids are reused), hands them to a [`Batch`], applies every
//! command in order, and writes back what the batch produced. A command is
//! checked in full before it changes anything, so a refused command leaves the
//! batch exactly as it found it and the commands after it see the same state
//! they would have seen had it never been sent.
//!
//! A wallet's state obeys, between commands:
//! - posted = backed − debt, where backed is the sum of its grants' remaining
//!   and reserved credits and debt ≥ 0 is what was spent beyond its grants
//!   (within its credit limit);
//! - debt > 0 only when no grant has credits remaining: new or released
//!   credits repay debt first;
//! - available (posted − pending) ≥ −credit limit.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::queries::Balance;
use super::rows::{AccountRow, AllocationRow, GrantRow, HoldRow, TransferRow, stored_command};
use super::{
    AccountId, Command, CommandResult, HoldState, LedgerError, MEMO_BYTES_MAX, PlatformAccount,
    Receipt, TransferId, TransferKind,
};
use crate::units::{Credits, Timestamp};

/// A change to one balance field of one account.
#[derive(Clone, Copy, Debug)]
enum Field {
    DebitsPosted,
    CreditsPosted,
    DebitsPending,
    CreditsPending,
}

/// How much each balance field of an account moved in this batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

#[derive(Debug)]
struct AccountState {
    current: AccountRow,
    delta: Delta,
}

/// Whether a row must be inserted or updated at the end of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Insert,
    Update,
}

#[derive(Debug, Default)]
pub struct Batch {
    now: i64,
    timeout_max_us: i64,
    accounts: HashMap<i64, AccountState>,
    /// Wallets whose due grants were already expired in this batch.
    wallets_checked: HashSet<i64>,
    /// Each wallet's open grants, in spending order.
    grants: HashMap<i64, Vec<GrantRow>>,
    grant_writes: HashMap<String, Write>,
    holds: HashMap<String, HoldRow>,
    hold_writes: HashMap<String, Write>,
    /// Which grants each hold reserved, in spending order.
    hold_allocations: HashMap<String, Vec<AllocationRow>>,
    /// Transfers that exist already (in the database or earlier in this
    /// batch), with the command each answers.
    existing: HashMap<String, (Option<Command>, TransferRow)>,
    /// What the batch wrote, in order.
    transfers: Vec<TransferRow>,
    allocations: BTreeMap<(String, String), i64>,
}

/// What a batch produced, for the writer to store.
#[derive(Debug, Default)]
pub struct Output {
    pub transfers: Vec<TransferRow>,
    pub allocations: Vec<AllocationRow>,
    pub grants: Vec<(GrantRow, Write)>,
    pub holds: Vec<(HoldRow, Write)>,
    pub account_deltas: Vec<(i64, Delta)>,
}

impl Batch {
    pub fn new(now: Timestamp, timeout_max_us: i64) -> Batch {
        Batch {
            now: now.micros(),
            timeout_max_us,
            ..Batch::default()
        }
    }

    pub fn add_account(&mut self, row: AccountRow) {
        self.accounts.insert(
            row.id,
            AccountState {
                current: row,
                delta: Delta::default(),
            },
        );
    }

    pub fn add_grants(&mut self, account: i64, mut rows: Vec<GrantRow>) {
        rows.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.grants.insert(account, rows);
    }

    pub fn add_hold(&mut self, row: HoldRow, mut allocations: Vec<AllocationRow>) {
        // Reserved in spending order when the hold was made; keep that order.
        let order: HashMap<&str, usize> = self
            .grants
            .get(&row.debit_account_id)
            .map(|grants| {
                grants
                    .iter()
                    .enumerate()
                    .map(|(index, grant)| (grant.id.as_str(), index))
                    .collect()
            })
            .unwrap_or_default();
        allocations.sort_by_key(|allocation| order.get(allocation.grant_id.as_str()).copied());
        self.hold_allocations.insert(row.id.clone(), allocations);
        self.holds.insert(row.id.clone(), row);
    }

    pub fn add_existing(
        &mut self,
        row: TransferRow,
        grant: Option<&GrantRow>,
        hold: Option<&HoldRow>,
    ) {
        let command = stored_command(&row, grant, hold);
        self.existing.insert(row.id.clone(), (command, row));
    }

    pub fn into_output(self) -> Output {
        let mut grants = Vec::new();
        for rows in self.grants.into_values() {
            for row in rows {
                if let Some(write) = self.grant_writes.get(&row.id) {
                    grants.push((row, *write));
                }
            }
        }
        let holds = self
            .holds
            .into_values()
            .filter_map(|row| self.hold_writes.get(&row.id).map(|write| (row, *write)))
            .collect();
        let mut account_deltas: Vec<(i64, Delta)> = self
            .accounts
            .into_iter()
            .filter(|(_, state)| !state.delta.is_zero())
            .map(|(id, state)| (id, state.delta))
            .collect();
        // One order for every host, so concurrent batches lock rows alike.
        account_deltas.sort_by_key(|(id, _)| *id);
        Output {
            transfers: self.transfers,
            allocations: self
                .allocations
                .into_iter()
                .map(|((transfer_id, grant_id), amount)| AllocationRow {
                    transfer_id,
                    grant_id,
                    amount,
                })
                .collect(),
            grants,
            holds,
            account_deltas,
        }
    }

    /// Applies one command, or refuses it and changes nothing.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        check_shape(command, self.timeout_max_us)?;
        let normalized = self.normalize(command);
        if let Some((stored, row)) = self.existing.get(command.id().as_str()) {
            return match stored.as_ref() == Some(&normalized) {
                true => Ok(Receipt {
                    transfer: row.to_transfer(),
                    replayed: true,
                    wallet_balance: None,
                }),
                false => Err(LedgerError::TransferIdConflict(command.id().clone())),
            };
        }
        let row = match command {
            Command::Grant { .. } => self.grant(&normalized)?,
            Command::Transfer {
                id,
                debit,
                credit,
                amount,
                memo,
            } => self.transfer(id, *debit, *credit, *amount, memo)?,
            Command::Hold {
                id,
                debit,
                credit,
                amount,
                timeout_us,
                memo,
            } => self.hold(id, *debit, *credit, *amount, *timeout_us, memo)?,
            Command::Post {
                id,
                hold,
                amount,
                memo,
            } => self.resolve(id, hold, Resolution::Post(*amount), memo)?,
            Command::Void { id, hold, memo } => self.resolve(id, hold, Resolution::Void, memo)?,
            Command::Revoke {
                id,
                account,
                grant,
                amount,
                memo,
            } => self.revoke(id, *account, grant, *amount, memo)?,
        };
        let transfer = row.to_transfer();
        self.existing
            .insert(row.id.clone(), (Some(normalized), row));
        let wallet_balance = [transfer.debit, transfer.credit]
            .into_iter()
            .filter_map(|account| self.accounts.get(&account.0))
            .find(|state| state.current.is_wallet())
            .map(|state| Balance::from_row(&state.current));
        Ok(Receipt {
            transfer,
            replayed: false,
            wallet_balance,
        })
    }

    /// Fills in what a command leaves to defaults, so a retry that spells
    /// the default out compares equal to one that did not.
    fn normalize(&self, command: &Command) -> Command {
        let mut command = command.clone();
        match &mut command {
            Command::Grant {
                source, priority, ..
            } => {
                priority.get_or_insert(source.priority_default());
            }
            Command::Post { hold, amount, .. } => {
                if let (None, Some(row)) = (&amount, self.holds.get(hold.as_str())) {
                    *amount = Some(Credits::from_micros(row.amount));
                }
            }
            _ => {}
        }
        command
    }

    fn account(&self, id: AccountId) -> Result<&AccountRow, LedgerError> {
        self.accounts
            .get(&id.0)
            .map(|state| &state.current)
            .ok_or(LedgerError::UnknownAccount(id))
    }

    fn grant(&mut self, command: &Command) -> Result<TransferRow, LedgerError> {
        let Command::Grant {
            id,
            account,
            source,
            amount,
            expires_at,
            priority,
            memo,
        } = command
        else {
            unreachable!("called with a grant")
        };
        let wallet = self.account(*account)?;
        if !wallet.is_wallet() {
            return Err(LedgerError::GrantToNonWallet(*account));
        }
        if let Some(expires_at) = expires_at
            && expires_at.micros() <= self.now
        {
            return Err(LedgerError::ExpiryNotInFuture {
                expires_at: *expires_at,
                now: Timestamp::from_micros(self.now),
            });
        }
        let source_account = source.account();
        self.account(source_account)?;
        let changes = [
            (source_account, Field::DebitsPosted, amount.micros()),
            (*account, Field::CreditsPosted, amount.micros()),
        ];
        // Expiring due grants first keeps them out of the debt repayment
        // below; it would happen at this instant anyway.
        self.expire_due_grants(*account);
        self.check_changes(&changes)?;
        self.commit_changes(&changes);
        let row = self.record(
            TransferKind::Grant,
            id,
            source_account,
            *account,
            *amount,
            None,
            memo,
        );
        let grant = GrantRow {
            id: id.as_str().to_owned(),
            account_id: account.0,
            source: source.as_str().to_owned(),
            priority: priority.expect("normalized"),
            amount: amount.micros(),
            remaining: amount.micros(),
            reserved: 0,
            expires_at: expires_at.map(Timestamp::micros),
            expired: false,
            created_at: self.now,
        };
        self.grant_writes.insert(grant.id.clone(), Write::Insert);
        let grants = self.grants.entry(account.0).or_default();
        let position = grants.partition_point(|other| other.order_key() < grant.order_key());
        grants.insert(position, grant);
        self.repay_debt(*account, id);
        Ok(row)
    }

    fn revoke(
        &mut self,
        id: &TransferId,
        account: AccountId,
        grant_id: &TransferId,
        amount: Credits,
        memo: &str,
    ) -> Result<TransferRow, LedgerError> {
        self.account(account)?;
        // A grant due to expire has nothing left to take back.
        self.expire_due_grants(account);
        let grant = self
            .grants
            .get(&account.0)
            .and_then(|grants| grants.iter().find(|grant| grant.id == grant_id.as_str()))
            .ok_or_else(|| LedgerError::UnknownGrant(grant_id.clone()))?;
        if grant.remaining < amount.micros() {
            return Err(LedgerError::GrantShort {
                grant: grant_id.clone(),
                free: Credits::from_micros(grant.remaining),
                amount,
            });
        }
        let source = grant.source().account();
        self.account(source)?;
        let changes = [
            (account, Field::DebitsPosted, amount.micros()),
            (source, Field::CreditsPosted, amount.micros()),
        ];
        self.check_changes(&changes)?;
        self.commit_changes(&changes);
        self.grant_mut(account, grant_id.as_str()).remaining -= amount.micros();
        self.mark_grant(grant_id.as_str());
        let row = self.record(
            TransferKind::Revoke,
            id,
            account,
            source,
            amount,
            Some(grant_id.as_str()),
            memo,
        );
        self.allocate(id.as_str(), grant_id.as_str(), amount.micros());
        Ok(row)
    }

    fn transfer(
        &mut self,
        id: &TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        memo: &str,
    ) -> Result<TransferRow, LedgerError> {
        let changes = [
            (debit, Field::DebitsPosted, amount.micros()),
            (credit, Field::CreditsPosted, amount.micros()),
        ];
        self.check_debit(debit, credit, amount, &changes)?;
        self.commit_changes(&changes);
        let row = self.record(
            TransferKind::Transfer,
            id,
            debit,
            credit,
            amount,
            None,
            memo,
        );
        self.draw_on_grants(debit, id, amount, Draw::Spend);
        Ok(row)
    }

    fn hold(
        &mut self,
        id: &TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        timeout_us: i64,
        memo: &str,
    ) -> Result<TransferRow, LedgerError> {
        let changes = [
            (debit, Field::DebitsPending, amount.micros()),
            (credit, Field::CreditsPending, amount.micros()),
        ];
        self.check_debit(debit, credit, amount, &changes)?;
        self.commit_changes(&changes);
        let row = self.record(TransferKind::Hold, id, debit, credit, amount, None, memo);
        let allocations = self.draw_on_grants(debit, id, amount, Draw::Reserve);
        let hold = HoldRow {
            id: id.as_str().to_owned(),
            debit_account_id: debit.0,
            credit_account_id: credit.0,
            amount: amount.micros(),
            timeout_us,
            expires_at: self.now.saturating_add(timeout_us),
            state: HoldState::Pending.as_str().to_owned(),
            resolved_by: None,
        };
        self.hold_writes.insert(hold.id.clone(), Write::Insert);
        self.hold_allocations.insert(hold.id.clone(), allocations);
        self.holds.insert(hold.id.clone(), hold);
        Ok(row)
    }

    /// The checks shared by everything that takes credits out of an account
    /// at once or by a hold: both accounts exist and differ, a wallet is
    /// never credited except by a grant, and a wallet stays within its limit.
    fn check_debit(
        &mut self,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        changes: &[(AccountId, Field, i64)],
    ) -> Result<(), LedgerError> {
        if debit == credit {
            return Err(LedgerError::SameAccount(debit));
        }
        let debit_row = self.account(debit)?;
        let debit_is_wallet = debit_row.is_wallet();
        if self.account(credit)?.is_wallet() {
            return Err(LedgerError::WalletCreditNotGrant(credit));
        }
        if !debit_is_wallet {
            return self.check_changes(changes);
        }
        // Expiring due grants first may lower what is available; that is
        // not a change the caller asked for, and it would happen at this
        // instant anyway, so a refusal below still changed nothing of its own.
        self.expire_due_grants(debit);
        self.check_changes(changes)?;
        let row = self.account(debit)?;
        let limit = row.credit_limit.expect("wallets have limits");
        let spendable = row.available() + limit;
        if spendable < amount.micros() {
            return Err(LedgerError::InsufficientCredits {
                account: debit,
                available: Credits::from_micros(spendable.max(0)),
                amount,
            });
        }
        Ok(())
    }

    fn resolve(
        &mut self,
        id: &TransferId,
        hold_id: &TransferId,
        resolution: Resolution,
        memo: &str,
    ) -> Result<TransferRow, LedgerError> {
        let hold = self
            .holds
            .get(hold_id.as_str())
            .ok_or_else(|| LedgerError::UnknownHold(hold_id.clone()))?;
        match hold.state() {
            HoldState::Pending => {}
            state => {
                return Err(LedgerError::HoldResolved {
                    hold: hold_id.clone(),
                    state,
                });
            }
        }
        if hold.expires_at <= self.now {
            self.time_out_hold(hold_id.as_str());
            return Err(LedgerError::HoldTimedOut(hold_id.clone()));
        }
        let held = hold.amount;
        let captured = match resolution {
            Resolution::Post(None) => held,
            Resolution::Post(Some(amount)) if amount.micros() > held => {
                return Err(LedgerError::PostExceedsHold {
                    hold: hold_id.clone(),
                    held: Credits::from_micros(held),
                    amount,
                });
            }
            Resolution::Post(Some(amount)) => amount.micros(),
            Resolution::Void => 0,
        };
        let kind = match resolution {
            Resolution::Post(_) => TransferKind::Post,
            Resolution::Void => TransferKind::Void,
        };
        Ok(self.release_hold(id, hold_id.as_str(), kind, captured, memo))
    }

    /// Moves a hold out of pending: `captured` is posted, the rest released.
    /// The caller has checked that the hold is pending.
    fn release_hold(
        &mut self,
        id: &TransferId,
        hold_id: &str,
        kind: TransferKind,
        captured: i64,
        memo: &str,
    ) -> TransferRow {
        let hold = self
            .holds
            .get(hold_id)
            .expect("caller found the hold")
            .clone();
        let (debit, credit) = (
            AccountId(hold.debit_account_id),
            AccountId(hold.credit_account_id),
        );
        let changes = [
            (debit, Field::DebitsPending, -hold.amount),
            (credit, Field::CreditsPending, -hold.amount),
            (debit, Field::DebitsPosted, captured),
            (credit, Field::CreditsPosted, captured),
        ];
        // Posting at most what was held moves no total beyond where the hold
        // already took it.
        self.check_changes(&changes)
            .expect("resolving a hold cannot overflow");
        self.commit_changes(&changes);
        let amount = match kind {
            TransferKind::Post => captured,
            _ => hold.amount,
        };
        let row = self.record(
            kind,
            id,
            debit,
            credit,
            Credits::from_micros(amount),
            Some(hold_id),
            memo,
        );
        let state = match kind {
            TransferKind::Post => HoldState::Posted,
            TransferKind::Void => HoldState::Voided,
            TransferKind::Timeout => HoldState::TimedOut,
            other => unreachable!("{other:?} does not resolve a hold"),
        };
        let stored = self.holds.get_mut(hold_id).expect("found above");
        stored.state = state.as_str().to_owned();
        stored.resolved_by = Some(id.as_str().to_owned());
        self.hold_writes
            .entry(hold_id.to_owned())
            .or_insert(Write::Update);
        let allocations = self.hold_allocations.remove(hold_id).unwrap_or_default();
        self.settle_reservations(debit, id, allocations, captured);
        row
    }

    /// Turns a hold's reservations back into spent or free credits: the
    /// first `captured` credits, in spending order, are spent; the rest
    /// return to their grants (or expire, if their grant has).
    fn settle_reservations(
        &mut self,
        account: AccountId,
        by: &TransferId,
        allocations: Vec<AllocationRow>,
        captured: i64,
    ) {
        let mut to_capture = captured;
        let mut expired = Vec::new();
        for allocation in allocations {
            let spent = allocation.amount.min(to_capture);
            to_capture -= spent;
            let returned = allocation.amount - spent;
            let grant = self.grant_mut(account, &allocation.grant_id);
            grant.reserved -= allocation.amount;
            assert!(
                grant.reserved >= 0,
                "grant {} reserved below zero",
                grant.id
            );
            match grant.expired {
                true => expired.push((grant.id.clone(), returned)),
                false => grant.remaining += returned,
            }
            self.mark_grant(&allocation.grant_id);
            if spent > 0 {
                self.allocate(by.as_str(), &allocation.grant_id, spent);
            }
        }
        // Whatever was captured beyond the reservations was held on credit;
        // posting it turns it into debt, which needs no grant.
        for (grant_id, returned) in expired {
            if returned > 0 {
                let expire_id = TransferId::system(format!("~expire:{grant_id}:{by}"));
                self.expire(account, &grant_id, &expire_id, returned);
            }
        }
        self.repay_debt(account, by);
    }

    /// Times out a pending hold whose time has come.
    pub fn time_out_hold(&mut self, hold_id: &str) -> bool {
        let Some(hold) = self.holds.get(hold_id) else {
            return false;
        };
        if hold.state() != HoldState::Pending || hold.expires_at > self.now {
            return false;
        }
        let id = TransferId::system(format!("~timeout:{hold_id}"));
        self.release_hold(&id, hold_id, TransferKind::Timeout, 0, "hold timed out");
        true
    }

    /// Moves the unspent credits of a wallet's due grants to the expired
    /// account, once per wallet per batch. Returns the transfers it wrote.
    pub fn expire_due_grants(&mut self, account: AccountId) -> usize {
        if !self.wallets_checked.insert(account.0) {
            return 0;
        }
        let now = self.now;
        let due: Vec<(String, i64)> = self
            .grants
            .get_mut(&account.0)
            .into_iter()
            .flatten()
            .filter(|grant| !grant.expired && grant.expires_at.is_some_and(|at| at <= now))
            .map(|grant| {
                grant.expired = true;
                (grant.id.clone(), grant.remaining)
            })
            .collect();
        let mut n_transfers = 0;
        for (grant_id, remaining) in due {
            self.mark_grant(&grant_id);
            if remaining > 0 {
                let expire_id = TransferId::system(format!("~expire:{grant_id}"));
                let grant = self.grant_mut(account, &grant_id);
                grant.remaining = 0;
                self.expire(account, &grant_id, &expire_id, remaining);
                n_transfers += 1;
            }
        }
        n_transfers
    }

    /// Writes the transfer that moves `amount` of an expired grant's credits
    /// out of the wallet. The grant's own counters were already lowered.
    fn expire(&mut self, account: AccountId, grant_id: &str, id: &TransferId, amount: i64) {
        let sink = PlatformAccount::Expired.id();
        let changes = [
            (account, Field::DebitsPosted, amount),
            (sink, Field::CreditsPosted, amount),
        ];
        self.check_changes(&changes)
            .expect("expiring granted credits cannot overflow");
        self.commit_changes(&changes);
        let memo = format!("grant {grant_id} expired");
        self.record(
            TransferKind::Expire,
            id,
            account,
            sink,
            Credits::from_micros(amount),
            None,
            &memo,
        );
        self.allocate(id.as_str(), grant_id, amount);
    }

    /// Takes `amount` from the wallet's free grant credits in spending order,
    /// spending them or reserving them for a hold. What the grants cannot
    /// cover is drawn on credit (the check before allowed it).
    fn draw_on_grants(
        &mut self,
        account: AccountId,
        by: &TransferId,
        amount: Credits,
        draw: Draw,
    ) -> Vec<AllocationRow> {
        let mut left = amount.micros();
        let mut drawn = Vec::new();
        for grant in self.grants.get_mut(&account.0).into_iter().flatten() {
            if left == 0 {
                break;
            }
            let take = grant.remaining.min(left);
            if take == 0 {
                continue;
            }
            grant.remaining -= take;
            if draw == Draw::Reserve {
                grant.reserved += take;
            }
            left -= take;
            drawn.push(AllocationRow {
                transfer_id: by.as_str().to_owned(),
                grant_id: grant.id.clone(),
                amount: take,
            });
        }
        for allocation in &drawn {
            self.mark_grant(&allocation.grant_id);
            self.allocate(by.as_str(), &allocation.grant_id, allocation.amount);
        }
        drawn
    }

    /// Free grant credits repay what the wallet spent on credit.
    fn repay_debt(&mut self, account: AccountId, by: &TransferId) {
        let Some(state) = self.accounts.get(&account.0) else {
            return;
        };
        let posted = state.current.posted();
        let grants = self.grants.entry(account.0).or_default();
        let backed: i64 = grants
            .iter()
            .map(|grant| grant.remaining + grant.reserved)
            .sum();
        let debt = backed - posted;
        assert!(
            debt >= 0,
            "wallet {account} holds more than its grants back"
        );
        if debt == 0 {
            return;
        }
        let mut left = debt;
        let mut repaid = Vec::new();
        for grant in grants.iter_mut() {
            let take = grant.remaining.min(left);
            if take > 0 {
                grant.remaining -= take;
                left -= take;
                repaid.push((grant.id.clone(), take));
            }
        }
        for (grant_id, take) in repaid {
            self.mark_grant(&grant_id);
            self.allocate(by.as_str(), &grant_id, take);
        }
    }

    fn grant_mut(&mut self, account: AccountId, grant_id: &str) -> &mut GrantRow {
        self.grants
            .get_mut(&account.0)
            .and_then(|grants| grants.iter_mut().find(|grant| grant.id == grant_id))
            .unwrap_or_else(|| panic!("grant {grant_id} of account {account} is not loaded"))
    }

    fn mark_grant(&mut self, grant_id: &str) {
        self.grant_writes
            .entry(grant_id.to_owned())
            .or_insert(Write::Update);
    }

    fn allocate(&mut self, transfer_id: &str, grant_id: &str, amount: i64) {
        *self
            .allocations
            .entry((transfer_id.to_owned(), grant_id.to_owned()))
            .or_default() += amount;
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        kind: TransferKind,
        id: &TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Credits,
        pending_id: Option<&str>,
        memo: &str,
    ) -> TransferRow {
        let row = TransferRow {
            id: id.as_str().to_owned(),
            kind: kind.as_str().to_owned(),
            debit_account_id: debit.0,
            credit_account_id: credit.0,
            amount: amount.micros(),
            pending_id: pending_id.map(str::to_owned),
            memo: memo.to_owned(),
            created_at: self.now,
        };
        self.transfers.push(row.clone());
        row
    }

    /// Refuses changes that would overflow a balance field. Applying the
    /// changes one after another must stay in range at every step, which is
    /// what checking their running sums per field does.
    fn check_changes(&self, changes: &[(AccountId, Field, i64)]) -> Result<(), LedgerError> {
        let mut pending: HashMap<(i64, u8), (i64, i64)> = HashMap::new();
        for &(account, field, amount) in changes {
            let state = self
                .accounts
                .get(&account.0)
                .ok_or(LedgerError::UnknownAccount(account))?;
            let key = (account.0, field as u8);
            let (value, delta) = pending.entry(key).or_insert((
                field_of(&state.current, field),
                field_delta(&state.delta, field),
            ));
            let overflow = LedgerError::Overflow(account);
            *value = value.checked_add(amount).ok_or(overflow.clone())?;
            *delta = delta.checked_add(amount).ok_or(overflow.clone())?;
            if *value < 0 {
                return Err(overflow);
            }
        }
        // Posted balances are differences of two fields; keep those in range.
        for &(account, _, _) in changes {
            let row = &self.accounts[&account.0].current;
            let get = |field: Field| {
                pending
                    .get(&(row.id, field as u8))
                    .map(|(value, _)| *value)
                    .unwrap_or(field_of(row, field))
            };
            let posted = get(Field::CreditsPosted).checked_sub(get(Field::DebitsPosted));
            let available = posted.and_then(|posted| posted.checked_sub(get(Field::DebitsPending)));
            if available.is_none() {
                return Err(LedgerError::Overflow(AccountId(row.id)));
            }
        }
        Ok(())
    }

    fn commit_changes(&mut self, changes: &[(AccountId, Field, i64)]) {
        for &(account, field, amount) in changes {
            let state = self.accounts.get_mut(&account.0).expect("checked");
            *field_mut(&mut state.current, field) += amount;
            *delta_mut(&mut state.delta, field) += amount;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Draw {
    Spend,
    Reserve,
}

#[derive(Clone, Copy, Debug)]
enum Resolution {
    Post(Option<Credits>),
    Void,
}

/// Checks what can be checked without any state.
fn check_shape(command: &Command, timeout_max_us: i64) -> Result<(), LedgerError> {
    let memo = command.memo();
    if memo.len() > MEMO_BYTES_MAX {
        return Err(LedgerError::MemoTooLong(memo.len()));
    }
    let amount = match command {
        Command::Grant { amount, .. }
        | Command::Transfer { amount, .. }
        | Command::Revoke { amount, .. } => Some(*amount),
        Command::Hold {
            amount, timeout_us, ..
        } => {
            if *timeout_us <= 0 || *timeout_us > timeout_max_us {
                return Err(LedgerError::TimeoutOutOfRange {
                    timeout_us: *timeout_us,
                    max_us: timeout_max_us,
                });
            }
            Some(*amount)
        }
        Command::Post { amount, .. } => *amount,
        Command::Void { .. } => None,
    };
    match amount {
        Some(amount) if !amount.is_positive() => Err(LedgerError::AmountNotPositive(amount)),
        _ => Ok(()),
    }
}

fn field_of(row: &AccountRow, field: Field) -> i64 {
    match field {
        Field::DebitsPosted => row.debits_posted,
        Field::CreditsPosted => row.credits_posted,
        Field::DebitsPending => row.debits_pending,
        Field::CreditsPending => row.credits_pending,
    }
}

fn field_mut(row: &mut AccountRow, field: Field) -> &mut i64 {
    match field {
        Field::DebitsPosted => &mut row.debits_posted,
        Field::CreditsPosted => &mut row.credits_posted,
        Field::DebitsPending => &mut row.debits_pending,
        Field::CreditsPending => &mut row.credits_pending,
    }
}

fn field_delta(delta: &Delta, field: Field) -> i64 {
    match field {
        Field::DebitsPosted => delta.debits_posted,
        Field::CreditsPosted => delta.credits_posted,
        Field::DebitsPending => delta.debits_pending,
        Field::CreditsPending => delta.credits_pending,
    }
}

fn delta_mut(delta: &mut Delta, field: Field) -> &mut i64 {
    match field {
        Field::DebitsPosted => &mut delta.debits_posted,
        Field::CreditsPosted => &mut delta.credits_posted,
        Field::DebitsPending => &mut delta.debits_pending,
        Field::CreditsPending => &mut delta.credits_pending,
    }
}
