//! Repeating jobs that keep the platform's state moving without a request:
//! expiring due grants and timing out forgotten holds, ending calls a
//! stopped host left running, renewing subscriptions whose period ended and
//! collecting their invoices.

use std::time::Duration;

use crate::ledger::Ledger;

/// Grants and holds handled per sweep at most, so one sweep is one bounded
/// batch; a backlog is worked off over successive sweeps.
const EXPIRIES_PER_SWEEP_MAX: usize = 1_000;

/// Leads whose decayed score is rescored per sweep at most.
const RESCORES_PER_SWEEP_MAX: i64 = 1_000;

/// Sweeps expired grants and holds every `period` until `shutdown` resolves.
pub async fn run(
    ledger: Ledger,
    meter: Option<std::sync::Arc<crate::metering::Meter>>,
    payments: Option<std::sync::Arc<crate::billing::payments::Payments>>,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
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
        // Calls whose host died mid-call (this one before a restart, or
        // another sharing the database) are ended once their holds are gone.
        if let Some(meter) = &meter {
            let meter = meter.clone();
            match tokio::task::spawn_blocking(move || meter.recover()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n_calls)) => {
                    tracing::info!(n_calls, "ended calls a stopped host left running")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "ending interrupted calls failed; will retry")
                }
                Err(error) => tracing::warn!(%error, "ending interrupted calls failed; will retry"),
            }
        }
        // One period per subscription per sweep: a host that was down
        // catches up over a few sweeps.
        if let Some(payments) = &payments {
            let subscriptions = payments.subscriptions.clone();
            match tokio::task::spawn_blocking(move || subscriptions.renew_due()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(renewed)) => {
                    tracing::info!(renewed, "subscriptions moved to their next period")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "renewing subscriptions failed; will retry")
                }
                Err(error) => tracing::warn!(%error, "renewing subscriptions failed; will retry"),
            }
            // What a stopped host paid but did not grant.
            let settling = payments.clone();
            match tokio::task::spawn_blocking(move || settling.settle_paid()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(settled)) => tracing::info!(settled, "granted what paid invoices bought"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "settling paid invoices failed; will retry")
                }
                Err(error) => tracing::warn!(%error, "settling paid invoices failed; will retry"),
            }
            // Renewals' invoices charged to the saved payment methods, and
            // the dunning schedule's retries.
            let payments = payments.clone();
            match tokio::task::spawn_blocking(move || payments.collect_due()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(attempts)) => tracing::info!(attempts, "collected renewals"),
                Ok(Err(error)) => tracing::warn!(%error, "collecting renewals failed; will retry"),
                Err(error) => tracing::warn!(%error, "collecting renewals failed; will retry"),
            }
        }
    }
}

/// Sends the outbox's due system emails every `period` until `shutdown`
/// resolves. Any number of hosts may run this at once: each email is
/// claimed before it is sent (see [`crate::mail`]).
pub async fn run_mail(
    mailer: crate::mail::Mailer,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
    if !mailer.settings.configured() {
        tracing::info!("mail.smtp_host is not set: system emails wait in the outbox");
    }
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        let sending = mailer.clone();
        match tokio::task::spawn_blocking(move || sending.send_due()).await {
            Ok(Ok(sent)) if sent == crate::mail::Sent::default() => {}
            Ok(Ok(sent)) => tracing::info!(
                sent = sent.sent,
                retrying = sent.retrying,
                failed = sent.failed,
                "sent system emails"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "sending system emails failed; will retry"),
            Err(error) => tracing::warn!(%error, "sending system emails failed; will retry"),
        }
    }
}

/// Runs sequences' due steps every `period` until `shutdown` resolves. Any
/// number of hosts may run this at once: each step runs once (see
/// [`crate::engagement::runner`]).
pub async fn run_sequences(
    runner: std::sync::Arc<crate::engagement::runner::Runner>,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        // Stage rules' webhooks a stopped host left uncalled.
        let firing = runner.clone();
        let fired = tokio::task::spawn_blocking(move || {
            crate::engagement::pipeline::fire_pending(
                &firing.database,
                &firing.meter,
                firing.clock.as_ref(),
                None,
            )
        })
        .await;
        match fired {
            Ok(Ok(0)) => {}
            Ok(Ok(called)) => tracing::info!(called, "called stage rules' webhooks"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "calling stage rules' webhooks failed; will retry")
            }
            Err(error) => {
                tracing::warn!(%error, "calling stage rules' webhooks failed; will retry")
            }
        }
        // Scores whose engagement points have decayed since.
        let scoring = runner.clone();
        let rescored = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut conn = scoring.database.get()?;
            let now = scoring.clock.now();
            Ok(crate::db::write_transaction(&mut conn, |conn| {
                crate::engagement::scoring::rescore_decayed(conn, now, RESCORES_PER_SWEEP_MAX)
            })?)
        })
        .await;
        match rescored {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "rescoring decayed leads failed; will retry"),
            Err(error) => tracing::warn!(%error, "rescoring decayed leads failed; will retry"),
        }
        let ticking = runner.clone();
        match tokio::task::spawn_blocking(move || ticking.tick()).await {
            Ok(Ok(tick)) if tick.steps > 0 => {
                tracing::info!(
                    enrollments = tick.enrollments,
                    steps = tick.steps,
                    "ran sequence steps"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "running sequences failed; will retry"),
            Err(error) => tracing::warn!(%error, "running sequences failed; will retry"),
        }
    }
}
