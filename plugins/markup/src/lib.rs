//! `markup`: raises the configured price by the tenant's `markup_percent`
//! setting (a reseller's margin), rounding up to the next millionth.

use tollgate_plugin_sdk::{PluginError, Price, PriceRequest, PricingRule, host};

struct Markup;

/// A markup above this is a typo, not a margin.
const MARKUP_PERCENT_MAX: u64 = 1_000;

impl PricingRule for Markup {
    fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {
        let text = host::required_setting("markup_percent")?;
        let percent: u64 = text.trim().parse().map_err(|_| {
            PluginError::new(
                tollgate_plugin_sdk::ErrorKind::Misconfigured,
                format!("markup_percent {text:?} is not a whole number of percent"),
            )
        })?;
        if percent > MARKUP_PERCENT_MAX {
            return Err(PluginError::new(
                tollgate_plugin_sdk::ErrorKind::Misconfigured,
                format!("markup_percent {percent} is above {MARKUP_PERCENT_MAX}"),
            ));
        }
        let base = u128::from(request.base_price_micros);
        let raised = (base * u128::from(100 + percent)).div_ceil(100);
        let price_micros = u64::try_from(raised)
            .map_err(|_| PluginError::invalid_input("marked-up price does not fit"))?;
        Ok(Price {
            price_micros,
            note: Some(format!("{percent}% markup")),
        })
    }
}

tollgate_plugin_sdk::register_plugin!(Markup);
