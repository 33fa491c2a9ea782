//! The arithmetic of subscriptions: billing periods, proration and
//! carryover. Pure functions of their inputs, so a year of billing can be
//! checked without a clock.
//!
//! - A period starts at the subscription's anchor plus a whole number of
//!   months (or years) and ends where the next starts. A day of the month
//!   the month does not have is its last day: anchored on January 31, the
//!   periods start on February 28 (29), March 31, April 30, and so on,
//!   each counted from the anchor, so the day comes back.
//! - Proration is by the microsecond: a price times the part of the period
//!   left, rounded half away from zero to the minor unit. A change of plan
//!   credits the unused part of the old price and charges the same part of
//!   the new one (Stripe's example: from $10 to $20 half-way through, $5
//!   credited, $10 charged, $5 due).
//! - Carryover: of the allowance left unused at a period's end, at most the
//!   plan's `credits_max` rolls into the next period; the rest expires.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::{Carryover, Interval};
use crate::units::{Credits, Timestamp};

/// The `index`th period of a subscription anchored at `anchor` (index 0
/// is the first): its start and its end.
pub fn period(anchor: Timestamp, interval: Interval, index: u32) -> (Timestamp, Timestamp) {
    (
        shift(anchor, interval, index),
        shift(anchor, interval, index + 1),
    )
}

/// Which period `at` falls in (0 before the anchor).
pub fn period_index(anchor: Timestamp, interval: Interval, at: Timestamp) -> u32 {
    let mut index = 0;
    while shift(anchor, interval, index + 1) <= at {
        index += 1;
    }
    index
}

fn shift(anchor: Timestamp, interval: Interval, index: u32) -> Timestamp {
    let months = match interval {
        Interval::Month => index,
        Interval::Year => index * 12,
    };
    let start = anchor.to_chrono();
    let shifted = start
        .checked_add_months(chrono::Months::new(months))
        .expect("billing periods stay within chrono's range");
    Timestamp::from_chrono(shifted)
}

/// What changing plan at `now` within the period `[start, end)` credits,
/// charges and leaves due, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proration {
    /// The unused part of the old price, given back.
    pub credit_minor: i64,
    /// The same part of the new price.
    pub charge_minor: i64,
    /// `charge − credit`: what the change costs now (negative when it is
    /// cheaper, which a downgrade at period end never is).
    pub due_minor: i64,
}

/// The part of `price_minor` that the rest of the period from `now` is
/// worth, rounded half away from zero to the minor unit.
pub fn prorate(price_minor: i64, start: Timestamp, end: Timestamp, now: Timestamp) -> i64 {
    let length = end.micros() - start.micros();
    if length <= 0 {
        return 0;
    }
    let left = (end.micros() - now.micros()).clamp(0, length);
    let part = Decimal::from(price_minor) * Decimal::from(left) / Decimal::from(length);
    part.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .try_into()
        .expect("a part of a price fits where the price did")
}

pub fn proration(
    old_price_minor: i64,
    new_price_minor: i64,
    start: Timestamp,
    end: Timestamp,
    now: Timestamp,
) -> Proration {
    let credit_minor = prorate(old_price_minor, start, end, now);
    let charge_minor = prorate(new_price_minor, start, end, now);
    Proration {
        credit_minor,
        charge_minor,
        due_minor: charge_minor - credit_minor,
    }
}

/// How much of `unused` allowance rolls into the next period.
pub fn carryover(unused: Credits, policy: &Carryover) -> Credits {
    unused.min(policy.credits_max).max(Credits::ZERO)
}

/// When credits carried at `carried_at` (a period's end) expire: after
/// the policy's number of periods, at least one.
pub fn carryover_expiry(
    anchor: Timestamp,
    interval: Interval,
    carried_at: Timestamp,
    policy: &Carryover,
) -> Timestamp {
    let index = period_index(anchor, interval, carried_at);
    let periods = policy.expires_after_periods.max(1);
    shift(anchor, interval, index + periods)
}

#[cfg(test)]
mod tests;
