//! Wallet leases: how one host meters a busy wallet's calls with one ledger
//! round for many calls instead of two ledger commands for each.
//!
//! A lease is an ordinary ledger hold on part of a wallet's available
//! balance, taken by this host. A call reserves its most possible cost
//! against the lease in memory (nothing is written before the plugin runs),
//! and once it has run its settled record joins the next round. A round is
//! one ledger job for all the leases with settled calls: it posts each
//! lease's hold for what its calls charged (releasing the rest) with their
//! usage records attached, and in the same job holds the next lease: what
//! the calls still in flight may charge, plus room for more. Calls reserve
//! against that next hold from the moment its round is sent. A call answers
//! only once its round has committed, so a call that was answered has its
//! charge and its record, as on the exact path.
//!
//! Leases are only for busy wallets (`lease_after_calls` calls within
//! [`BUSY_WINDOW`]) that can afford them: a wallet whose available balance
//! covers at least [`CALLS_COVERED_MIN`] of its largest call. A lease's room
//! is at most an [`AVAILABLE_SHARE`]th of what is available (and room for
//! [`CALLS_PER_LEASE`] of its largest call), on top of what its calls in
//! flight may charge. Below that, and for calls that do not fit a lease's
//! room, every call takes the exact path (a hold of its own), so a wallet is
//! spent to exactly zero. A call the ledger refuses while this host's lease
//! holds part of the wallet gets the lease given back and tries once more,
//! so a lease never makes its own host refuse a call the balance could pay.
//! A lease unused for [`IDLE`] is given back. If the host dies, its leases'
//! holds time out after [`LEASE_TIMEOUT`] and the ledger releases them; the
//! calls in flight got no answer and are charged nothing. A round the
//! ledger could not apply (a database error) charges its calls nothing, and
//! their records say `interrupted`, as a crash's would.
//!
//! The ledger checks every hold, post and direct spend, so no wallet ever
//! spends beyond its balance. One edge is not exact: if a round's next hold
//! is refused (the wallet's balance fell by seven eighths within one round,
//! another host spending it or a refund taking it), the calls that reserved
//! against it have no hold behind them. A hold of just what they may charge
//! is tried at once; if that is refused too, their charges are spent
//! directly with the next round, and if the balance can no longer cover
//! that round's charges for the wallet, those records say `lost`, charged
//! nothing, as when a call's own hold times out. Another host's calls can
//! be refused while this host's lease holds part of a wallet only in the
//! same edge: the lease is at most an eighth of what was available a round
//! earlier.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::{
    MeterError, OUTCOME_PLATFORM_ERROR, STATE_INTERRUPTED, STATE_LOST, UsageRow, count, timed_out,
};
use crate::db::schema::usage_records;
use crate::db::{self, Database, DbConnection};
use crate::ledger::{
    AccountId, Attached, Attachment, Command, Ledger, LedgerError, PlatformAccount, TransferId,
    queries,
};
use crate::units::{Clock, Credits, Timestamp};

/// A wallet gets a lease only while its available balance covers this many
/// of its largest call.
pub const CALLS_COVERED_MIN: i64 = 1_024;

/// A lease makes room for this many of the wallet's largest call...
pub const CALLS_PER_LEASE: i64 = 256;

/// ...and takes at most this fraction (one over it) of the wallet's
/// available balance.
pub const AVAILABLE_SHARE: i64 = 8;

/// A lease no call used for this long is given back.
pub const IDLE: Duration = Duration::from_millis(50);

/// How long a lease's hold lasts if its host dies; a live host renews it at
/// every round, far sooner.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a wallet too poor for a lease has its balance read again, in
/// case it was topped up.
const REREAD: Duration = Duration::from_secs(1);

/// A wallet is busy, and may get a lease, once it makes
/// `lease_after_calls` calls within this long.
pub const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// Calls within [`BUSY_WINDOW`] that make a wallet busy, unless configured.
pub const BUSY_CALLS_DEFAULT: u32 = 32;

/// A round of at least this many calls shows the host busy...
const BUSY_ROUND_CALLS: usize = 8;

/// ...and the next round then starts no sooner than this after it started.
/// A round costs the ledger writer about half a millisecond of CPU however
/// few calls it carries, and while calls keep coming that CPU is better
/// spent serving them: on the metering bench, rounds paced so (rather than
/// back to back) carried twice the calls and made 10-15% more calls per
/// second over HTTP, with a lower p99, and 2 ms did about 4% better than
/// 1.5 ms once rounds were cheaper (docs/BENCHMARKS.md). A lone caller's
/// rounds carry one call and are never paced.
const BUSY_ROUND_PACE: Duration = Duration::from_micros(2_000);

/// This host's leases, and the thread that runs their rounds.
pub(super) struct Leases {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

struct Shared {
    ledger: Ledger,
    database: Database,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    state: Mutex<State>,
    /// Wakes the flusher: a call settled, or a wallet wants a lease.
    work: Condvar,
    /// Calls within [`BUSY_WINDOW`] that make a wallet busy; 0: no leases.
    busy_calls: std::sync::atomic::AtomicU32,
}

#[derive(Default)]
struct State {
    wallets: HashMap<AccountId, Lease>,
    /// The round that calls settling now join.
    round: Arc<Round>,
    /// Settled calls waiting for a round.
    waiting: usize,
    /// Whether the lease thread waits for work, and must be woken.
    asleep: bool,
    /// The lease thread panicked: calls take the exact path, and calls
    /// settling on a lease fail.
    dead: bool,
    stopping: bool,
}

#[derive(Default)]
struct Lease {
    /// The ledger hold behind the lease: its id, amount and (by the
    /// meter's clock, a little early) expiry.
    hold: Option<Hold>,
    /// The most that calls in flight on the lease may still charge.
    reserved: i64,
    /// What the settled calls waiting for the next round charged, and
    /// their records.
    captured: i64,
    records: Vec<UsageRow>,
    /// The largest most-possible cost of a call on this wallet.
    largest: i64,
    last_used: Option<Instant>,
    /// The wallet's available balance as last seen, and when.
    available: Option<(i64, Instant)>,
    /// Calls since `window` began, until the wallet is busy: only a busy
    /// wallet gets a lease, so one making a call now and then is charged
    /// exactly as it goes.
    window: Option<Instant>,
    window_calls: u32,
    busy: bool,
    /// A call was refused while the lease held part of the balance: the
    /// next round keeps only what calls in flight may charge.
    give_back: bool,
}

#[derive(Clone)]
struct Hold {
    id: TransferId,
    amount: i64,
    expires_at: Timestamp,
}

impl Lease {
    fn room(&self) -> i64 {
        self.hold.as_ref().map_or(0, |hold| hold.amount) - self.reserved - self.captured
    }

    /// Whether its wallet can afford a lease, as far as is known.
    fn affordable(&self) -> bool {
        self.busy
            && self.available.is_some_and(|(available, _)| {
                available >= CALLS_COVERED_MIN.saturating_mul(self.largest)
            })
    }

    /// Counts a call that found no room on a lease; returns whether that
    /// made the wallet busy.
    fn count_call(&mut self, busy_calls: u32, now: Instant) -> bool {
        if self.busy || busy_calls == 0 {
            return false;
        }
        if self
            .window
            .is_none_or(|window| now.duration_since(window) >= BUSY_WINDOW)
        {
            self.window = Some(now);
            self.window_calls = 0;
        }
        self.window_calls += 1;
        self.busy = self.window_calls >= busy_calls;
        self.busy
    }

    /// Whether the wallet's balance should be read (again) before
    /// deciding on a lease.
    fn needs_reading(&self) -> bool {
        self.hold.is_none()
            && self.busy
            && self
                .available
                .is_none_or(|(_, read)| read.elapsed() >= REREAD)
    }

    fn idle(&self) -> bool {
        self.last_used.is_none_or(|used| used.elapsed() >= IDLE)
    }
}

/// What became of a round, by wallet: the wallet's balance after it (when
/// the round moved credits), or why its calls' charges were not recorded.
/// Set once; waiters block on `done` or await `notify`.
#[derive(Default)]
struct Round {
    outcome: std::sync::OnceLock<HashMap<AccountId, RoundResult>>,
    lock: Mutex<()>,
    done: Condvar,
    notify: tokio::sync::Notify,
}

impl Round {
    fn finish(&self, outcome: HashMap<AccountId, RoundResult>) {
        assert!(self.outcome.set(outcome).is_ok(), "a round finishes once");
        // Taking the lock orders this after any waiter's check.
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
        self.done.notify_all();
        self.notify.notify_waiters();
    }

    fn answer(&self, wallet: AccountId) -> Result<Option<queries::Balance>, MeterError> {
        match self.outcome.get().and_then(|outcome| outcome.get(&wallet)) {
            Some(Ok(balance)) => Ok(*balance),
            Some(Err(error)) => Err(MeterError::Ledger(error.clone())),
            None => Err(MeterError::Ledger(LedgerError::Unavailable)),
        }
    }
}

/// A settled call waiting for its round: see [`Leases::settle`].
pub(super) struct Waiting {
    round: Arc<Round>,
    wallet: AccountId,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

impl Waiting {
    /// Blocks until the round has committed; the wallet's balance after it.
    pub fn wait(self) -> Result<Option<queries::Balance>, MeterError> {
        let mut guard = self
            .round
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while self.round.outcome.get().is_none() {
            guard = self
                .round
                .done
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.round.answer(self.wallet)
    }

    /// [`Waiting::wait`] without blocking a thread.
    pub async fn settled(self) -> Result<Option<queries::Balance>, MeterError> {
        loop {
            let notified = self.round.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.round.outcome.get().is_some() {
                return self.round.answer(self.wallet);
            }
            notified.await;
        }
    }
}

type RoundResult = Result<Option<queries::Balance>, LedgerError>;

/// A reservation on a lease, given back at settlement (or when dropped,
/// should the call not get that far).
pub(super) struct Reserved {
    shared: Arc<Shared>,
    wallet: AccountId,
    amount: i64,
}

impl std::fmt::Debug for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reserved")
            .field("wallet", &self.wallet)
            .field("amount", &self.amount)
            .finish()
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.amount != 0
            && let Some(lease) = self.shared.lock().wallets.get_mut(&self.wallet)
        {
            lease.reserved -= self.amount;
        }
    }
}

impl Leases {
    pub fn start(
        ledger: Ledger,
        database: Database,
        clock: Arc<dyn Clock>,
        hold_timeout: Duration,
    ) -> Leases {
        let shared = Arc::new(Shared {
            ledger,
            database,
            clock,
            timeout: hold_timeout.min(LEASE_TIMEOUT),
            state: Mutex::default(),
            work: Condvar::new(),
            busy_calls: BUSY_CALLS_DEFAULT.into(),
        });
        let flusher = std::thread::Builder::new()
            .name("lease-rounds".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let _watch = Watch(&shared);
                    shared.run();
                }
            })
            .expect("spawning the lease thread");
        Leases {
            shared,
            flusher: Mutex::new(Some(flusher)),
        }
    }

    /// Reserves `amount` for a call on `wallet`'s lease, if it has one
    /// with room; `None`: the call takes the exact path (and the wallet is
    /// considered for a lease).
    pub fn reserve(&self, wallet: AccountId, amount: i64, now: Timestamp) -> Option<Reserved> {
        let mut state = self.shared.lock();
        if state.stopping {
            return None;
        }
        let busy_calls = self.shared.busy_calls.load(Relaxed);
        if busy_calls == 0 {
            return None;
        }
        let lease = state.wallets.entry(wallet).or_default();
        let at = Instant::now();
        lease.last_used = Some(at);
        lease.largest = lease.largest.max(amount);
        let fits = lease.room() >= amount
            && lease
                .hold
                .as_ref()
                .is_some_and(|hold| now < hold.expires_at);
        if fits {
            lease.reserved += amount;
            return Some(Reserved {
                shared: self.shared.clone(),
                wallet,
                amount,
            });
        }
        let wanted = lease.hold.is_none() && lease.count_call(busy_calls, at);
        drop(state);
        if wanted {
            self.shared.work.notify_one();
        }
        None
    }

    /// Gives back `wallet`'s lease on this host, if it has one, keeping
    /// only what its calls in flight may charge; returns once that is done
    /// (and `true`), so a call the ledger refused while the lease held part
    /// of the balance can try again.
    pub fn give_back(&self, wallet: AccountId) -> bool {
        let round = {
            let mut state = self.shared.lock();
            if state.dead {
                return false;
            }
            let Some(lease) = state.wallets.get_mut(&wallet) else {
                return false;
            };
            if lease.hold.is_none() {
                return false;
            }
            lease.give_back = true;
            state.round.clone()
        };
        self.shared.work.notify_one();
        let _ = Waiting { round, wallet }.wait();
        true
    }

    /// How many calls within [`BUSY_WINDOW`] make a wallet busy enough
    /// for a lease; 0 turns leases off.
    pub fn set_busy_calls(&self, calls: u32) {
        self.shared.busy_calls.store(calls, Relaxed);
    }

    /// Settles a call made on a lease: its record (state `settled`,
    /// charged `record.credits`) joins the next round, which the call must
    /// wait for before it is answered.
    pub fn settle(&self, mut reserved: Reserved, record: UsageRow) -> Waiting {
        let (round, asleep) = {
            let mut state = self.shared.lock();
            if state.dead {
                let round = Arc::new(Round::default());
                round.finish(HashMap::new());
                return Waiting {
                    round,
                    wallet: reserved.wallet,
                };
            }
            state.waiting += 1;
            let lease = state
                .wallets
                .get_mut(&reserved.wallet)
                .expect("a call in flight keeps its lease");
            lease.reserved -= std::mem::take(&mut reserved.amount);
            lease.captured += record.credits;
            lease.records.push(record);
            (state.round.clone(), state.asleep)
        };
        if asleep {
            self.shared.work.notify_one();
        }
        Waiting {
            round,
            wallet: reserved.wallet,
        }
    }

    /// Settles what is in flight and gives every lease back; calls made
    /// after this take the exact path. Blocks until done.
    pub fn close(&self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_one();
        if let Some(flusher) = self.flusher.lock().expect("flusher lock").take()
            && flusher.join().is_err()
        {
            tracing::error!("the lease thread panicked; its leases' holds will time out");
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.close();
    }
}

/// Fails what waits on the lease thread if it panics, rather than leaving
/// it waiting for good; the leases' holds then time out.
struct Watch<'a>(&'a Shared);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        tracing::error!("the lease thread panicked: calls hold their own credits from now on");
        let mut state = self.0.lock();
        state.dead = true;
        state.stopping = true;
        let round = std::mem::take(&mut state.round);
        drop(state);
        round.finish(HashMap::new());
    }
}

/// A round being committed, finished with no answers (so its calls fail)
/// if the lease thread unwinds before finishing it.
struct Committing(Arc<Round>);

impl Drop for Committing {
    fn drop(&mut self) {
        if self.0.outcome.get().is_none() {
            self.0.finish(HashMap::new());
        }
    }
}

/// One wallet's part of a round.
struct Plan {
    wallet: AccountId,
    records: Vec<UsageRow>,
    /// Posts or voids the old hold (or spends directly, when there was
    /// none); `None` when there is nothing to resolve.
    resolve: Option<Command>,
    /// The next lease's hold.
    next: Option<Command>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        // When the last round started, and whether it was a busy one.
        let mut last_round: Option<(Instant, bool)> = None;
        loop {
            self.read_balances();
            let mut state = self.lock();
            // A round at once for settled calls, or for a wallet that
            // wants a lease; else one when idle leases are due back.
            let wants = !state.stopping
                && state.wallets.values().any(|lease| {
                    lease.give_back
                        || lease.needs_reading()
                        || (lease.hold.is_none() && lease.affordable() && !lease.idle())
                });
            if state.stopping && state.wallets.is_empty() {
                return;
            }
            // Stopping, leases with no call in flight go back at once.
            let closing = state.stopping && state.wallets.values().all(|lease| lease.reserved == 0);
            if state.waiting == 0 && !wants && !closing {
                state.asleep = true;
                state = self
                    .work
                    .wait_timeout(state, IDLE)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                state.asleep = false;
                if state.wallets.values().any(Lease::needs_reading) {
                    drop(state);
                    self.read_balances();
                    state = self.lock();
                }
            }
            if state.stopping && state.wallets.is_empty() {
                return;
            }
            // After a busy round the next waits out the pace, so it carries
            // more calls for the same cost.
            if let Some((started, true)) = last_round
                && started.elapsed() < BUSY_ROUND_PACE
                && !state.stopping
            {
                drop(state);
                std::thread::sleep(BUSY_ROUND_PACE.saturating_sub(started.elapsed()));
                state = self.lock();
            }
            let started = Instant::now();
            let now = self.clock.now();
            let round = Committing(std::mem::take(&mut state.round));
            state.waiting = 0;
            let stopping = state.stopping;
            let plans: Vec<Plan> = state
                .wallets
                .iter_mut()
                .filter_map(|(&wallet, lease)| self.plan(wallet, lease, now, stopping))
                .collect();
            state.wallets.retain(|_, lease| {
                lease.hold.is_some()
                    || lease.reserved > 0
                    || !lease.records.is_empty()
                    || (!lease.idle() && !stopping)
            });
            drop(state);
            let n_calls: usize = plans.iter().map(|plan| plan.records.len()).sum();
            last_round = Some((started, n_calls >= BUSY_ROUND_CALLS));
            round.0.finish(self.commit(plans));
        }
    }

    /// Reads the balances of wallets that want a lease, without the lock.
    fn read_balances(&self) {
        let wallets: Vec<AccountId> = self
            .lock()
            .wallets
            .iter()
            .filter(|(_, lease)| lease.needs_reading())
            .map(|(&wallet, _)| wallet)
            .collect();
        if wallets.is_empty() {
            return;
        }
        let mut read = Vec::new();
        match self.database.get() {
            Ok(mut conn) => {
                for wallet in wallets {
                    match queries::balance(&mut conn, wallet) {
                        Ok(balance) => read.push((wallet, balance.available.micros())),
                        Err(error) => {
                            tracing::warn!(%error, %wallet, "could not read a wallet's balance for a lease");
                            // No lease until it can be read, tried again later.
                            read.push((wallet, 0));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "no connection to read balances for leases");
                read.extend(wallets.iter().map(|&wallet| (wallet, 0)));
            }
        }
        let mut state = self.lock();
        let at = Instant::now();
        for (wallet, available) in read {
            if let Some(lease) = state.wallets.get_mut(&wallet) {
                lease.available = Some((available, at));
            }
        }
    }

    /// Plans a wallet's part of the next round, taking its settled calls;
    /// `None` when it has nothing to do.
    fn plan(
        &self,
        wallet: AccountId,
        lease: &mut Lease,
        now: Timestamp,
        stopping: bool,
    ) -> Option<Plan> {
        let give_back = std::mem::take(&mut lease.give_back);
        let grow = !stopping && !give_back && !lease.idle() && lease.affordable();
        // A lease with nothing to post stays as it is while it has time
        // left and is in use (or has calls in flight).
        if (grow || lease.reserved > 0)
            && !give_back
            && lease.records.is_empty()
            && lease
                .hold
                .as_ref()
                .is_some_and(|hold| now < hold.expires_at)
        {
            return None;
        }
        // The next round's records start with room for as many as this
        // one's: growing the vector as calls settle, under the lock every
        // settling call takes, was 4% of the workers' CPU on the bench.
        let room_for = lease.records.len();
        let records = std::mem::replace(&mut lease.records, Vec::with_capacity(room_for));
        let captured = std::mem::take(&mut lease.captured);
        let room = match grow {
            true => {
                let available = lease.available.map_or(0, |(available, _)| available);
                (available / AVAILABLE_SHARE)
                    .min(CALLS_PER_LEASE.saturating_mul(lease.largest))
                    .max(0)
            }
            false => 0,
        };
        let old = lease.hold.take();
        let target = lease.reserved + room;
        if old.is_none() && target == 0 && records.is_empty() {
            return None;
        }
        let memo = format!("lease of {} calls' credits", records.len());
        let resolve = match (&old, captured) {
            (Some(old), 0) => Some(Command::Void {
                id: resolution_id(&old.id, "void"),
                hold: old.id.clone(),
                memo,
            }),
            (Some(old), captured) => Some(Command::Post {
                id: resolution_id(&old.id, "post"),
                hold: old.id.clone(),
                amount: Some(Credits::from_micros(captured)),
                memo,
            }),
            // Calls whose lease lost its hold: spent directly.
            (None, 0) => None,
            (None, captured) => Some(Command::Transfer {
                id: new_lease_id(),
                debit: wallet,
                credit: PlatformAccount::Revenue.id(),
                amount: Credits::from_micros(captured),
                memo,
            }),
        };
        let next = (target > 0).then(|| {
            let (hold, command) = self.lease_hold(wallet, target, now);
            lease.hold = Some(hold);
            command
        });
        Some(Plan {
            wallet,
            records,
            resolve,
            next,
        })
    }

    /// Sends a round's commands to the ledger as one job and records what
    /// became of each wallet's calls.
    fn commit(&self, plans: Vec<Plan>) -> HashMap<AccountId, RoundResult> {
        let mut commands = Vec::new();
        let mut attachments = Vec::new();
        for plan in &plans {
            if let Some(resolve) = &plan.resolve {
                commands.push(resolve.clone());
                attachments.push(
                    (!plan.records.is_empty())
                        .then(|| Attachment::new(Charged(plan.records.clone()))),
                );
            }
            if let Some(hold) = &plan.next {
                commands.push(hold.clone());
                attachments.push(None);
            }
        }
        let mut results = match commands.is_empty() {
            true => Vec::new(),
            false => self.ledger.execute_attached_blocking(commands, attachments),
        }
        .into_iter();
        let mut outcome = HashMap::new();
        // Records the ledger job did not write: of calls that charged
        // nothing, and of charges that were lost.
        let mut direct: Vec<(AccountId, Vec<UsageRow>)> = Vec::new();
        let mut refused = Vec::new();
        for plan in plans {
            let mut next = || results.next().expect("a result each");
            let resolved = plan.resolve.as_ref().map(|_| next());
            let held = plan.next.as_ref().map(|_| next());
            let mut balance = None;
            let answer = match resolved {
                Some(Ok(receipt)) => {
                    balance = receipt.wallet_balance;
                    Ok(())
                }
                // The hold timed out first, or a direct spend found the
                // balance gone: those charges are lost, and the records say
                // so.
                Some(Err(error))
                    if timed_out(&error)
                        || matches!(error, LedgerError::InsufficientCredits { .. }) =>
                {
                    tracing::warn!(%error, wallet = %plan.wallet, calls = plan.records.len(), "a lease's charges were lost");
                    direct.push((plan.wallet, plan.records.into_iter().map(lost).collect()));
                    Ok(())
                }
                // Nothing was applied: the calls' charges are not made, and
                // their records say so, as a crash's would.
                Some(Err(error)) => {
                    tracing::error!(%error, wallet = %plan.wallet, calls = plan.records.len(), "a lease round failed; its calls are charged nothing");
                    let records = plan.records.into_iter();
                    direct.push((
                        plan.wallet,
                        records.map(|record| interrupted(record, &error)).collect(),
                    ));
                    Err(error)
                }
                None => {
                    direct.push((plan.wallet, plan.records));
                    Ok(())
                }
            };
            match held {
                Some(Ok(receipt)) => balance = receipt.wallet_balance.or(balance),
                Some(Err(error)) => {
                    tracing::warn!(%error, wallet = %plan.wallet, "a lease's next hold was refused");
                    refused.push(plan.wallet);
                }
                None => {}
            }
            outcome.insert(plan.wallet, answer.map(|()| balance));
        }
        if !refused.is_empty() {
            self.hold_in_flight(&refused);
        }
        direct.retain(|(_, records)| !records.is_empty());
        if !direct.is_empty() {
            let records: Vec<UsageRow> = direct
                .iter()
                .flat_map(|(_, records)| records.iter().cloned())
                .collect();
            let written = self
                .database
                .get()
                .map_err(|error| LedgerError::Database(format!("{error:#}")))
                .and_then(|mut conn| {
                    db::write_transaction(&mut conn, |conn| {
                        Charged::write_all(conn, &[&Charged(records)])
                    })
                    .map_err(LedgerError::from)
                });
            if let Err(error) = written {
                for (wallet, _) in &direct {
                    outcome.insert(*wallet, Err(error.clone()));
                }
            }
        }
        let mut state = self.lock();
        for (wallet, answer) in &outcome {
            if let (Some(lease), Ok(Some(balance))) = (state.wallets.get_mut(wallet), answer) {
                lease.available = Some((balance.available.micros(), Instant::now()));
            }
        }
        outcome
    }

    /// A new lease hold of `amount` on `wallet`, and the command that takes
    /// it. Calls reserve against it only while at least half its time is
    /// left, so a round always posts it in time.
    fn lease_hold(&self, wallet: AccountId, amount: i64, now: Timestamp) -> (Hold, Command) {
        let id = new_lease_id();
        let timeout_us = i64::try_from(self.timeout.as_micros()).unwrap_or(i64::MAX);
        let hold = Hold {
            id: id.clone(),
            amount,
            expires_at: Timestamp::from_micros(now.micros().saturating_add(timeout_us / 2)),
        };
        let command = Command::Hold {
            id,
            debit: wallet,
            credit: PlatformAccount::Revenue.id(),
            amount: Credits::from_micros(amount),
            timeout_us,
            memo: "lease for calls in flight".into(),
        };
        (hold, command)
    }

    /// After a lease's next hold was refused: holds just what its calls in
    /// flight may still charge, or leaves them without a hold (see the
    /// module's last paragraph).
    fn hold_in_flight(&self, wallets: &[AccountId]) {
        let mut state = self.lock();
        let mut commands = Vec::new();
        for wallet in wallets {
            let Some(lease) = state.wallets.get_mut(wallet) else {
                continue;
            };
            lease.hold = None;
            lease.available = None;
            let amount = lease.reserved + lease.captured;
            if amount > 0 {
                let (hold, command) = self.lease_hold(*wallet, amount, self.clock.now());
                lease.hold = Some(hold);
                commands.push((*wallet, command));
            }
        }
        drop(state);
        if commands.is_empty() {
            return;
        }
        let results = self.ledger.execute_blocking(
            commands
                .iter()
                .map(|(_, command)| command.clone())
                .collect(),
        );
        let mut state = self.lock();
        for ((wallet, _), result) in commands.iter().zip(results) {
            if let Err(error) = result
                && let Some(lease) = state.wallets.get_mut(wallet)
            {
                tracing::warn!(%error, %wallet, "calls in flight on a lease have no hold; their charges will be spent directly");
                lease.hold = None;
            }
        }
    }
}

fn interrupted(record: UsageRow, error: &LedgerError) -> UsageRow {
    UsageRow {
        credits: 0,
        outcome: OUTCOME_PLATFORM_ERROR.to_owned(),
        error: Some(format!("its charge could not be recorded: {error}")),
        state: STATE_INTERRUPTED.to_owned(),
        ..record
    }
}

fn lost(record: UsageRow) -> UsageRow {
    UsageRow {
        credits: 0,
        state: STATE_LOST.to_owned(),
        ..record
    }
}

/// A lease's id, and the id of a direct spend for a lease's calls: a
/// UUIDv7, so they sort by time.
fn new_lease_id() -> TransferId {
    TransferId::new(format!("lease:{}", uuid::Uuid::now_v7().simple()))
        .expect("hex ids make valid transfer ids")
}

fn resolution_id(hold: &TransferId, what: &str) -> TransferId {
    TransferId::new(format!("{hold}:{what}")).expect("a lease id and a suffix make a valid id")
}

/// Settled calls' records, written with the round's command that charges
/// for them, and counted.
struct Charged(Vec<UsageRow>);

impl Attached for Charged {
    fn write_all(conn: &mut DbConnection, rows: &[&Charged]) -> QueryResult<()> {
        let records: Vec<UsageRow> = rows
            .iter()
            .flat_map(|Charged(records)| records.iter().cloned())
            .collect();
        db::insert_all!(conn, usage_records::table, records);
        count(conn, &records.iter().collect::<Vec<_>>())
    }
}
