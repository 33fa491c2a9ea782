//! ROI: what a tenant's calls would have cost done by hand, against what
//! the credits they used cost.
//!
//! For each plugin function with a baseline (`[[analytics.baselines]]`),
//! the manual cost is the units it returned (or the calls that succeeded)
//! × the baseline's minutes × the hourly cost ÷ 60. The credits' cost is
//! the credits charged × the list price of a credit. Saved is the first
//! less the second. Functions without a baseline count towards the
//! credits' cost only, so the saving is never flattered.

use rust_decimal::{Decimal, RoundingStrategy};

use super::usage::UsageLine;
use crate::config::{AnalyticsSettings, BaselinePer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoiLine {
    pub plugin: String,
    pub function: String,
    /// The baseline's label; empty when the function has none.
    pub label: String,
    /// Units, or successful calls, as the baseline counts.
    pub quantity: i64,
    pub minutes: Decimal,
    pub manual_cost: Decimal,
    pub credits: Decimal,
    pub credits_cost: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roi {
    pub lines: Vec<RoiLine>,
    pub hours_saved: Decimal,
    pub manual_cost: Decimal,
    pub credits_cost: Decimal,
    pub saved: Decimal,
}

fn money(amount: Decimal, digits: u32) -> Decimal {
    amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointAwayFromZero)
}

/// ROI over usage summed by plugin and function; amounts are rounded to
/// the currency's `digits` once, per line, and the totals are the lines'
/// sums.
pub fn compute(
    usage: &[UsageLine],
    settings: &AnalyticsSettings,
    credit_price: Decimal,
    digits: u32,
) -> Roi {
    let mut lines = Vec::new();
    for line in usage {
        let baseline = settings.baselines.iter().find(|baseline| {
            baseline.function == line.function
                && (baseline.plugin == "*" || baseline.plugin == line.plugin)
        });
        let credits = line.sums.credits().to_decimal();
        let credits_cost = money(credits * credit_price, digits);
        let (label, quantity, minutes) = match baseline {
            Some(baseline) => {
                let quantity = match baseline.per {
                    BaselinePer::Unit => line.sums.units,
                    BaselinePer::Call => line.sums.calls - line.sums.failed,
                };
                (
                    baseline.label.clone(),
                    quantity,
                    baseline.minutes * Decimal::from(quantity),
                )
            }
            None => (String::new(), 0, Decimal::ZERO),
        };
        let manual_cost = money(minutes * settings.hourly_cost / Decimal::from(60), digits);
        lines.push(RoiLine {
            plugin: line.plugin.clone(),
            function: line.function.clone(),
            label,
            quantity,
            minutes,
            manual_cost,
            credits,
            credits_cost,
        });
    }
    let manual_cost: Decimal = lines.iter().map(|line| line.manual_cost).sum();
    let credits_cost: Decimal = lines.iter().map(|line| line.credits_cost).sum();
    let minutes: Decimal = lines.iter().map(|line| line.minutes).sum();
    let mut hours_saved = (minutes / Decimal::from(60)).round_dp(2);
    hours_saved.rescale(2);
    Roi {
        hours_saved,
        manual_cost,
        credits_cost,
        saved: manual_cost - credits_cost,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::usage::Sums;
    use crate::config::Settings;

    fn line(
        plugin: &str,
        function: &str,
        calls: i64,
        failed: i64,
        units: i64,
        credits: i64,
    ) -> UsageLine {
        UsageLine {
            day: String::new(),
            plugin: plugin.into(),
            function: function.into(),
            sums: Sums {
                calls,
                failed,
                units,
                credits: credits * 1_000_000,
                ..Sums::default()
            },
        }
    }

    #[test]
    fn leads_and_messages_are_priced_at_the_baselines_and_the_rest_costs_credits_only() {
        // Defaults: 5 minutes a lead searched, 4 a message sent, $40 an hour.
        let settings = Settings::default().analytics;
        let usage = [
            line("csv-leads", "search", 10, 0, 120, 120),
            line("email", "send", 50, 2, 48, 50),
            line("markup", "adjust-price", 7, 0, 0, 0),
        ];
        let roi = compute(&usage, &settings, Decimal::new(1, 2), 2);
        // 120 leads × 5 min = 600 min = 10 h = $400; 48 sent × 4 = 192 min = $128.
        assert_eq!(roi.lines[0].manual_cost, Decimal::new(40000, 2));
        assert_eq!(roi.lines[1].quantity, 48);
        assert_eq!(roi.lines[1].manual_cost, Decimal::new(12800, 2));
        assert_eq!(roi.lines[2].manual_cost, Decimal::ZERO);
        // 170 credits at $0.01.
        assert_eq!(roi.credits_cost, Decimal::new(170, 2));
        assert_eq!(roi.manual_cost, Decimal::new(52800, 2));
        assert_eq!(roi.saved, Decimal::new(52630, 2));
        assert_eq!(roi.hours_saved, Decimal::new(1320, 2));
    }
}
