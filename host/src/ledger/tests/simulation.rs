//! A seeded simulation: thousands of random ledger operations (grants,
//! expiries, holds, posts, partial posts, voids, timeouts, transfers, retries
//! with reused ids, batches) run against the real ledger and against a small
//! in-memory model written separately. After every step the balances and
//! grants must agree with the model and the audit must find every invariant
//! intact. A failure names the seed; rerun it with `TOLLGATE_SIM_SEED=<seed>`.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Steps per seed. Each step audits the whole ledger, so this is what makes
/// the test take seconds rather than milliseconds.
const STEPS: usize = 1_500;

#[test]
fn random_operations_match_the_model_and_keep_every_invariant() {
    let seeds: Vec<u64> = match std::env::var("TOLLGATE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("TOLLGATE_SIM_SEED is a number")],
        Err(_) => vec![1, 2, rand::random()],
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| simulate(seed));
        if let Err(panic) = outcome {
            eprintln!("simulation failed with seed {seed}; rerun with TOLLGATE_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let h = Harness::new();
    let limits = [0, 0, 30];
    let wallets: Vec<AccountId> = limits.iter().map(|limit| h.wallet(*limit)).collect();
    let mut model = Model::new(&wallets, &limits);
    let mut applied: Vec<Command> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut n_ids = 0;
    let mut fresh_id = |prefix: &str| {
        n_ids += 1;
        id(&format!("{prefix}{n_ids}"))
    };
    for step in 0..STEPS {
        let roll = rng.random_range(0..100);
        if roll < 5 {
            h.clock.advance_micros(rng.random_range(1..60) * SECOND_US);
            continue;
        }
        if roll < 8 {
            model.now = h.clock.now().micros();
            let expected = model.sweep();
            let got = h.ledger.expire_due_blocking(1_000).unwrap();
            assert_eq!(got, expected, "seed {seed} step {step}: sweep");
            if got > 0 {
                *seen.entry("sweep expired something".into()).or_default() += 1;
            }
            check(&h, &model, seed, step);
            continue;
        }
        model.now = h.clock.now().micros();
        let n_commands = if rng.random_bool(0.1) {
            rng.random_range(2..6)
        } else {
            1
        };
        let commands: Vec<Command> = (0..n_commands)
            .map(|_| random_command(&mut rng, &model, &wallets, &applied, &mut fresh_id))
            .collect();
        let expected: Vec<Outcome> = commands
            .iter()
            .map(|command| model.apply(command))
            .collect();
        let results = h.ledger.execute_blocking(commands.clone());
        for ((command, result), expected) in commands.iter().zip(results).zip(expected) {
            assert_eq!(
                Outcome::of(&result),
                expected,
                "seed {seed} step {step}: {command:?} gave {result:?}"
            );
            let kind = format!("{command:?}");
            let kind = kind.split_whitespace().next().unwrap_or_default();
            *seen.entry(format!("{kind} {expected:?}")).or_default() += 1;
            if matches!(expected, Outcome::Applied) {
                applied.push(command.clone());
            }
        }
        check(&h, &model, seed, step);
    }
    // The run must have reached every path it exists to test.
    let wanted = [
        "Grant Applied",
        "Transfer Applied",
        "Hold Applied",
        "Post Applied",
        "Void Applied",
        "Revoke Applied",
        "Revoke Refused(\"short\")",
        "Transfer Refused(\"insufficient\")",
        "Hold Refused(\"insufficient\")",
        "Post Refused(\"resolved\")",
        "Post Refused(\"timed out\")",
        "Post Refused(\"exceeds\")",
        "Transfer Refused(\"conflict\")",
        "sweep expired something",
    ];
    for outcome in wanted {
        assert!(
            seen.contains_key(outcome),
            "seed {seed}: never saw {outcome}: {seen:#?}"
        );
    }
    assert!(
        seen.keys().any(|key| key.ends_with("Replayed")),
        "seed {seed}: no retry was replayed: {seen:#?}"
    );
}

fn random_command(
    rng: &mut StdRng,
    model: &Model,
    wallets: &[AccountId],
    applied: &[Command],
    fresh_id: &mut impl FnMut(&str) -> TransferId,
) -> Command {
    let wallet = wallets[rng.random_range(0..wallets.len())];
    // Amounts in millionths, mostly whole credits, sometimes not.
    fn amount(rng: &mut StdRng, max: i64) -> Credits {
        let whole = rng.random_range(1..=max) * 1_000_000;
        Credits::from_micros(whole - rng.random_range(0..2) * rng.random_range(0..999_999))
    }
    // Mostly holds still pending, sometimes any (to hit resolved ones).
    let mut hold_ids: Vec<&String> = model
        .holds
        .iter()
        .filter(|(_, hold)| hold.pending)
        .map(|(id, _)| id)
        .collect();
    if hold_ids.is_empty() || rng.random_bool(0.25) {
        hold_ids = model.holds.keys().collect();
    }
    hold_ids.sort();
    let roll = rng.random_range(0..100);
    match roll {
        0..=24 => Command::Transfer {
            id: fresh_id("t"),
            debit: wallet,
            credit: PlatformAccount::Revenue.id(),
            amount: amount(rng, 40),
            memo: String::new(),
        },
        40..=43 => {
            // A grant of the wallet's (spent, expired or not), taken back in
            // part, in full, or beyond what it has free.
            let index = model.wallet_index(wallet);
            let grants = &model.wallets[index].grants;
            match grants.is_empty() {
                true => Command::Transfer {
                    id: fresh_id("t"),
                    debit: wallet,
                    credit: PlatformAccount::Revenue.id(),
                    amount: amount(rng, 5),
                    memo: String::new(),
                },
                false => {
                    let grant = &grants[rng.random_range(0..grants.len())];
                    let amount = match rng.random_range(0..4) {
                        0 if grant.remaining > 0 => grant.remaining,
                        1 | 2 if grant.remaining > 1 => rng.random_range(1..grant.remaining),
                        _ => grant.remaining + rng.random_range(1..2_000_000),
                    };
                    Command::Revoke {
                        id: fresh_id("r"),
                        account: wallet,
                        grant: id(&grant.id),
                        amount: Credits::from_micros(amount),
                        memo: String::new(),
                    }
                }
            }
        }
        25..=39 => {
            let source = GrantSource::ALL[rng.random_range(0..GrantSource::ALL.len())];
            let expires_at = rng
                .random_bool(0.6)
                .then(|| Timestamp::from_micros(model.now + rng.random_range(1..200) * SECOND_US));
            let priority = rng.random_bool(0.2).then(|| rng.random_range(0..50));
            Command::Grant {
                id: fresh_id("g"),
                account: wallet,
                source,
                amount: amount(rng, 100),
                expires_at,
                priority,
                memo: String::new(),
            }
        }
        44..=61 => hold(
            fresh_id("h").as_str(),
            wallet,
            amount(rng, 40),
            rng.random_range(1..100) * SECOND_US,
        ),
        62..=77 if !hold_ids.is_empty() => {
            let hold = hold_ids[rng.random_range(0..hold_ids.len())];
            let held = model.holds[hold].amount;
            // Full, partial, exactly all, or (one time in eight) too much.
            let amount = match rng.random_range(0..8) {
                0..=3 => None,
                4..=5 => Some(rng.random_range(1..=held)),
                6 => Some(held),
                _ => Some(held + rng.random_range(1..3_000_000)),
            }
            .map(Credits::from_micros);
            Command::Post {
                id: fresh_id("p"),
                hold: id(hold),
                amount,
                memo: String::new(),
            }
        }
        78..=85 if !hold_ids.is_empty() => Command::Void {
            id: fresh_id("v"),
            hold: id(hold_ids[rng.random_range(0..hold_ids.len())]),
            memo: String::new(),
        },
        86..=95 if !applied.is_empty() => applied[rng.random_range(0..applied.len())].clone(),
        _ if !applied.is_empty() => {
            // The same id with different content.
            let original = &applied[rng.random_range(0..applied.len())];
            Command::Transfer {
                id: original.id().clone(),
                debit: wallet,
                credit: PlatformAccount::Revenue.id(),
                amount: Credits::from_micros(123),
                memo: "different".into(),
            }
        }
        _ => Command::Transfer {
            id: fresh_id("t"),
            debit: wallet,
            credit: PlatformAccount::Revenue.id(),
            amount: amount(rng, 5),
            memo: String::new(),
        },
    }
}

/// Compares the database with the model, then audits it.
fn check(h: &Harness, model: &Model, seed: u64, step: usize) {
    let mut conn = h.database.get().unwrap();
    for wallet in &model.wallets {
        let balance = queries::balance(&mut conn, wallet.account).unwrap();
        assert_eq!(
            (balance.posted.micros(), balance.pending.micros()),
            (wallet.posted, wallet.pending),
            "seed {seed} step {step}: wallet {} balance",
            wallet.account
        );
        let grants: Vec<(String, i64, i64)> = queries::grants_of(&mut conn, wallet.account, false)
            .unwrap()
            .into_iter()
            .map(|grant| {
                (
                    grant.id.to_string(),
                    grant.remaining.micros(),
                    grant.reserved.micros(),
                )
            })
            .collect();
        let mut expected: Vec<&ModelGrant> = wallet.grants.iter().collect();
        expected.sort_by_key(|grant| grant.order_key());
        let expected: Vec<(String, i64, i64)> = expected
            .into_iter()
            .map(|grant| (grant.id.clone(), grant.remaining, grant.reserved))
            .collect();
        assert_eq!(
            grants, expected,
            "seed {seed} step {step}: wallet {} grants",
            wallet.account
        );
    }
    for (account, posted) in &model.platform {
        let balance = queries::balance(&mut conn, *account).unwrap();
        assert_eq!(
            balance.posted.micros(),
            *posted,
            "seed {seed} step {step}: account {account}"
        );
    }
    let report = audit::audit(&mut conn).unwrap();
    assert!(
        report.is_clean(),
        "seed {seed} step {step}: {:#?}",
        report.violations
    );
}

/// What became of a command, without the details the model does not track.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Replayed,
    Refused(&'static str),
}

impl Outcome {
    fn of(result: &CommandResult) -> Outcome {
        match result {
            Ok(receipt) if receipt.replayed => Outcome::Replayed,
            Ok(_) => Outcome::Applied,
            Err(error) => Outcome::Refused(error_name(error)),
        }
    }
}

fn error_name(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::InsufficientCredits { .. } => "insufficient",
        LedgerError::TransferIdConflict(_) => "conflict",
        LedgerError::HoldResolved { .. } => "resolved",
        LedgerError::HoldTimedOut(_) => "timed out",
        LedgerError::PostExceedsHold { .. } => "exceeds",
        LedgerError::GrantShort { .. } => "short",
        _ => "other",
    }
}

#[derive(Clone, Debug)]
struct ModelGrant {
    id: String,
    source: AccountId,
    priority: i32,
    expires_at: Option<i64>,
    created_at: i64,
    remaining: i64,
    reserved: i64,
    expired: bool,
}

impl ModelGrant {
    fn order_key(&self) -> (i32, i64, i64, String) {
        (
            self.priority,
            self.expires_at.unwrap_or(i64::MAX),
            self.created_at,
            self.id.clone(),
        )
    }
}

#[derive(Debug)]
struct ModelWallet {
    account: AccountId,
    limit: i64,
    posted: i64,
    pending: i64,
    grants: Vec<ModelGrant>,
}

impl ModelWallet {
    /// Indexes of the grants in spending order.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.grants.len()).collect();
        order.sort_by_key(|index| self.grants[*index].order_key());
        order
    }
}

#[derive(Debug)]
struct ModelHold {
    wallet: usize,
    amount: i64,
    expires_at: i64,
    pending: bool,
    /// (grant index, credits reserved), in spending order.
    reserved: Vec<(usize, i64)>,
}

/// The ledger's rules, written again as plainly as possible.
#[derive(Debug)]
struct Model {
    now: i64,
    wallets: Vec<ModelWallet>,
    platform: HashMap<AccountId, i64>,
    holds: HashMap<String, ModelHold>,
    applied: HashMap<String, Command>,
}

impl Model {
    fn new(accounts: &[AccountId], limits: &[i64]) -> Model {
        Model {
            now: 0,
            wallets: accounts
                .iter()
                .zip(limits)
                .map(|(account, limit)| ModelWallet {
                    account: *account,
                    limit: limit * 1_000_000,
                    posted: 0,
                    pending: 0,
                    grants: Vec::new(),
                })
                .collect(),
            platform: PlatformAccount::ALL
                .iter()
                .map(|account| (account.id(), 0))
                .collect(),
            holds: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    fn wallet_index(&self, account: AccountId) -> usize {
        self.wallets
            .iter()
            .position(|wallet| wallet.account == account)
            .unwrap()
    }

    fn apply(&mut self, command: &Command) -> Outcome {
        let mut normalized = command.clone();
        match &mut normalized {
            Command::Grant {
                source, priority, ..
            } => {
                priority.get_or_insert(source.priority_default());
            }
            Command::Post { hold, amount, .. } => {
                if let (None, Some(model_hold)) = (&amount, self.holds.get(hold.as_str())) {
                    *amount = Some(Credits::from_micros(model_hold.amount));
                }
            }
            _ => {}
        }
        if let Some(previous) = self.applied.get(command.id().as_str()) {
            return match *previous == normalized {
                true => Outcome::Replayed,
                false => Outcome::Refused("conflict"),
            };
        }
        let outcome = match &normalized {
            Command::Grant {
                id,
                account,
                source,
                amount,
                expires_at,
                priority,
                ..
            } => {
                let wallet = self.wallet_index(*account);
                self.expire_grants(wallet);
                let grant = ModelGrant {
                    id: id.to_string(),
                    source: source.account(),
                    priority: priority.unwrap(),
                    expires_at: expires_at.map(Timestamp::micros),
                    created_at: self.now,
                    remaining: amount.micros(),
                    reserved: 0,
                    expired: false,
                };
                self.wallets[wallet].grants.push(grant);
                self.wallets[wallet].posted += amount.micros();
                *self.platform.get_mut(&source.account()).unwrap() -= amount.micros();
                self.repay_debt(wallet);
                Outcome::Applied
            }
            Command::Transfer { debit, amount, .. } => {
                let wallet = self.wallet_index(*debit);
                self.expire_grants(wallet);
                if !self.can_spend(wallet, amount.micros()) {
                    return Outcome::Refused("insufficient");
                }
                self.draw(wallet, amount.micros(), false);
                self.wallets[wallet].posted -= amount.micros();
                *self
                    .platform
                    .get_mut(&PlatformAccount::Revenue.id())
                    .unwrap() += amount.micros();
                Outcome::Applied
            }
            Command::Hold {
                id,
                debit,
                amount,
                timeout_us,
                ..
            } => {
                let wallet = self.wallet_index(*debit);
                self.expire_grants(wallet);
                if !self.can_spend(wallet, amount.micros()) {
                    return Outcome::Refused("insufficient");
                }
                let reserved = self.draw(wallet, amount.micros(), true);
                self.wallets[wallet].pending += amount.micros();
                self.holds.insert(
                    id.to_string(),
                    ModelHold {
                        wallet,
                        amount: amount.micros(),
                        expires_at: self.now + timeout_us,
                        pending: true,
                        reserved,
                    },
                );
                Outcome::Applied
            }
            Command::Revoke {
                account,
                grant,
                amount,
                ..
            } => {
                let wallet = self.wallet_index(*account);
                self.expire_grants(wallet);
                let Some(model_grant) = self.wallets[wallet]
                    .grants
                    .iter_mut()
                    .find(|model_grant| model_grant.id == grant.as_str())
                else {
                    return Outcome::Refused("other");
                };
                if model_grant.remaining < amount.micros() {
                    return Outcome::Refused("short");
                }
                model_grant.remaining -= amount.micros();
                let source = model_grant.source;
                self.wallets[wallet].posted -= amount.micros();
                *self.platform.get_mut(&source).unwrap() += amount.micros();
                Outcome::Applied
            }
            Command::Post { hold, .. } | Command::Void { hold, .. } => {
                let captured = match &normalized {
                    Command::Post { amount, .. } => amount.map(Credits::micros),
                    _ => Some(0),
                };
                let Some(model_hold) = self.holds.get(hold.as_str()) else {
                    return Outcome::Refused("other");
                };
                if !model_hold.pending {
                    return Outcome::Refused("resolved");
                }
                if model_hold.expires_at <= self.now {
                    self.resolve(hold.as_str(), 0);
                    return Outcome::Refused("timed out");
                }
                let captured = captured.unwrap_or(model_hold.amount);
                if captured > model_hold.amount {
                    return Outcome::Refused("exceeds");
                }
                self.resolve(hold.as_str(), captured);
                Outcome::Applied
            }
        };
        self.applied.insert(command.id().to_string(), normalized);
        outcome
    }

    fn can_spend(&self, wallet: usize, amount: i64) -> bool {
        let wallet = &self.wallets[wallet];
        wallet.posted - wallet.pending + wallet.limit >= amount
    }

    /// Takes free grant credits in spending order; returns what it took.
    fn draw(&mut self, wallet: usize, amount: i64, reserve: bool) -> Vec<(usize, i64)> {
        let mut left = amount;
        let mut taken = Vec::new();
        for index in self.wallets[wallet].order() {
            let grant = &mut self.wallets[wallet].grants[index];
            let take = grant.remaining.min(left);
            if take > 0 {
                grant.remaining -= take;
                if reserve {
                    grant.reserved += take;
                }
                left -= take;
                taken.push((index, take));
            }
        }
        taken
    }

    fn repay_debt(&mut self, wallet: usize) {
        let backed: i64 = self.wallets[wallet]
            .grants
            .iter()
            .map(|grant| grant.remaining + grant.reserved)
            .sum();
        let mut debt = backed - self.wallets[wallet].posted;
        assert!(debt >= 0);
        for index in self.wallets[wallet].order() {
            let grant = &mut self.wallets[wallet].grants[index];
            let take = grant.remaining.min(debt);
            grant.remaining -= take;
            debt -= take;
        }
    }

    /// Returns how many expiry transfers it wrote.
    fn expire_grants(&mut self, wallet: usize) -> usize {
        let now = self.now;
        let mut expired_total = 0;
        let mut n_transfers = 0;
        for grant in &mut self.wallets[wallet].grants {
            if !grant.expired && grant.expires_at.is_some_and(|at| at <= now) {
                grant.expired = true;
                if grant.remaining > 0 {
                    expired_total += grant.remaining;
                    grant.remaining = 0;
                    n_transfers += 1;
                }
            }
        }
        self.wallets[wallet].posted -= expired_total;
        *self
            .platform
            .get_mut(&PlatformAccount::Expired.id())
            .unwrap() += expired_total;
        n_transfers
    }

    /// Posts `captured` of a hold and releases the rest.
    fn resolve(&mut self, hold: &str, captured: i64) {
        let model_hold = self.holds.get_mut(hold).unwrap();
        model_hold.pending = false;
        let wallet = model_hold.wallet;
        let amount = model_hold.amount;
        let reserved = std::mem::take(&mut model_hold.reserved);
        self.wallets[wallet].pending -= amount;
        self.wallets[wallet].posted -= captured;
        *self
            .platform
            .get_mut(&PlatformAccount::Revenue.id())
            .unwrap() += captured;
        let mut to_capture = captured;
        for (index, held) in reserved {
            let spent = held.min(to_capture);
            to_capture -= spent;
            let grant = &mut self.wallets[wallet].grants[index];
            grant.reserved -= held;
            match grant.expired {
                true => {
                    self.wallets[wallet].posted -= held - spent;
                    *self
                        .platform
                        .get_mut(&PlatformAccount::Expired.id())
                        .unwrap() += held - spent;
                }
                false => grant.remaining += held - spent,
            }
        }
        self.repay_debt(wallet);
    }

    /// Expires every due grant, then times out every due hold; returns the
    /// number of transfers that wrote.
    fn sweep(&mut self) -> usize {
        let mut n_transfers = 0;
        for wallet in 0..self.wallets.len() {
            n_transfers += self.expire_grants(wallet);
        }
        let mut due: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, hold)| hold.pending && hold.expires_at <= self.now)
            .map(|(id, _)| id.clone())
            .collect();
        due.sort();
        for hold in due {
            self.resolve(&hold, 0);
            n_transfers += 1;
        }
        n_transfers
    }
}
