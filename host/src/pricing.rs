//! What a plugin call costs, in credits: the prices in `pricing.toml`, one
//! per plugin function (and, for custom enterprise pricing, per tenant),
//! each effective from a time, and the charge models Lago defines for
//! units: standard, package, graduated and volume.
//!
//! Charge models price the units of a whole billing period; a call is
//! charged what it adds to the period's amount. A call's charge is its
//! price per call, plus that increase for the units it reports (after the
//! plan's free allowance), plus its fuel at the price per million. This
//! module is pure: it knows no database, plugin or ledger.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::ids::TenantId;
use crate::units::{Credits, Timestamp};

/// Most tiers one price may have.
pub const TIERS_MAX: usize = 32;

/// How the units of a billing period are priced, as Lago defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeModel {
    /// Every unit at one price.
    Standard { per_unit: Decimal },
    /// Units in whole packages of `size` at `price` each, after the first
    /// `free_units`: 201 units in packages of 100 at 5, the first 100
    /// free, is two packages, 10.
    Package {
        size: u64,
        price: Decimal,
        free_units: u64,
    },
    /// Each tier's units at that tier's price, plus the flat fee of every
    /// tier reached.
    Graduated { tiers: Vec<Tier> },
    /// Every unit at the price of the tier the period's total falls in,
    /// plus that tier's flat fee.
    Volume { tiers: Vec<Tier> },
}

/// One tier: the units up to and including `up_to` (the last tier has no
/// end) since the previous tier's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub up_to: Option<u64>,
    pub per_unit: Decimal,
    pub flat: Decimal,
}

impl ChargeModel {
    /// What `units` units cost over a whole billing period, in credits.
    pub fn period_amount(&self, units: u64) -> Decimal {
        match self {
            ChargeModel::Standard { per_unit } => Decimal::from(units) * per_unit,
            ChargeModel::Package {
                size,
                price,
                free_units,
            } => {
                let billed = units.saturating_sub(*free_units);
                Decimal::from(billed.div_ceil(*size)) * price
            }
            ChargeModel::Graduated { tiers } => {
                let mut amount = Decimal::ZERO;
                let mut start = 0;
                for tier in tiers {
                    if units <= start {
                        break;
                    }
                    let end = tier.up_to.map_or(units, |up_to| up_to.min(units));
                    amount += Decimal::from(end - start) * tier.per_unit + tier.flat;
                    match tier.up_to {
                        Some(up_to) => start = up_to,
                        None => break,
                    }
                }
                amount
            }
            ChargeModel::Volume { tiers } => {
                if units == 0 {
                    return Decimal::ZERO;
                }
                let tier = tiers
                    .iter()
                    .find(|tier| tier.up_to.is_none_or(|up_to| units <= up_to))
                    .expect("the last tier is open-ended (checked at load)");
                Decimal::from(units) * tier.per_unit + tier.flat
            }
        }
    }

    /// The points where the period amount may jump: tier and package
    /// boundaries, as unit totals.
    fn boundaries(&self) -> Vec<u64> {
        match self {
            ChargeModel::Standard { .. } | ChargeModel::Package { .. } => Vec::new(),
            ChargeModel::Graduated { tiers } | ChargeModel::Volume { tiers } => {
                tiers.iter().filter_map(|tier| tier.up_to).collect()
            }
        }
    }

    /// Checks what `pricing.toml` cannot express wrongly by its types:
    /// tiers in order with an open-ended last one, no negative price.
    pub fn validate(&self) -> Result<(), String> {
        let non_negative = |value: &Decimal, what: &str| match value.is_sign_negative() {
            true => Err(format!("{what} must not be negative, got {value}")),
            false => Ok(()),
        };
        match self {
            ChargeModel::Standard { per_unit } => non_negative(per_unit, "per_unit"),
            ChargeModel::Package { size, price, .. } => {
                if *size == 0 {
                    return Err("package_size must be at least 1".into());
                }
                non_negative(price, "package_price")
            }
            ChargeModel::Graduated { tiers } | ChargeModel::Volume { tiers } => {
                if tiers.is_empty() || tiers.len() > TIERS_MAX {
                    return Err(format!("tiers: give 1 to {TIERS_MAX}"));
                }
                let mut previous = 0;
                for (index, tier) in tiers.iter().enumerate() {
                    non_negative(&tier.per_unit, &format!("tiers[{index}].per_unit"))?;
                    non_negative(&tier.flat, &format!("tiers[{index}].flat"))?;
                    let last = index == tiers.len() - 1;
                    match (tier.up_to, last) {
                        (None, true) => {}
                        (None, false) => {
                            return Err(format!(
                                "tiers[{index}]: only the last tier may leave out up_to"
                            ));
                        }
                        (Some(_), true) => {
                            return Err(format!(
                                "tiers[{index}]: the last tier must leave out up_to, so every unit has a price"
                            ));
                        }
                        (Some(up_to), false) if up_to <= previous => {
                            return Err(format!(
                                "tiers[{index}].up_to: {up_to} must be above the previous tier's {previous}"
                            ));
                        }
                        (Some(up_to), false) => previous = up_to,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The price of one plugin function, from a time on, for every tenant or
/// for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub plugin: String,
    pub function: String,
    /// Custom pricing for this tenant alone; `None` for everyone else.
    pub tenant: Option<TenantId>,
    /// From when it applies; the price before it still prices calls made
    /// before it.
    pub effective_from: Timestamp,
    /// Credits per call, whatever it returns.
    pub per_call: Decimal,
    /// How the units calls report (leads returned, messages sent) are
    /// priced over the billing period.
    pub units: ChargeModel,
    /// Units free each billing period, by plan id.
    pub free_units: BTreeMap<String, u64>,
    /// Credits per million units of fuel the call burned.
    pub per_million_fuel: Decimal,
    /// Whether a call the plugin failed is charged (never one that failed
    /// on the platform's side).
    pub charge_failed: bool,
}

/// What a call consumed, and where its billing period stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage<'a> {
    /// The tenant's plan, for its free allowance.
    pub plan: Option<&'a str>,
    /// Units of this plugin function the tenant used this period before
    /// this call.
    pub period_units: u64,
    /// Units the call reported.
    pub units: u64,
    /// Fuel the call burned.
    pub fuel: u64,
}

impl Price {
    /// What a call that consumed `usage` is charged, rounded half away
    /// from zero to the millionth of a credit.
    pub fn charge(&self, usage: Usage<'_>) -> Credits {
        to_credits(
            self.per_call
                + self.units_amount(usage.plan, usage.period_units, usage.units)
                + self.fuel_amount(usage.fuel),
        )
    }

    /// The most a call may be charged if it reports at most `max_units`
    /// and burns at most `max_fuel`: what the ledger holds before the call.
    pub fn max_charge(&self, usage: Usage<'_>) -> Credits {
        let Usage {
            plan,
            period_units,
            units: max_units,
            fuel: max_fuel,
        } = usage;
        // The increase is piecewise linear in the units, with jumps at tier
        // boundaries (a volume price can even fall there): its maximum is
        // at the end of the range or just before or at a boundary in it.
        let free = self.free_units_for(plan);
        let mut candidates = vec![0, max_units];
        for boundary in self.units.boundaries() {
            let total = boundary.saturating_add(free);
            for candidate in [total, total.saturating_add(1)] {
                if let Some(units) = candidate.checked_sub(period_units)
                    && units <= max_units
                {
                    candidates.push(units);
                }
            }
        }
        let units_max = candidates
            .into_iter()
            .map(|units| self.units_amount(plan, period_units, units))
            .max()
            .unwrap_or(Decimal::ZERO);
        to_credits(self.per_call + units_max + self.fuel_amount(max_fuel))
    }

    /// Whether the charge depends on the units used earlier in the period
    /// (tiers, packages, allowances); a standard price per unit does not.
    pub fn uses_period(&self) -> bool {
        !matches!(self.units, ChargeModel::Standard { .. }) || !self.free_units.is_empty()
    }

    fn free_units_for(&self, plan: Option<&str>) -> u64 {
        plan.and_then(|plan| self.free_units.get(plan))
            .copied()
            .unwrap_or(0)
    }

    /// What `units` add to the period's amount after `period_units`, less
    /// the plan's free allowance; never below zero (a volume price that
    /// falls at a tier is settled at the period's end, not per call).
    fn units_amount(&self, plan: Option<&str>, period_units: u64, units: u64) -> Decimal {
        let free = self.free_units_for(plan);
        let before = period_units.saturating_sub(free);
        let after = period_units.saturating_add(units).saturating_sub(free);
        (self.units.period_amount(after) - self.units.period_amount(before)).max(Decimal::ZERO)
    }

    fn fuel_amount(&self, fuel: u64) -> Decimal {
        self.per_million_fuel * Decimal::from(fuel) / Decimal::from(1_000_000)
    }
}

pub(crate) fn to_credits(amount: Decimal) -> Credits {
    let rounded = amount.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
    // Prices are validated at load to be small enough that no call's
    // charge overflows; saturate rather than wrap if one ever did.
    Credits::from_decimal(rounded).unwrap_or(Credits::from_micros(i64::MAX))
}

/// Which pricing-rule plugin adjusts the quotes of a plan or a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleBinding {
    pub rule: String,
    pub plan: Option<String>,
    pub tenant: Option<TenantId>,
}

/// Every price and rule binding of `pricing.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceBook {
    pub prices: Vec<Price>,
    pub rules: Vec<RuleBinding>,
    /// What the platform charges a reseller for each call to a plugin of
    /// its own.
    pub reseller_plugins: ResellerPluginPrice,
}

/// `[reseller_plugins]` of `pricing.toml`: the wholesale price of every
/// call to a reseller's own plugin, whatever it does: per call, and per
/// million units of fuel it burns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResellerPluginPrice {
    pub per_call: Decimal,
    pub per_million_fuel: Decimal,
}

/// Why a call has no price.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin {plugin} function {function} has no price in pricing.toml; the operator must add a [[price]] for it"
)]
pub struct Unpriced {
    pub plugin: String,
    pub function: String,
}

impl PriceBook {
    /// The price of a call to `plugin`'s `function` by `tenant` at `at`:
    /// the tenant's own price if it has one, else everyone's; of those, the
    /// one that took effect last, not after `at`.
    pub fn price(
        &self,
        tenant: TenantId,
        plugin: &str,
        function: &str,
        at: Timestamp,
    ) -> Result<&Price, Unpriced> {
        let effective = |for_tenant: Option<TenantId>| {
            self.prices
                .iter()
                .filter(|price| {
                    price.plugin == plugin
                        && price.function == function
                        && price.tenant == for_tenant
                        && price.effective_from <= at
                })
                .max_by_key(|price| price.effective_from)
        };
        effective(Some(tenant))
            .or_else(|| effective(None))
            .ok_or_else(|| Unpriced {
                plugin: plugin.to_owned(),
                function: function.to_owned(),
            })
    }

    /// The wholesale price of a call to `function` of a reseller's own
    /// plugin `plugin`.
    pub fn reseller_plugin_price(&self, plugin: &str, function: &str) -> Price {
        Price {
            plugin: plugin.to_owned(),
            function: function.to_owned(),
            tenant: None,
            effective_from: Timestamp::from_micros(0),
            per_call: self.reseller_plugins.per_call,
            units: ChargeModel::Standard {
                per_unit: Decimal::ZERO,
            },
            free_units: BTreeMap::new(),
            per_million_fuel: self.reseller_plugins.per_million_fuel,
            charge_failed: false,
        }
    }

    /// The pricing-rule plugin bound to the tenant, else to its plan.
    pub fn rule(&self, tenant: TenantId, plan: Option<&str>) -> Option<&str> {
        let bound_to_tenant = self.rules.iter().find(|rule| rule.tenant == Some(tenant));
        let bound_to_plan = || {
            self.rules.iter().find(|rule| {
                rule.tenant.is_none() && plan.is_some() && rule.plan.as_deref() == plan
            })
        };
        bound_to_tenant
            .or_else(bound_to_plan)
            .map(|rule| rule.rule.as_str())
    }
}

#[cfg(test)]
mod tests;
