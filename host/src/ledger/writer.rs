//! The ledger's single writer: one thread per process that owns a database
//! connection, takes the commands of every concurrent caller from a queue,
//! and applies as many as are waiting (up to a batch's maximum) in one
//! transaction: group commit. One fsync then pays for a whole batch, and the
//! balance checks stay exact because one thread applies the batch in order.
//!
//! Several processes (hosts) may share one PostgreSQL database: each batch
//! locks the tenant wallets it touches (`FOR UPDATE`, in id order) before it
//! reads them, and adds to platform accounts with relative updates, so two
//! hosts never let a wallet overspend and never deadlock. On SQLite, `BEGIN
//! IMMEDIATE` makes every writer wait for the file lock instead.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::upsert::excluded;
use tokio::sync::{mpsc, oneshot};

use super::apply::{Batch, Output, Write};
use super::rows::{AccountRow, AllocationRow, GrantRow, HoldRow, TransferRow, WALLET_KIND};
use super::{
    COMMANDS_PER_CALL_MAX, Command, CommandResult, GrantSource, LedgerError, PlatformAccount,
    TransferKind,
};
use crate::config::LedgerSettings;
use crate::db::schema::{accounts, allocations, grants, holds, transfers};
use crate::db::{self, Cached, DatabaseUrl, DbConnection, Keyed};
use crate::units::Clock;

/// Calls waiting for the writer at most; callers beyond this wait for room,
/// which bounds memory under overload instead of queueing without end.
const QUEUE_CALLS_MAX: usize = 10_000;

/// The SQLite page cache of the writer's connection, in KiB.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// Ids per `IN (...)` list at most: a power of two, as lists are
/// [`db::padded`] to one.
const IN_LIST_MAX: usize = 1_024;

#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Commands applied in one commit at most.
    pub batch_commands_max: usize,
    /// The longest hold anyone may ask for.
    pub hold_timeout_max_us: i64,
}

impl WriterOptions {
    pub fn from_settings(settings: &LedgerSettings) -> WriterOptions {
        WriterOptions {
            batch_commands_max: settings.batch_transfers_max.max(1) as usize,
            hold_timeout_max_us: i64::from(settings.hold_timeout_seconds_max) * 1_000_000,
        }
    }
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions::from_settings(&LedgerSettings::default())
    }
}

/// Rows another module writes in the same transaction as a command, when
/// the command is applied (not when it is refused or replayed): a usage
/// record with the post that charges for it. The ledger does not know what
/// they are. It writes every attachment of one type in a batch with one call
/// of that type's [`Attached::write_all`], so their rows go many to a
/// statement; types are written in the order they first appear in the batch.
/// A write may run more than once (a failed batch is retried command by
/// command); only the run that commits counts.
#[derive(Clone)]
pub struct Attachment {
    row: Arc<dyn Any + Send + Sync>,
    kind: TypeId,
    write_all: WriteAll,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

type WriteAll = fn(&mut DbConnection, &[&(dyn Any + Send + Sync)]) -> QueryResult<()>;

/// A row written alongside a ledger command: see [`Attachment`].
pub trait Attached: Any + Send + Sync + Sized {
    /// Writes the rows of every attachment of this type in one batch.
    fn write_all(conn: &mut DbConnection, rows: &[&Self]) -> QueryResult<()>;
}

impl Attachment {
    pub fn new<T: Attached>(row: T) -> Attachment {
        Attachment {
            row: Arc::new(row),
            kind: TypeId::of::<T>(),
            write_all: |conn, rows| {
                let rows: Vec<&T> = rows
                    .iter()
                    .map(|row| row.downcast_ref().expect("grouped by type"))
                    .collect();
                T::write_all(conn, &rows)
            },
        }
    }
}

enum Job {
    Execute {
        commands: Vec<Command>,
        attachments: Vec<Option<Attachment>>,
        reply: oneshot::Sender<Vec<CommandResult>>,
    },
    ExpireDue {
        limit: usize,
        reply: oneshot::Sender<Result<usize, LedgerError>>,
    },
}

#[derive(Debug)]
pub(super) struct Writer {
    sender: Option<mpsc::Sender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

/// Counters of the writer's work, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed or attempted for commands.
    pub n_batches: AtomicU64,
    /// Commands those batches carried.
    pub n_commands: AtomicU64,
}

impl Writer {
    pub fn start(
        url: &DatabaseUrl,
        clock: Arc<dyn Clock>,
        options: WriterOptions,
    ) -> anyhow::Result<Writer> {
        let conn = connect(url)?;
        let (sender, receiver) = mpsc::channel(QUEUE_CALLS_MAX);
        let url = url.clone();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let mut state = WriterThread {
                    conn,
                    url,
                    clock,
                    options,
                    stats: thread_stats,
                };
                state.run(receiver);
            })?;
        Ok(Writer {
            sender: Some(sender),
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn sender(&self) -> &mpsc::Sender<Job> {
        self.sender.as_ref().expect("present until drop")
    }

    pub async fn execute(&self, commands: Vec<Command>) -> Vec<CommandResult> {
        if let Some(refused) = refuse_call(&commands) {
            return refused;
        }
        let n_commands = commands.len();
        let attachments = vec![None; n_commands];
        let (reply, answer) = oneshot::channel();
        if self
            .sender()
            .send(Job::Execute {
                commands,
                attachments,
                reply,
            })
            .await
            .is_err()
        {
            return unavailable(n_commands);
        }
        answer.await.unwrap_or_else(|_| unavailable(n_commands))
    }

    pub fn execute_blocking(&self, commands: Vec<Command>) -> Vec<CommandResult> {
        let attachments = vec![None; commands.len()];
        self.execute_attached_blocking(commands, attachments)
    }

    /// [`Writer::execute_blocking`] with rows to write alongside commands.
    pub fn execute_attached_blocking(
        &self,
        commands: Vec<Command>,
        attachments: Vec<Option<Attachment>>,
    ) -> Vec<CommandResult> {
        if let Some(refused) = refuse_call(&commands) {
            return refused;
        }
        let n_commands = commands.len();
        let (reply, answer) = oneshot::channel();
        if self
            .sender()
            .blocking_send(Job::Execute {
                commands,
                attachments,
                reply,
            })
            .is_err()
        {
            return unavailable(n_commands);
        }
        answer
            .blocking_recv()
            .unwrap_or_else(|_| unavailable(n_commands))
    }

    pub async fn expire_due(&self, limit: usize) -> Result<usize, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .send(Job::ExpireDue { limit, reply })
            .await
            .map_err(|_| LedgerError::Unavailable)?;
        answer.await.map_err(|_| LedgerError::Unavailable)?
    }

    pub fn expire_due_blocking(&self, limit: usize) -> Result<usize, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .blocking_send(Job::ExpireDue { limit, reply })
            .map_err(|_| LedgerError::Unavailable)?;
        answer
            .blocking_recv()
            .map_err(|_| LedgerError::Unavailable)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what it holds and stop.
        drop(self.sender.take());
        let thread = self.thread.lock().map(|mut slot| slot.take());
        if let Ok(Some(thread)) = thread {
            let _ = thread.join();
        }
    }
}

fn refuse_call(commands: &[Command]) -> Option<Vec<CommandResult>> {
    if commands.is_empty() {
        return Some(Vec::new());
    }
    if commands.len() > COMMANDS_PER_CALL_MAX {
        let error = LedgerError::TooManyCommands(commands.len());
        return Some(commands.iter().map(|_| Err(error.clone())).collect());
    }
    None
}

fn unavailable(n_commands: usize) -> Vec<CommandResult> {
    (0..n_commands)
        .map(|_| Err(LedgerError::Unavailable))
        .collect()
}

struct WriterThread {
    conn: DbConnection,
    url: DatabaseUrl,
    clock: Arc<dyn Clock>,
    options: WriterOptions,
    stats: Arc<Stats>,
}

impl WriterThread {
    fn run(&mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut deferred = None;
        loop {
            let job = match deferred.take() {
                Some(job) => job,
                None => match receiver.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            let (commands, attachments, reply) = match job {
                Job::ExpireDue { limit, reply } => {
                    let _ = reply.send(self.expire_due(limit));
                    continue;
                }
                Job::Execute {
                    commands,
                    attachments,
                    reply,
                } => (commands, attachments, reply),
            };
            // Take every call already waiting, up to a batch's worth.
            let mut calls = vec![(commands.len(), reply)];
            let mut batch = commands;
            let mut batch_attachments = attachments;
            while batch.len() < self.options.batch_commands_max {
                match receiver.try_recv() {
                    Ok(Job::Execute {
                        commands,
                        attachments,
                        reply,
                    }) => {
                        calls.push((commands.len(), reply));
                        batch.extend(commands);
                        batch_attachments.extend(attachments);
                    }
                    Ok(job @ Job::ExpireDue { .. }) => {
                        deferred = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.stats.n_batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .n_commands
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut results = self.execute(&batch, &batch_attachments).into_iter();
            for (n_commands, reply) in calls {
                // A caller that gave up waiting no longer needs its answer;
                // what was committed stays committed.
                let _ = reply.send(results.by_ref().take(n_commands).collect());
            }
        }
    }

    /// Applies the commands in one transaction. When the database refuses
    /// the batch, each command is retried on its own, so one command's
    /// failure (a race with another host, say) never fails its neighbours.
    fn execute(
        &mut self,
        commands: &[Command],
        attachments: &[Option<Attachment>],
    ) -> Vec<CommandResult> {
        match self.transaction(|conn, now, options| {
            apply_commands(conn, commands, attachments, now, options)
        }) {
            Ok(results) => results,
            Err(error) if commands.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, n_commands = commands.len(), "ledger batch failed; applying its commands one by one");
                commands
                    .iter()
                    .zip(attachments)
                    .map(|(command, attachment)| {
                        self.transaction(|conn, now, options| {
                            apply_commands(
                                conn,
                                std::slice::from_ref(command),
                                std::slice::from_ref(attachment),
                                now,
                                options,
                            )
                        })
                        .and_then(|mut results| results.pop().expect("one result"))
                    })
                    .collect()
            }
        }
    }

    fn expire_due(&mut self, limit: usize) -> Result<usize, LedgerError> {
        self.transaction(|conn, now, options| {
            let now_us = now.micros();
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let due_accounts: Vec<i64> = grants::table
                .filter(grants::expired.eq(false))
                .filter(grants::expires_at.le(now_us))
                .filter(grants::remaining.gt(0).or(grants::reserved.gt(0)))
                .select(grants::account_id)
                .distinct()
                .limit(limit)
                .load(conn)?;
            let mut due_holds: Vec<String> = holds::table
                .filter(holds::state.eq("pending"))
                .filter(holds::expires_at.le(now_us))
                .select(holds::id)
                .limit(limit)
                .load(conn)?;
            // Releases repay debt in the order they happen, so fix one.
            due_holds.sort();
            let mut batch = load(
                conn,
                now,
                options,
                &[],
                &due_holds,
                due_accounts.clone(),
                &[],
            )?;
            let mut n_transfers = 0;
            for account in due_accounts {
                n_transfers += batch.expire_due_grants(super::AccountId(account));
            }
            for hold in &due_holds {
                n_transfers += usize::from(batch.time_out_hold(hold));
            }
            store(conn, batch.into_output())?;
            Ok(n_transfers)
        })
    }

    /// Runs `work` between BEGIN and COMMIT, rolling back on any error.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(
            &mut DbConnection,
            crate::units::Timestamp,
            &WriterOptions,
        ) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        // PostgreSQL switches a prepared statement to a generic plan after
        // five runs. Planned while the tables were small, that plan scans
        // `transfers` in full for every id lookup once they are not (15 ms a
        // batch at 12,000 rows), so the reads of a batch are planned with
        // their values; `store` turns this off again for the inserts, whose
        // generic plans are right and much cheaper than replanning.
        let begin = match self.conn {
            DbConnection::Sqlite(_) => "BEGIN IMMEDIATE",
            DbConnection::Postgres(_) => "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan",
        };
        if let Err(error) = self.conn.batch_execute(begin) {
            self.reconnect();
            return Err(error.into());
        }
        let now = self.clock.now();
        let result = work(&mut self.conn, now, &self.options);
        let outcome = result.and_then(|value| {
            self.conn.batch_execute("COMMIT")?;
            Ok(value)
        });
        if outcome.is_err() && self.conn.batch_execute("ROLLBACK").is_err() {
            self.reconnect();
        }
        outcome
    }

    /// Replaces a connection that broke (a restarted server, say). If that
    /// fails too, the next batch tries again and its callers get the error.
    fn reconnect(&mut self) {
        if self.conn.batch_execute("SELECT 1").is_ok() {
            return;
        }
        match connect(&self.url) {
            Ok(conn) => self.conn = conn,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "ledger writer cannot reconnect")
            }
        }
    }
}

/// The writer's connection. On SQLite it keeps up to 64 MiB of pages
/// cached instead of the default 2 MiB, so the index pages every batch
/// updates (`transfers`, `holds`, the rows attached to them) stay in its
/// memory as the tables grow.
fn connect(url: &DatabaseUrl) -> anyhow::Result<DbConnection> {
    let mut conn = db::connect(url)?;
    if let DbConnection::Sqlite(_) = conn {
        conn.batch_execute(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))?;
    }
    Ok(conn)
}

fn apply_commands(
    conn: &mut DbConnection,
    commands: &[Command],
    attachments: &[Option<Attachment>],
    now: crate::units::Timestamp,
    options: &WriterOptions,
) -> Result<Vec<CommandResult>, LedgerError> {
    let ids: Vec<String> = commands
        .iter()
        .map(|command| command.id().as_str().to_owned())
        .collect();
    let hold_ids: Vec<String> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Post { hold, .. } | Command::Void { hold, .. } => {
                Some(hold.as_str().to_owned())
            }
            _ => None,
        })
        .collect();
    let accounts = commands
        .iter()
        .flat_map(|command| match command {
            Command::Grant {
                account, source, ..
            } => [Some(account.0), Some(source.account().0)],
            Command::Transfer { debit, credit, .. } | Command::Hold { debit, credit, .. } => {
                [Some(debit.0), Some(credit.0)]
            }
            Command::Post { .. } | Command::Void { .. } => [None, None],
            Command::Revoke { account, .. } => [Some(account.0), None],
        })
        .flatten()
        .collect::<Vec<i64>>();
    // A revoke's grant names its source account only once loaded: load
    // every source.
    let mut accounts = accounts;
    if commands
        .iter()
        .any(|command| matches!(command, Command::Revoke { .. }))
    {
        accounts.extend(GrantSource::ALL.map(|source| source.account().0));
    }
    let revoked: Vec<String> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Revoke { grant, .. } => Some(grant.as_str().to_owned()),
            _ => None,
        })
        .collect();
    let mut batch = load(conn, now, options, &ids, &hold_ids, accounts, &revoked)?;
    let results: Vec<CommandResult> = commands
        .iter()
        .map(|command| batch.apply(command))
        .collect();
    store(conn, batch.into_output())?;
    let mut kinds: Vec<(TypeId, WriteAll, Vec<&(dyn Any + Send + Sync)>)> = Vec::new();
    for (result, attachment) in results.iter().zip(attachments) {
        if let (Ok(receipt), Some(attachment)) = (result, attachment)
            && !receipt.replayed
        {
            match kinds.iter_mut().find(|(kind, ..)| *kind == attachment.kind) {
                Some((.., rows)) => rows.push(&*attachment.row),
                None => kinds.push((
                    attachment.kind,
                    attachment.write_all,
                    vec![&*attachment.row],
                )),
            }
        }
    }
    for (_, write_all, rows) in kinds {
        write_all(conn, &rows)?;
    }
    Ok(results)
}

/// Loads (and, on PostgreSQL, locks) everything a batch reads.
fn load(
    conn: &mut DbConnection,
    now: crate::units::Timestamp,
    options: &WriterOptions,
    transfer_ids: &[String],
    hold_ids: &[String],
    mut account_ids: Vec<i64>,
    revoked_grants: &[String],
) -> Result<Batch, LedgerError> {
    let mut batch = Batch::new(now, options.hold_timeout_max_us);
    let mut held = load_holds(conn, hold_ids)?;
    account_ids.extend(
        held.iter()
            .flat_map(|hold| [hold.debit_account_id, hold.credit_account_id]),
    );
    account_ids.push(PlatformAccount::Expired.id().0);
    let account_ids: Vec<i64> = account_ids
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if let DbConnection::Postgres(pg) = &mut *conn {
        lock_wallets(pg, &account_ids)?;
        // Read again under the locks: another host may have resolved one.
        held = load_holds(conn, hold_ids)?;
    }
    let mut wallets = Vec::new();
    for chunk in account_ids.chunks(IN_LIST_MAX) {
        let rows: Vec<AccountRow> = Cached(
            accounts::table
                .filter(accounts::id.eq_any(db::padded(chunk)))
                .select(AccountRow::as_select()),
        )
        .load(conn)?;
        for row in rows {
            if row.is_wallet() {
                wallets.push(row.id);
            }
            batch.add_account(row);
        }
    }
    let mut open: HashMap<i64, Vec<GrantRow>> =
        wallets.iter().map(|id| (*id, Vec::new())).collect();
    for chunk in wallets.chunks(IN_LIST_MAX) {
        let rows: Vec<GrantRow> = match revoked_grants.is_empty() {
            true => Cached(
                grants::table
                    .filter(grants::account_id.eq_any(db::padded(chunk)))
                    .filter(grants::remaining.gt(0).or(grants::reserved.gt(0)))
                    .select(GrantRow::as_select()),
            )
            .load(conn)?,
            // A revoke names a grant that may have nothing left: loaded
            // too, so it is refused as short rather than unknown.
            false => grants::table
                .filter(grants::account_id.eq_any(chunk))
                .filter(
                    grants::remaining
                        .gt(0)
                        .or(grants::reserved.gt(0))
                        .or(grants::id.eq_any(revoked_grants)),
                )
                .select(GrantRow::as_select())
                .load(conn)?,
        };
        for row in rows {
            open.entry(row.account_id).or_default().push(row);
        }
    }
    for (account, rows) in open {
        batch.add_grants(account, rows);
    }
    let mut reserved: HashMap<String, Vec<AllocationRow>> = HashMap::new();
    for chunk in hold_ids.chunks(IN_LIST_MAX) {
        let rows: Vec<AllocationRow> = Cached(
            allocations::table
                .filter(allocations::transfer_id.eq_any(db::padded(chunk)))
                .select(AllocationRow::as_select()),
        )
        .load(conn)?;
        for row in rows {
            reserved
                .entry(row.transfer_id.clone())
                .or_default()
                .push(row);
        }
    }
    for hold in held {
        let allocations = reserved.remove(&hold.id).unwrap_or_default();
        batch.add_hold(hold, allocations);
    }
    load_existing(conn, &mut batch, transfer_ids)?;
    Ok(batch)
}

fn load_holds(conn: &mut DbConnection, hold_ids: &[String]) -> Result<Vec<HoldRow>, LedgerError> {
    let mut rows = Vec::new();
    for chunk in hold_ids.chunks(IN_LIST_MAX) {
        rows.extend(
            Cached(
                holds::table
                    .filter(holds::id.eq_any(db::padded(chunk)))
                    .select(HoldRow::as_select()),
            )
            .load(conn)?,
        );
    }
    Ok(rows)
}

/// Locks the tenant wallets among `account_ids`, in id order, until the
/// transaction ends. Platform accounts are not locked: nothing checks their
/// balance, and they change only by relative updates.
fn lock_wallets(conn: &mut diesel::PgConnection, account_ids: &[i64]) -> Result<(), LedgerError> {
    for chunk in account_ids.chunks(IN_LIST_MAX) {
        accounts::table
            .filter(accounts::id.eq_any(chunk))
            .filter(accounts::kind.eq(WALLET_KIND))
            .order(accounts::id)
            .select(accounts::id)
            .for_update()
            .load::<i64>(conn)?;
    }
    Ok(())
}

/// Loads the transfers whose ids the batch reuses, with what a retry is
/// compared against.
fn load_existing(
    conn: &mut DbConnection,
    batch: &mut Batch,
    transfer_ids: &[String],
) -> Result<(), LedgerError> {
    for chunk in transfer_ids.chunks(IN_LIST_MAX) {
        let rows: Vec<TransferRow> = Cached(
            transfers::table
                .filter(transfers::id.eq_any(db::padded(chunk)))
                .select(TransferRow::as_select()),
        )
        .load(conn)?;
        if rows.is_empty() {
            continue;
        }
        let of_kind = |kind: TransferKind| -> Vec<String> {
            rows.iter()
                .filter(|row| row.kind == kind.as_str())
                .map(|row| row.id.clone())
                .collect()
        };
        let grant_rows: HashMap<String, GrantRow> = grants::table
            .filter(grants::id.eq_any(of_kind(TransferKind::Grant)))
            .select(GrantRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let hold_rows: HashMap<String, HoldRow> = load_holds(conn, &of_kind(TransferKind::Hold))?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        for row in rows {
            let grant = grant_rows.get(&row.id);
            let hold = hold_rows.get(&row.id);
            batch.add_existing(row, grant, hold);
        }
    }
    Ok(())
}

/// Writes what a batch produced, many rows per statement.
fn store(conn: &mut DbConnection, output: Output) -> Result<(), LedgerError> {
    if let DbConnection::Postgres(_) = conn {
        conn.batch_execute("SET LOCAL plan_cache_mode = auto")?;
    }
    db::insert_all!(conn, transfers::table, output.transfers);
    let (new_grants, changed_grants): (Vec<_>, Vec<_>) = output
        .grants
        .into_iter()
        .partition(|(_, write)| *write == Write::Insert);
    let new_grants: Vec<GrantRow> = new_grants.into_iter().map(|(row, _)| row).collect();
    db::insert_all!(conn, grants::table, new_grants);
    let changed_grants: Vec<GrantRow> = changed_grants.into_iter().map(|(row, _)| row).collect();
    db::update_all!(
        conn,
        grants::table,
        &changed_grants,
        grants::id,
        (
            grants::remaining.eq(excluded(grants::remaining)),
            grants::reserved.eq(excluded(grants::reserved)),
            grants::expired.eq(excluded(grants::expired)),
        )
    );
    let (new_holds, changed_holds): (Vec<_>, Vec<_>) = output
        .holds
        .into_iter()
        .partition(|(_, write)| *write == Write::Insert);
    let new_holds: Vec<HoldRow> = new_holds.into_iter().map(|(row, _)| row).collect();
    db::insert_all!(conn, holds::table, new_holds);
    let changed_holds: Vec<HoldRow> = changed_holds.into_iter().map(|(row, _)| row).collect();
    db::update_all!(
        conn,
        holds::table,
        &changed_holds,
        holds::id,
        (
            holds::state.eq(excluded(holds::state)),
            holds::resolved_by.eq(excluded(holds::resolved_by)),
        )
    );
    db::insert_all!(conn, allocations::table, output.allocations);
    enum AccountDelta {}
    for (id, delta) in output.account_deltas {
        Keyed::<_, AccountDelta>::new(diesel::update(accounts::table.find(id)).set((
            accounts::debits_posted.eq(accounts::debits_posted + delta.debits_posted),
            accounts::credits_posted.eq(accounts::credits_posted + delta.credits_posted),
            accounts::debits_pending.eq(accounts::debits_pending + delta.debits_pending),
            accounts::credits_pending.eq(accounts::credits_pending + delta.credits_pending),
        )))
        .run(conn)?;
    }
    Ok(())
}
