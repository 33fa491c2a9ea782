//! The exact path: a call's own hold, written with its record `invoking`,
//! and its settlement, written with its completed record; and the recovery
//! of calls a crash left `invoking`. Every call takes it but those on a
//! wallet lease (`leases`).

use diesel::prelude::*;

use super::{
    Meter, MeterError, OUTCOME_PLATFORM_ERROR, STATE_INTERRUPTED, STATE_INVOKING, STATE_LOST,
    STATE_SETTLED, UsageRow, count, hold_id, settle_id, wholesale_hold_id, wholesale_settle_id,
};
use crate::db::schema::usage_records;
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{
    AccountId, Attached, Attachment, Command, CommandResult, HoldState, LedgerError,
    PlatformAccount, TransferId, queries,
};
use crate::resale::Reseller;
use crate::units::Credits;

impl Meter {
    /// Holds what the call may cost, and writes its record `invoking` in
    /// the same transaction: on the tenant's wallet (at its reseller's
    /// retail prices, for a resold tenant, credited to the reseller's sales
    /// account) and, for a resold tenant, on the reseller's wallet at the
    /// platform's prices. Both go to the ledger in one batch; when either is
    /// refused, the other is voided, the record is withdrawn with it, and
    /// the call is refused having charged nothing.
    pub(super) fn hold(
        &self,
        record: &UsageRow,
        wallet: AccountId,
        reseller: Option<&Reseller>,
        plugin: &str,
        function: &str,
    ) -> Result<(), MeterError> {
        let timeout_us = i64::try_from(self.hold_timeout.as_micros()).unwrap_or(i64::MAX);
        let memo = format!("{plugin} {function}");
        let mut commands = Vec::new();
        if record.held > 0 {
            commands.push(Command::Hold {
                id: hold_id(&record.id),
                debit: wallet,
                credit: reseller.map_or(PlatformAccount::Revenue.id(), |reseller| reseller.sales),
                amount: Credits::from_micros(record.held),
                timeout_us,
                memo: memo.clone(),
            });
        }
        if let Some(reseller) = reseller
            && record.wholesale_held > 0
        {
            commands.push(Command::Hold {
                id: wholesale_hold_id(&record.id),
                debit: reseller.wallet,
                credit: PlatformAccount::Revenue.id(),
                amount: Credits::from_micros(record.wholesale_held),
                timeout_us,
                memo: format!("{memo} for tenant {}", record.tenant_id),
            });
        }
        if commands.is_empty() {
            let mut conn = self.database.get()?;
            diesel::insert_into(usage_records::table)
                .values(record)
                .execute(&mut conn)?;
            return Ok(());
        }
        let mut attachments = vec![None; commands.len()];
        attachments[commands.len() - 1] = Some(Attachment::new(Invoking(record.clone())));
        let results = self
            .ledger
            .execute_attached_blocking(commands.clone(), attachments);
        if results.iter().all(Result::is_ok) {
            return Ok(());
        }
        // Release whatever was held, withdrawing the record if it was
        // written, in one transaction.
        let voids: Vec<Command> = commands
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|(command, _)| {
                let wholesale = *command.id() == wholesale_hold_id(&record.id);
                Command::Void {
                    id: match wholesale {
                        true => wholesale_settle_id(&record.id),
                        false => settle_id(&record.id),
                    },
                    hold: command.id().clone(),
                    memo: format!("{memo}: refused, nothing charged"),
                }
            })
            .collect();
        if !voids.is_empty() {
            let mut attachments = vec![None; voids.len()];
            attachments[0] = Some(Attachment::new(Withdrawn(record.id.clone())));
            for result in self.ledger.execute_attached_blocking(voids, attachments) {
                result?;
            }
        }
        let refusal = commands
            .iter()
            .zip(results)
            .find_map(|(command, result)| Some((command.id().clone(), result.err()?)))
            .expect("one was refused");
        match refusal {
            (
                id,
                LedgerError::InsufficientCredits {
                    available, amount, ..
                },
            ) if id == hold_id(&record.id) => Err(MeterError::InsufficientCredits {
                available,
                required: amount,
            }),
            (
                _,
                LedgerError::InsufficientCredits {
                    available, amount, ..
                },
            ) => Err(MeterError::ResellerBalanceExhausted {
                reseller: TenantId(record.reseller_id.expect("a wholesale hold has a reseller")),
                available,
                required: amount,
            }),
            (_, error) => Err(error.into()),
        }
    }

    /// Resolves a call's holds in one ledger batch: posts `credits` of the
    /// tenant's hold and `wholesale` of its reseller's (voiding a hold whose
    /// amount is zero), and writes `completion` with the first of them.
    fn resolve_holds(
        &self,
        record: &UsageRow,
        credits: i64,
        wholesale: i64,
        memo: &str,
        completion: UsageRow,
    ) -> Sides {
        let resolution = |id: TransferId, hold: TransferId, amount: i64| match amount {
            0 => Command::Void {
                id,
                hold,
                memo: format!("{memo}: nothing charged"),
            },
            amount => Command::Post {
                id,
                hold,
                amount: Some(Credits::from_micros(amount)),
                memo: memo.to_owned(),
            },
        };
        let mut commands = Vec::new();
        if record.held > 0 {
            commands.push(resolution(
                settle_id(&record.id),
                hold_id(&record.id),
                credits,
            ));
        }
        if record.wholesale_held > 0 {
            commands.push(resolution(
                wholesale_settle_id(&record.id),
                wholesale_hold_id(&record.id),
                wholesale,
            ));
        }
        let mut attachments = vec![None; commands.len()];
        if let Some(first) = attachments.first_mut() {
            *first = Some(Attachment::new(Completed(completion)));
        }
        let mut results = self
            .ledger
            .execute_attached_blocking(commands, attachments)
            .into_iter();
        let mut side = |held: i64| (held > 0).then(|| results.next().expect("a result each"));
        Sides {
            tenant: side(record.held),
            wholesale: side(record.wholesale_held),
        }
    }

    /// Posts the record's charges from its holds (releasing the rest) or
    /// voids them, and in the same transaction writes the record as
    /// settled. A hold that timed out first makes the record `lost`: that
    /// charge is gone, and the record says so. A wholesale charge that took
    /// the reseller's balance below one of its thresholds records an alert.
    pub(super) fn settle(
        &self,
        record: UsageRow,
        reseller: Option<&Reseller>,
    ) -> Result<Option<queries::Balance>, MeterError> {
        if record.held == 0 && record.wholesale_held == 0 {
            let mut conn = self.database.get()?;
            db::write_transaction(&mut conn, |conn| complete_if_invoking(conn, &record))?;
            return Ok(None);
        }
        let memo = format!(
            "{} {}: {} units",
            record.plugin, record.function, record.units
        );
        let sides = self.resolve_holds(
            &record,
            record.credits,
            record.wholesale,
            &memo,
            record.clone(),
        );
        for result in [&sides.tenant, &sides.wholesale].into_iter().flatten() {
            if let Err(error) = result
                && !timed_out(error)
            {
                return Err(error.clone().into());
            }
        }
        let posted = |side: &Option<CommandResult>| matches!(side, Some(Ok(_)));
        let lost = |side: &Option<CommandResult>| matches!(side, Some(Err(_)));
        let charged = UsageRow {
            credits: if lost(&sides.tenant) {
                0
            } else {
                record.credits
            },
            wholesale: if posted(&sides.wholesale) {
                record.wholesale
            } else {
                0
            },
            state: match lost(&sides.tenant) || lost(&sides.wholesale) {
                true => STATE_LOST.to_owned(),
                false => STATE_SETTLED.to_owned(),
            },
            ..record.clone()
        };
        let first = sides.tenant.as_ref().or(sides.wholesale.as_ref());
        if !matches!(first, Some(Ok(_))) {
            let mut conn = self.database.get()?;
            db::write_transaction(&mut conn, |conn| complete_if_invoking(conn, &charged))?;
        } else if charged != record {
            // The tenant's side posted with the record, the reseller's hold
            // had timed out: the record says what the ledger charged.
            let mut conn = self.database.get()?;
            diesel::update(usage_records::table.find(&record.id))
                .set((
                    usage_records::wholesale.eq(charged.wholesale),
                    usage_records::state.eq(&charged.state),
                ))
                .execute(&mut conn)?;
        }
        if let (Some(reseller), Some(Ok(receipt))) = (reseller, &sides.wholesale)
            && charged.wholesale > 0
            && let Some(balance) = receipt.wallet_balance
        {
            self.alert(reseller, &record.id, balance, charged.wholesale);
        }
        Ok(match sides.tenant {
            Some(Ok(receipt)) => receipt.wallet_balance,
            _ => None,
        })
    }

    /// Records the alerts of a wholesale charge of `wholesale` micro-credits
    /// that left the reseller's wallet at `balance`. Most charges cross no
    /// threshold, and take no connection.
    fn alert(&self, reseller: &Reseller, call_id: &str, balance: queries::Balance, wholesale: i64) {
        let limit = balance.credit_limit.unwrap_or(Credits::ZERO);
        let after = Credits::from_micros(balance.posted.micros() + limit.micros());
        let before = Credits::from_micros(after.micros() + wholesale);
        if crate::resale::crossed(&reseller.thresholds, before, after).is_empty() {
            return;
        }
        let now = self.clock.now();
        let recorded = self
            .database
            .get()
            .map_err(|error| format!("{error:#}"))
            .and_then(|mut conn| {
                crate::resale::record_alerts(&mut conn, reseller, call_id, before, after, now)
                    .map_err(|error| error.to_string())
            });
        if let Err(error) = recorded {
            tracing::error!(%error, reseller = reseller.id.0, "could not record a reseller's balance alert");
        }
    }

    /// Ends every call left `invoking` for longer than a hold lasts, so
    /// its host must have died (a live call settles, or is marked `lost`,
    /// by then; another host's calls in flight are left alone): voids its
    /// holds and marks it `interrupted`, charged nothing. Returns how many.
    /// Run at start and then periodically.
    pub fn recover(&self) -> Result<usize, MeterError> {
        let hold_us = i64::try_from(self.hold_timeout.as_micros()).unwrap_or(i64::MAX);
        let cutoff = self.clock.now().micros().saturating_sub(hold_us);
        let mut conn = self.database.get()?;
        // Spelled out, not bound, so that the partial index on calls in
        // flight (`WHERE state = 'invoking'`) serves it.
        debug_assert_eq!(STATE_INVOKING, "invoking");
        let invoking: Vec<UsageRow> = usage_records::table
            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                "usage_records.state = 'invoking'",
            ))
            .filter(usage_records::created_at.lt(cutoff))
            .select(UsageRow::as_select())
            .load(&mut conn)?;
        drop(conn);
        for record in &invoking {
            let interrupted = UsageRow {
                credits: 0,
                wholesale: 0,
                outcome: OUTCOME_PLATFORM_ERROR.to_owned(),
                error: Some("the host stopped during the call".to_owned()),
                state: STATE_INTERRUPTED.to_owned(),
                ..record.clone()
            };
            let memo = format!(
                "{} {}: interrupted by a restart",
                record.plugin, record.function
            );
            let sides = self.resolve_holds(record, 0, 0, &memo, interrupted.clone());
            match sides.tenant.or(sides.wholesale) {
                Some(Ok(_)) => {}
                None
                | Some(Err(LedgerError::HoldTimedOut(_) | LedgerError::HoldResolved { .. })) => {
                    // No hold, or the call itself settled (or was marked
                    // lost) meanwhile: what it wrote stands.
                    let mut conn = self.database.get()?;
                    db::write_transaction(&mut conn, |conn| {
                        complete_if_invoking(conn, &interrupted)
                    })?;
                }
                Some(Err(error)) => return Err(error.into()),
            }
        }
        Ok(invoking.len())
    }
}

/// What became of each side of a call's holds: the tenant's, and its
/// reseller's at wholesale (`None`: that side held nothing).
struct Sides {
    tenant: Option<CommandResult>,
    wholesale: Option<CommandResult>,
}

pub(super) fn timed_out(error: &LedgerError) -> bool {
    matches!(
        error,
        LedgerError::HoldTimedOut(_)
            | LedgerError::HoldResolved {
                state: HoldState::TimedOut,
                ..
            }
    )
}

/// A refused call's record, deleted in the transaction that voids what
/// its other hold reserved.
struct Withdrawn(String);

impl Attached for Withdrawn {
    fn write_all(conn: &mut DbConnection, rows: &[&Withdrawn]) -> QueryResult<()> {
        let ids: Vec<&str> = rows.iter().map(|Withdrawn(id)| id.as_str()).collect();
        diesel::delete(
            usage_records::table
                .filter(usage_records::id.eq_any(ids))
                .filter(usage_records::state.eq(STATE_INVOKING)),
        )
        .execute(conn)?;
        Ok(())
    }
}

/// A call's record as its hold writes it: `invoking`.
pub(super) struct Invoking(pub(super) UsageRow);

impl Attached for Invoking {
    fn write_all(conn: &mut DbConnection, rows: &[&Invoking]) -> QueryResult<()> {
        let rows: Vec<UsageRow> = rows.iter().map(|Invoking(row)| row.clone()).collect();
        db::insert_all!(conn, usage_records::table, rows);
        Ok(())
    }
}

/// A call's final record, as its settlement writes it.
struct Completed(UsageRow);

impl Attached for Completed {
    fn write_all(conn: &mut DbConnection, rows: &[&Completed]) -> QueryResult<()> {
        let rows: Vec<&UsageRow> = rows.iter().map(|Completed(row)| row).collect();
        complete(conn, &rows)
    }
}

/// Writes a call's final record unless something else completed it
/// first (its settlement and a recovery racing, say): the first writer
/// wins, and only it counts the call. Returns whether this one did.
fn complete_if_invoking(conn: &mut DbConnection, record: &UsageRow) -> QueryResult<bool> {
    let changed = diesel::update(
        usage_records::table
            .find(&record.id)
            .filter(usage_records::state.eq(STATE_INVOKING)),
    )
    .set((
        usage_records::units.eq(record.units),
        usage_records::credits.eq(record.credits),
        usage_records::wholesale.eq(record.wholesale),
        usage_records::fuel.eq(record.fuel),
        usage_records::duration_us.eq(record.duration_us),
        usage_records::outcome.eq(&record.outcome),
        usage_records::error.eq(&record.error),
        usage_records::state.eq(&record.state),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Ok(false);
    }
    count(conn, &[record])?;
    Ok(true)
}

/// Writes calls' final records and counts them: their units towards their
/// periods, and everything into the usage rollups. Only for calls whose
/// hold this same transaction resolved, which happens once per call.
fn complete(conn: &mut DbConnection, records: &[&UsageRow]) -> QueryResult<()> {
    use diesel::upsert::excluded;
    let rows: Vec<UsageRow> = records.iter().map(|&row| row.clone()).collect();
    db::update_all!(
        conn,
        usage_records::table,
        rows,
        usage_records::id,
        (
            usage_records::units.eq(excluded(usage_records::units)),
            usage_records::credits.eq(excluded(usage_records::credits)),
            usage_records::wholesale.eq(excluded(usage_records::wholesale)),
            usage_records::fuel.eq(excluded(usage_records::fuel)),
            usage_records::duration_us.eq(excluded(usage_records::duration_us)),
            usage_records::outcome.eq(excluded(usage_records::outcome)),
            usage_records::error.eq(excluded(usage_records::error)),
            usage_records::state.eq(excluded(usage_records::state)),
        )
    );
    count(conn, records)
}
