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

#[cfg(test)]
mod tests {
    use tollgate_plugin_sdk::testing::Harness;

    use super::*;

    fn request(base_price_micros: u64) -> PriceRequest {
        PriceRequest {
            plan: None,
            plugin: "http-leads".into(),
            function: "search".into(),
            units: 1,
            period_units: 0,
            base_price_micros,
        }
    }

    #[test]
    fn raises_the_price_by_the_setting_rounding_up() {
        let mut harness = Harness::new().setting("markup_percent", "15");
        let price = harness
            .run(|| Markup::adjust_price(request(1_000_001)))
            .unwrap();
        // 1,000,001 x 1.15 = 1,150,001.15, rounded up.
        assert_eq!(price.price_micros, 1_150_002);
        assert_eq!(price.note.as_deref(), Some("15% markup"));
    }

    #[test]
    fn refuses_a_missing_or_silly_setting() {
        let error = Harness::new()
            .run(|| Markup::adjust_price(request(1)))
            .unwrap_err();
        assert_eq!(
            error.message,
            "setting \"markup_percent\" is not set for this plugin"
        );
        let mut harness = Harness::new().setting("markup_percent", "5000");
        let error = harness
            .run(|| Markup::adjust_price(request(1)))
            .unwrap_err();
        assert_eq!(error.message, "markup_percent 5000 is above 1000");
    }
}
