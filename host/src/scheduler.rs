//! Repeating jobs that keep the platform's state moving without a request:
//! for now, expiring due grants and timing out forgotten holds.

use std::time::Duration;

use crate::ledger::Ledger;

/// Grants and holds handled per sweep at most, so one sweep is one bounded
/// batch; a backlog is worked off over successive sweeps.
const EXPIRIES_PER_SWEEP_MAX: usize = 1_000;

/// Sweeps expired grants and holds every `period` until `shutdown` resolves.
pub async fn run(ledger: Ledger, period: Duration, shutdown: impl Future<Output = ()>) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        match ledger.expire_due(EXPIRIES_PER_SWEEP_MAX).await {
            Ok(0) => {}
            Ok(n_transfers) => tracing::info!(n_transfers, "expired grants and holds"),
            Err(error) => tracing::warn!(%error, "expiry sweep failed; will retry"),
        }
    }
}
