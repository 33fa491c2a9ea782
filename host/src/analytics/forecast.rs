//! The revenue forecast: Holt's linear trend method (double exponential
//! smoothing) over the months' net revenue.
//!
//! The level and trend start from the first two months; the smoothing
//! parameters α and β are chosen from 0.1, 0.2 ... 0.9 to minimise the
//! squared one-step-ahead errors over the history. The forecast `h`
//! months ahead is `level + h × trend`, and its band is the 95% interval
//! of Holt's additive model, `± 1.96 σ √(1 + Σ_{j<h} α²(1 + jβ)²)`, with σ
//! the standard deviation of the one-step errors (Hyndman & Athanasopoulos,
//! "Forecasting: Principles and Practice", 3rd ed., §8.7). Amounts are
//! estimates, computed in floating point and rounded to the minor unit;
//! the band's low end is never below zero.

/// One month ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Months after the last month of history, from 1.
    pub ahead: u32,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub alpha: f64,
    pub beta: f64,
    /// Standard deviation of the one-step-ahead errors.
    pub sigma: f64,
    pub points: Vec<Point>,
}

/// Months of history the method needs at least.
pub const HISTORY_MIN: usize = 3;

/// One-step errors' sum of squares, and the final level and trend.
fn run(history: &[f64], alpha: f64, beta: f64) -> (f64, f64, f64) {
    let (mut level, mut trend) = (history[0], history[1] - history[0]);
    let mut sse = 0.0;
    for &y in &history[1..] {
        let predicted = level + trend;
        sse += (y - predicted).powi(2);
        let previous = level;
        level = alpha * y + (1.0 - alpha) * (level + trend);
        trend = beta * (level - previous) + (1.0 - beta) * trend;
    }
    (sse, level, trend)
}

/// Forecasts `months` months after `history` (oldest first); none with
/// fewer than [`HISTORY_MIN`] months.
pub fn holt(history: &[f64], months: u32) -> Option<Forecast> {
    if history.len() < HISTORY_MIN {
        return None;
    }
    let grid = (1..=9).map(|step| f64::from(step) / 10.0);
    let mut best: Option<(f64, f64, f64, f64, f64)> = None;
    for alpha in grid.clone() {
        for beta in grid.clone() {
            let (sse, level, trend) = run(history, alpha, beta);
            if best.is_none_or(|(best_sse, ..)| sse < best_sse - 1e-9) {
                best = Some((sse, alpha, beta, level, trend));
            }
        }
    }
    let (sse, alpha, beta, level, trend) = best?;
    // The first month seeds the level and the second the trend.
    let freedom = (history.len() - 2).max(1) as f64;
    let sigma = (sse / freedom).sqrt();
    let points = (1..=months)
        .map(|ahead| {
            let value = level + f64::from(ahead) * trend;
            let spread: f64 = (1..ahead)
                .map(|j| alpha.powi(2) * (1.0 + f64::from(j) * beta).powi(2))
                .sum();
            let half = 1.96 * sigma * (1.0 + spread).sqrt();
            Point {
                ahead,
                value: value.max(0.0),
                low: (value - half).max(0.0),
                high: (value + half).max(0.0),
            }
        })
        .collect();
    Some(Forecast {
        alpha,
        beta,
        sigma,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_is_continued_exactly_with_no_band() {
        let history = [100.0, 110.0, 120.0, 130.0, 140.0];
        let forecast = holt(&history, 3).unwrap();
        let values: Vec<f64> = forecast.points.iter().map(|p| p.value).collect();
        for (value, expected) in values.iter().zip([150.0, 160.0, 170.0]) {
            assert!((value - expected).abs() < 1e-9, "{values:?}");
        }
        assert!(forecast.sigma < 1e-9);
        assert!(
            forecast
                .points
                .iter()
                .all(|p| (p.high - p.low).abs() < 1e-9)
        );
    }

    #[test]
    fn noise_widens_the_band_with_the_horizon() {
        let history = [100.0, 130.0, 105.0, 150.0, 120.0, 170.0, 140.0];
        let forecast = holt(&history, 4).unwrap();
        let widths: Vec<f64> = forecast.points.iter().map(|p| p.high - p.low).collect();
        assert!(widths[0] > 0.0);
        assert!(widths.windows(2).all(|w| w[1] >= w[0]), "{widths:?}");
        for point in &forecast.points {
            assert!(point.low <= point.value && point.value <= point.high);
        }
    }

    #[test]
    fn too_short_a_history_has_no_forecast() {
        assert!(holt(&[1.0, 2.0], 3).is_none());
    }
}
