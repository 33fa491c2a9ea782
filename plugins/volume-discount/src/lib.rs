//! `volume-discount`: takes a percentage off the configured price once the
//! tenant's usage of the function this period reaches a tier. The tiers come
//! from the tenant's `tiers` setting, e.g. `1000:5,10000:10`. The call's own
//! units count towards the tier, so the call that crosses a threshold gets
//! the discount. Prices round half up to the millionth of a credit.

use tollgate_plugin_sdk::{ErrorKind, PluginError, Price, PriceRequest, PricingRule, host};

struct VolumeDiscount;

/// More tiers than this is a price list, not a discount.
const TIERS_MAX: usize = 32;

/// (units threshold, percent off), ascending by threshold.
fn parse_tiers(text: &str) -> Result<Vec<(u64, u64)>, PluginError> {
    let misconfigured = |message: String| PluginError::new(ErrorKind::Misconfigured, message);
    let mut tiers = Vec::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (units, percent) = part
            .split_once(':')
            .ok_or_else(|| misconfigured(format!("tier {part:?} is not units:percent")))?;
        let units: u64 = units.trim().parse().map_err(|_| {
            misconfigured(format!(
                "tier {part:?}: {units:?} is not a whole number of units"
            ))
        })?;
        let percent: u64 = percent.trim().parse().map_err(|_| {
            misconfigured(format!("tier {part:?}: {percent:?} is not a whole percent"))
        })?;
        if percent > 100 {
            return Err(misconfigured(format!("tier {part:?}: more than 100% off")));
        }
        tiers.push((units, percent));
    }
    if tiers.is_empty() || tiers.len() > TIERS_MAX {
        return Err(misconfigured(format!(
            "tiers must list 1 to {TIERS_MAX} units:percent pairs"
        )));
    }
    tiers.sort_unstable();
    Ok(tiers)
}

impl PricingRule for VolumeDiscount {
    fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {
        let tiers = parse_tiers(&host::required_setting("tiers")?)?;
        let used = request.period_units.saturating_add(request.units);
        let reached = tiers.iter().rev().find(|(threshold, _)| used >= *threshold);
        let Some(&(threshold, percent)) = reached else {
            return Ok(Price {
                price_micros: request.base_price_micros,
                note: None,
            });
        };
        let base = u128::from(request.base_price_micros);
        let discounted = (base * u128::from(100 - percent) + 50) / 100;
        Ok(Price {
            price_micros: discounted as u64,
            note: Some(format!(
                "{percent}% volume discount from {threshold} units this period"
            )),
        })
    }
}

tollgate_plugin_sdk::register_plugin!(VolumeDiscount);
