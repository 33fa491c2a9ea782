//! Resale: what a reseller's tenants pay (its retail prices) and what the
//! reseller pays the platform (wholesale: the platform's own prices) for
//! the same things.
//!
//! A reseller's retail price list is a percentage markup on the platform's
//! prices, with its own prices where it sets them: per plugin function (a
//! price exactly like a `[[price]]` of `pricing.toml`, checked the same
//! way), per plan and per credit package. A resold tenant's call is charged
//! at retail from its wallet into the reseller's sales account, and at
//! wholesale from the reseller's wallet into the platform's revenue, both
//! by the metered path (`metering`); a resold tenant's plan period is
//! invoiced at retail, and recorded at the platform's price as a wholesale
//! charge the platform bills the reseller. The reseller's margin is the
//! difference, exactly: in credits for calls, in money for plans.
//!
//! A reseller is alerted when a wholesale charge takes its wallet below one
//! of its thresholds, once per crossing; refused calls never reach the
//! alert, so one is sent before the wallet runs out.

use std::collections::BTreeMap;

use diesel::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::config::{CreditPackage, Plan, parse_price_json};
use crate::db::schema::{
    reseller_alerts, reseller_invoices, reseller_settings, usage_records, wholesale_charges,
};
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{AccountId, queries};
use crate::pricing::{Price, PriceBook, Usage};
use crate::tenants::{self, Kind};
use crate::units::{Credits, Money, Timestamp};

/// The largest markup a reseller may set, in percent.
pub const MARKUP_PERCENT_MAX: u32 = 1_000;

/// Most alert thresholds a reseller may set.
pub const THRESHOLDS_MAX: usize = 10;

/// Most plan and package prices one retail list may hold.
const PRODUCT_PRICES_MAX: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ResaleError {
    #[error("invalid retail pricing: {0}")]
    InvalidPricing(String),
    #[error("invalid alert thresholds: {0}")]
    InvalidThresholds(String),
    #[error("reseller has no plan charges in {0} to invoice")]
    NothingToInvoice(String),
    #[error("{0} is not over yet; invoice a month once it has ended")]
    MonthNotOver(String),
    #[error(
        "the plan charges of {0} are in several currencies; invoice them one currency at a time"
    )]
    MixedCurrencies(String),
    #[error("{0} tenants had plan charges: more than one invoice holds")]
    TooManyTenants(usize),
    #[error(transparent)]
    Invoice(#[from] crate::billing::invoices::InvoiceError),
    #[error(transparent)]
    Tenant(#[from] tenants::TenantError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

/// A reseller's retail price list, as given (`PUT /resellers/{id}/pricing`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PricingDocument {
    /// Percent added to every platform price the list does not replace.
    #[serde(default)]
    pub markup_percent: Decimal,
    /// Retail prices of plugin functions, each like a `[[price]]` of
    /// `pricing.toml`; `tenant` names one of the reseller's tenants.
    #[serde(default)]
    pub prices: Vec<serde_json::Value>,
    /// Retail price of a plan per period, by plan id, in the plan's currency.
    #[serde(default)]
    pub plans: BTreeMap<String, Decimal>,
    /// Retail price of a credit package, by package id.
    #[serde(default)]
    pub packages: BTreeMap<String, Decimal>,
}

/// A reseller's retail prices, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetailPrices {
    pub markup_percent: Decimal,
    pub book: PriceBook,
    pub plans: BTreeMap<String, Decimal>,
    pub packages: BTreeMap<String, Decimal>,
}

impl RetailPrices {
    /// Checks a document's own content: the markup's range and every price
    /// as `pricing.toml` checks it. Plans and packages are checked against
    /// the platform's by [`RetailPrices::check_products`].
    pub fn parse(document: &PricingDocument) -> Result<RetailPrices, ResaleError> {
        let invalid = |reason: String| ResaleError::InvalidPricing(reason);
        let markup = document.markup_percent;
        if markup.is_sign_negative() || markup > Decimal::from(MARKUP_PERCENT_MAX) {
            return Err(invalid(format!(
                "markup_percent must be 0 to {MARKUP_PERCENT_MAX}, got {markup}"
            )));
        }
        if document.prices.len() > crate::config::PRICES_MAX {
            return Err(invalid(format!(
                "prices: at most {} prices",
                crate::config::PRICES_MAX
            )));
        }
        if document.plans.len() + document.packages.len() > PRODUCT_PRICES_MAX {
            return Err(invalid(format!(
                "plans and packages: at most {PRODUCT_PRICES_MAX} prices"
            )));
        }
        let prices = document
            .prices
            .iter()
            .enumerate()
            .map(|(index, price)| parse_price_json(index, price.clone()).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::HashSet::new();
        for (index, price) in prices.iter().enumerate() {
            if !seen.insert((
                &price.plugin,
                &price.function,
                price.tenant,
                price.effective_from,
            )) {
                return Err(invalid(format!(
                    "price[{index}]: a second price for {} {} with the same tenant and effective_from",
                    price.plugin, price.function
                )));
            }
        }
        Ok(RetailPrices {
            markup_percent: markup,
            book: PriceBook {
                prices,
                rules: Vec::new(),
                reseller_plugins: Default::default(),
            },
            plans: document.plans.clone(),
            packages: document.packages.clone(),
        })
    }

    /// Checks the plan and package prices against the platform's products:
    /// each names one, and is a positive amount in its currency.
    pub fn check_products(
        &self,
        plans: &[Plan],
        packages: &[CreditPackage],
    ) -> Result<(), ResaleError> {
        let invalid = |reason: String| ResaleError::InvalidPricing(reason);
        for (id, price) in &self.plans {
            let plan = plans
                .iter()
                .find(|plan| &plan.id == id)
                .ok_or_else(|| invalid(format!("plans.{id}: there is no plan {id:?}")))?;
            positive_money(*price, plan.price.currency)
                .map_err(|reason| invalid(format!("plans.{id}: {reason}")))?;
        }
        for (id, price) in &self.packages {
            let package = packages
                .iter()
                .find(|package| &package.id == id)
                .ok_or_else(|| invalid(format!("packages.{id}: there is no package {id:?}")))?;
            positive_money(*price, package.price.currency)
                .map_err(|reason| invalid(format!("packages.{id}: {reason}")))?;
        }
        Ok(())
    }

    /// What the markup makes of a wholesale amount of credits, rounded half
    /// away from zero to the millionth of a credit.
    pub fn marked_up(&self, wholesale: Credits) -> Credits {
        crate::pricing::to_credits(self.markup(wholesale.to_decimal()))
    }

    fn markup(&self, amount: Decimal) -> Decimal {
        amount * (Decimal::ONE_HUNDRED + self.markup_percent) / Decimal::ONE_HUNDRED
    }

    /// The reseller's own price for a plugin function, if it set one.
    pub fn own_price(
        &self,
        tenant: TenantId,
        plugin: &str,
        function: &str,
        at: Timestamp,
    ) -> Option<&Price> {
        self.book.price(tenant, plugin, function, at).ok()
    }

    /// The retail charge of a call whose wholesale charge is `wholesale`:
    /// `own` (the reseller's own price for the function) applied to `usage`,
    /// the most it may cost when `most`; or else the markup on `wholesale`.
    pub fn charge(
        &self,
        own: Option<&Price>,
        wholesale: Credits,
        usage: Usage<'_>,
        most: bool,
    ) -> Credits {
        match own {
            Some(price) if most => price.max_charge(usage),
            Some(price) => price.charge(usage),
            None => self.marked_up(wholesale),
        }
    }

    /// The plan as the reseller sells it: at its own price for the plan, or
    /// the platform's price marked up and rounded half away from zero to
    /// the minor unit. The plan's discount applies to either.
    pub fn plan(&self, plan: &Plan) -> Plan {
        let currency = plan.price.currency;
        let price = self
            .plans
            .get(&plan.id)
            .and_then(|price| Money::from_decimal(*price, currency).ok())
            .unwrap_or_else(|| self.marked_up_money(plan.price));
        Plan {
            price,
            ..plan.clone()
        }
    }

    /// The credit package as the reseller sells it.
    pub fn package(&self, package: &CreditPackage) -> CreditPackage {
        let currency = package.price.currency;
        let price = self
            .packages
            .get(&package.id)
            .and_then(|price| Money::from_decimal(*price, currency).ok())
            .unwrap_or_else(|| self.marked_up_money(package.price));
        CreditPackage {
            price,
            ..package.clone()
        }
    }

    fn marked_up_money(&self, price: Money) -> Money {
        let amount = self.markup(Decimal::from(price.minor));
        Money {
            minor: amount
                .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                .try_into()
                .unwrap_or(i64::MAX),
            currency: price.currency,
        }
    }
}

fn positive_money(value: Decimal, currency: crate::units::Currency) -> Result<Money, String> {
    if value <= Decimal::ZERO {
        return Err(format!("must be greater than zero, got {value}"));
    }
    Money::from_decimal(value, currency).map_err(|error| error.to_string())
}

/// Checks alert thresholds: at most [`THRESHOLDS_MAX`], each positive,
/// none twice. Returned highest first.
pub fn check_thresholds(mut thresholds: Vec<Credits>) -> Result<Vec<Credits>, ResaleError> {
    let invalid = |reason: String| ResaleError::InvalidThresholds(reason);
    if thresholds.len() > THRESHOLDS_MAX {
        return Err(invalid(format!("give at most {THRESHOLDS_MAX}")));
    }
    if let Some(threshold) = thresholds.iter().find(|threshold| !threshold.is_positive()) {
        return Err(invalid(format!(
            "each must be greater than zero, got {threshold}"
        )));
    }
    thresholds.sort_by(|a, b| b.cmp(a));
    let before = thresholds.len();
    thresholds.dedup();
    if thresholds.len() != before {
        return Err(invalid("a threshold is given twice".into()));
    }
    Ok(thresholds)
}

/// A reseller's stored settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub pricing: PricingDocument,
    /// Highest first.
    pub thresholds: Vec<Credits>,
    pub updated_at: Option<Timestamp>,
}

/// The settings of `reseller`; the defaults (no markup, no thresholds) if
/// it never set any.
pub fn settings(conn: &mut DbConnection, reseller: TenantId) -> Result<Settings, ResaleError> {
    let row: Option<(String, String, i64)> = reseller_settings::table
        .find(reseller.0)
        .select((
            reseller_settings::pricing,
            reseller_settings::alert_thresholds,
            reseller_settings::updated_at,
        ))
        .first(conn)
        .optional()?;
    let Some((pricing, thresholds, updated_at)) = row else {
        return Ok(Settings::default());
    };
    // Both were checked before they were stored.
    let pricing = serde_json::from_str(&pricing)
        .map_err(|error| ResaleError::InvalidPricing(format!("stored pricing: {error}")))?;
    let thresholds: Vec<i64> = serde_json::from_str(&thresholds)
        .map_err(|error| ResaleError::InvalidThresholds(format!("stored thresholds: {error}")))?;
    Ok(Settings {
        pricing,
        thresholds: thresholds.into_iter().map(Credits::from_micros).collect(),
        updated_at: Some(Timestamp::from_micros(updated_at)),
    })
}

/// Stores a reseller's settings, replacing what it had.
pub fn store(
    conn: &mut DbConnection,
    reseller: TenantId,
    settings: &Settings,
    now: Timestamp,
) -> Result<(), ResaleError> {
    let pricing = serde_json::to_string(&settings.pricing).expect("a document serialises");
    let thresholds: Vec<i64> = settings.thresholds.iter().map(|t| t.micros()).collect();
    let thresholds = serde_json::to_string(&thresholds).expect("numbers serialise");
    db::write_transaction(conn, |conn| {
        let updated = diesel::update(reseller_settings::table.find(reseller.0))
            .set((
                reseller_settings::pricing.eq(&pricing),
                reseller_settings::alert_thresholds.eq(&thresholds),
                reseller_settings::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(reseller_settings::table)
                .values((
                    reseller_settings::reseller_id.eq(reseller.0),
                    reseller_settings::pricing.eq(&pricing),
                    reseller_settings::alert_thresholds.eq(&thresholds),
                    reseller_settings::updated_at.eq(now.micros()),
                ))
                .execute(conn)?;
        }
        Ok::<_, ResaleError>(())
    })
}

/// What the metered path and billing need to know of a resold tenant's
/// reseller.
#[derive(Clone, Debug)]
pub struct Reseller {
    pub id: TenantId,
    /// Its wallet: the wholesale account its tenants' calls are charged to.
    pub wallet: AccountId,
    /// Its sales account: where its tenants' retail charges go.
    pub sales: AccountId,
    pub prices: RetailPrices,
    /// Highest first.
    pub thresholds: Vec<Credits>,
}

/// The reseller of `tenant`, or `None` for a tenant the platform sells to
/// directly (and for a reseller itself, which pays wholesale).
pub fn reseller_of(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Option<Reseller>, ResaleError> {
    let Some(parent) = parent_reseller(conn, tenant)? else {
        return Ok(None);
    };
    let settings = settings(conn, parent)?;
    Ok(Some(Reseller {
        id: parent,
        wallet: queries::wallet_of(conn, parent)?,
        sales: queries::sales_account_of(conn, parent)?,
        prices: RetailPrices::parse(&settings.pricing)?,
        thresholds: settings.thresholds,
    }))
}

/// The reseller of `tenant` and its retail prices, or `None` for a tenant
/// the platform sells to directly: what the reseller's analytics count a
/// resold tenant's plans at.
pub fn retail_of(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Option<(TenantId, RetailPrices)>, ResaleError> {
    let Some(parent) = parent_reseller(conn, tenant)? else {
        return Ok(None);
    };
    let settings = settings(conn, parent)?;
    Ok(Some((parent, RetailPrices::parse(&settings.pricing)?)))
}

/// The reseller `tenant` belongs to, if it is one's.
fn parent_reseller(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Option<TenantId>, ResaleError> {
    let Some(parent) = tenants::find(conn, tenant)?.parent else {
        return Ok(None);
    };
    Ok((tenants::find(conn, parent)?.kind == Kind::Reseller).then_some(parent))
}

/// The thresholds a wallet's balance fell below when it went from
/// `before` to `after`: those at or below `before` and above `after`.
pub fn crossed(thresholds: &[Credits], before: Credits, after: Credits) -> Vec<Credits> {
    thresholds
        .iter()
        .copied()
        .filter(|threshold| after < *threshold && *threshold <= before)
        .collect()
}

/// Records the alerts of a wholesale charge (by call `call_id`) that took
/// the reseller's balance from `before` to `after`; once per call and
/// threshold, however often it is retried.
pub fn record_alerts(
    conn: &mut DbConnection,
    reseller: &Reseller,
    call_id: &str,
    before: Credits,
    after: Credits,
    now: Timestamp,
) -> Result<usize, ResaleError> {
    let crossed = crossed(&reseller.thresholds, before, after);
    if crossed.is_empty() {
        return Ok(0);
    }
    crate::db::write_transaction(conn, |conn| {
        for threshold in &crossed {
            tracing::warn!(
                reseller = reseller.id.0,
                threshold = %threshold,
                balance = %after,
                "a reseller's wholesale balance fell below its alert threshold"
            );
            let row = (
                reseller_alerts::reseller_id.eq(reseller.id.0),
                reseller_alerts::threshold.eq(threshold.micros()),
                reseller_alerts::balance.eq(after.micros()),
                reseller_alerts::call_id.eq(call_id),
                reseller_alerts::created_at.eq(now.micros()),
            );
            let recorded: Option<i64> = match conn {
                DbConnection::Sqlite(conn) => diesel::insert_into(reseller_alerts::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .returning(reseller_alerts::id)
                    .get_result(conn)
                    .optional()?,
                DbConnection::Postgres(conn) => diesel::insert_into(reseller_alerts::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .returning(reseller_alerts::id)
                    .get_result(conn)
                    .optional()?,
            };
            // The reseller is told by email, once per alert.
            if let Some(alert) = recorded {
                crate::mail::enqueue(
                    conn,
                    reseller.id,
                    crate::mail::Topic::WalletAlert,
                    alert,
                    now,
                )?;
            }
        }
        Ok(crossed.len())
    })
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub threshold: Credits,
    pub balance: Credits,
    pub created_at: Timestamp,
}

/// A reseller's alerts, newest first, at most `limit`.
pub fn alerts(
    conn: &mut DbConnection,
    reseller: TenantId,
    limit: i64,
) -> Result<Vec<Alert>, ResaleError> {
    let rows: Vec<(i64, i64, i64, i64)> = reseller_alerts::table
        .filter(reseller_alerts::reseller_id.eq(reseller.0))
        .order(reseller_alerts::id.desc())
        .limit(limit)
        .select((
            reseller_alerts::id,
            reseller_alerts::threshold,
            reseller_alerts::balance,
            reseller_alerts::created_at,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, threshold, balance, created_at)| Alert {
            id,
            threshold: Credits::from_micros(threshold),
            balance: Credits::from_micros(balance),
            created_at: Timestamp::from_micros(created_at),
        })
        .collect())
}

/// A reseller's margin on one tenant's calls to one plugin in one month:
/// what the tenant was charged at retail, what the reseller was charged at
/// wholesale, and the difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallMargin {
    pub period: String,
    pub tenant: TenantId,
    pub plugin: String,
    pub calls: i64,
    pub retail: Credits,
    pub wholesale: Credits,
    pub margin: Credits,
}

/// The reseller's margins on calls, by month, tenant and plugin, for the
/// months from `from` to `to` (`YYYY-MM`, both included).
pub fn call_margins(
    conn: &mut DbConnection,
    reseller: TenantId,
    from: &str,
    to: &str,
) -> Result<Vec<CallMargin>, ResaleError> {
    use diesel::dsl::{count_star, sql};
    use diesel::sql_types::BigInt;
    let rows: Vec<(String, i64, String, i64, i64, i64)> = usage_records::table
        .filter(usage_records::reseller_id.eq(reseller.0))
        .filter(usage_records::period.ge(from))
        .filter(usage_records::period.le(to))
        .group_by((
            usage_records::period,
            usage_records::tenant_id,
            usage_records::plugin,
        ))
        .select((
            usage_records::period,
            usage_records::tenant_id,
            usage_records::plugin,
            count_star(),
            sql::<BigInt>("CAST(SUM(credits) AS BIGINT)"),
            sql::<BigInt>("CAST(SUM(wholesale) AS BIGINT)"),
        ))
        .order((
            usage_records::period,
            usage_records::tenant_id,
            usage_records::plugin,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(period, tenant, plugin, calls, retail, wholesale)| CallMargin {
                period,
                tenant: TenantId(tenant),
                plugin,
                calls,
                retail: Credits::from_micros(retail),
                wholesale: Credits::from_micros(wholesale),
                margin: Credits::from_micros(retail - wholesale),
            },
        )
        .collect())
}

/// A resold tenant's plan period (or plan change) as its invoice charged
/// it at retail and the platform charges the reseller for it at wholesale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanMargin {
    pub period: String,
    pub tenant: TenantId,
    pub invoice: i64,
    pub description: String,
    pub currency: String,
    pub retail_minor: i64,
    pub wholesale_minor: i64,
}

/// Records the wholesale side of a resold tenant's plan invoice, in the
/// transaction that issues it.
#[allow(clippy::too_many_arguments)]
pub fn record_plan_charge(
    conn: &mut DbConnection,
    reseller: TenantId,
    tenant: TenantId,
    invoice: i64,
    description: &str,
    retail: Money,
    wholesale: Money,
    now: Timestamp,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(wholesale_charges::table)
        .values((
            wholesale_charges::reseller_id.eq(reseller.0),
            wholesale_charges::tenant_id.eq(tenant.0),
            wholesale_charges::invoice_id.eq(invoice),
            wholesale_charges::description.eq(description),
            wholesale_charges::currency.eq(retail.currency.code()),
            wholesale_charges::retail_minor.eq(retail.minor),
            wholesale_charges::wholesale_minor.eq(wholesale.minor),
            wholesale_charges::period.eq(crate::metering::period_of(now)),
            wholesale_charges::created_at.eq(now.micros()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The reseller's plan charges from month `from` to `to`, in order.
pub fn plan_margins(
    conn: &mut DbConnection,
    reseller: TenantId,
    from: &str,
    to: &str,
) -> Result<Vec<PlanMargin>, ResaleError> {
    let rows: Vec<(String, i64, i64, String, String, i64, i64)> = wholesale_charges::table
        .filter(wholesale_charges::reseller_id.eq(reseller.0))
        .filter(wholesale_charges::period.ge(from))
        .filter(wholesale_charges::period.le(to))
        .order(wholesale_charges::id)
        .select((
            wholesale_charges::period,
            wholesale_charges::tenant_id,
            wholesale_charges::invoice_id,
            wholesale_charges::description,
            wholesale_charges::currency,
            wholesale_charges::retail_minor,
            wholesale_charges::wholesale_minor,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(period, tenant, invoice, description, currency, retail_minor, wholesale_minor)| {
                PlanMargin {
                    period,
                    tenant: TenantId(tenant),
                    invoice,
                    description,
                    currency,
                    retail_minor,
                    wholesale_minor,
                }
            },
        )
        .collect())
}

/// Issues the platform's invoice to `reseller` for the wholesale plan
/// charges of `month` (`YYYY-MM`): a line for each tenant, with what its
/// plan periods cost at the platform's prices. One per reseller and month:
/// asking again returns the first, whatever was charged since.
pub fn invoice_month(
    conn: &mut DbConnection,
    issuer: &crate::billing::invoices::Issuer,
    reseller: TenantId,
    month: &str,
    now: Timestamp,
) -> Result<crate::billing::invoices::Document, ResaleError> {
    use crate::billing::invoices::{self, NewDocument, NewLine};
    if month >= crate::metering::period_of(now).as_str() {
        return Err(ResaleError::MonthNotOver(month.to_owned()));
    }
    db::write_transaction(conn, |conn| {
        let issued: Option<i64> = reseller_invoices::table
            .find((reseller.0, month))
            .select(reseller_invoices::invoice_id)
            .first(conn)
            .optional()?;
        if let Some(invoice) = issued {
            return Ok(invoices::get(conn, reseller, invoice)?);
        }
        let charges = plan_margins(conn, reseller, month, month)?;
        let Some(first) = charges.first() else {
            return Err(ResaleError::NothingToInvoice(month.to_owned()));
        };
        let currency = first.currency.clone();
        if charges.iter().any(|charge| charge.currency != currency) {
            return Err(ResaleError::MixedCurrencies(month.to_owned()));
        }
        let mut by_tenant: BTreeMap<TenantId, (usize, i64)> = BTreeMap::new();
        for charge in &charges {
            let sum = by_tenant.entry(charge.tenant).or_default();
            sum.0 += 1;
            sum.1 += charge.wholesale_minor;
        }
        if by_tenant.len() > invoices::LINES_MAX {
            return Err(ResaleError::TooManyTenants(by_tenant.len()));
        }
        let mut lines = Vec::new();
        for (tenant, (count, minor)) in by_tenant {
            let name = tenants::find(conn, tenant)?.name;
            lines.push(NewLine {
                description: format!(
                    "{name} (tenant {tenant}): {count} plan period{} in {month}, at the platform's prices",
                    if count == 1 { "" } else { "s or changes" }
                ),
                quantity: 1,
                unit_price_minor: minor,
            });
        }
        let currency = crate::units::Currency::parse(&currency)
            .map_err(|error| ResaleError::InvalidPricing(error.to_string()))?;
        let draft = invoices::create_within(
            conn,
            issuer,
            &NewDocument {
                tenant: reseller,
                kind: invoices::Kind::Invoice,
                currency,
                lines,
                credits_invoice: None,
            },
            now,
        )?;
        let document = invoices::finalize_within(conn, reseller, draft.id, now)?;
        diesel::insert_into(reseller_invoices::table)
            .values((
                reseller_invoices::reseller_id.eq(reseller.0),
                reseller_invoices::month.eq(month),
                reseller_invoices::invoice_id.eq(document.id),
                reseller_invoices::created_at.eq(now.micros()),
            ))
            .execute(conn)?;
        Ok(document)
    })
}
