//! A pricing rule that returns the base price unchanged: the cheapest call
//! there is, for measuring what a call itself costs.

use tollgate_plugin_sdk::{PluginError, Price, PriceRequest, PricingRule, register_plugin};

struct Noop;

impl PricingRule for Noop {
    fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {
        Ok(Price {
            price_micros: request.base_price_micros,
            note: None,
        })
    }
}

register_plugin!(Noop);
