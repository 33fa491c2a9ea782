//! The metered path. Every plugin call, whoever makes it (the API, a
//! sequence step, a renewal, an import), goes through [`Meter::invoke`]:
//!
//! 1. quote: the price of the plugin function for the tenant, now, and the
//!    most the call may cost (its most units and all its fuel);
//! 2. hold that much on the tenant's wallet, and in the same transaction
//!    write the call's usage record (state `invoking`); refused when the
//!    balance cannot cover it, and then the plugin is not invoked and
//!    nothing is recorded;
//! 3. invoke the plugin in its sandbox with the tenant's settings;
//! 4. settle: post the charge for what the call reported (its units, its
//!    fuel; nothing when it failed on the platform's side or crashed,
//!    nothing when the plugin reported a failure unless the price says
//!    `charge_failed`) and release the rest, or void it all, and in the
//!    same transaction complete the record (state `settled`).
//!
//! Both steps ride the ledger's group commit, so concurrent calls share
//! their commits. A busy wallet's calls take a cheaper path with the same
//! guarantees: steps 2 and 4 against this host's lease on part of the
//! wallet's balance, a hold of its own, so that one ledger round posts
//! many calls' charges with their records (see `leases`).
//!
//! A call a crash interrupted between the two steps is left `invoking`:
//! once it is older than a hold lasts, [`Meter::recover`] voids its hold
//! and marks it `interrupted`, charged nothing, since what it did is
//! unknown (a call on a lease wrote nothing before it ran; the lease's
//! hold times out). So a call
//! that was answered has its charge and its record, and the records'
//! credits always equal the ledger's charges for calls.

mod exact;
mod leases;

use exact::timed_out;

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;

use crate::db::schema::{usage_counters, usage_records};
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{AccountId, Ledger, LedgerError, TransferId, queries};
use crate::plugins::kv::DbKv;
use crate::plugins::{self, ActivePlugin, PluginError, Registry};
use crate::pricing::{Price, PriceBook, Unpriced, Usage};
use crate::resale::Reseller;
use crate::runtime::{Call, CallContext, CallError, HttpPolicy, Reply};
use crate::secrets::SecretBox;
use crate::units::{Clock, Credits, Timestamp};

/// One call to meter.
#[derive(Clone, Debug)]
pub struct Request {
    pub tenant: TenantId,
    pub plugin: String,
    pub call: Call,
    /// The caller's idempotency key, kept on the usage record.
    pub idempotency_key: Option<String>,
}

/// What a metered call did and cost.
#[derive(Debug)]
pub struct Metered {
    /// The id of its usage record.
    pub call_id: String,
    pub function: &'static str,
    pub version: String,
    pub result: Result<Reply, CallError>,
    /// Units charged for: what the plugin reported, at most what was held
    /// for.
    pub units: u64,
    pub charged: Credits,
    pub fuel: u64,
    pub duration: Duration,
    /// The tenant's balance once the call settled, when its settlement
    /// moved credits (a free call leaves it to the caller to read).
    pub balance: Option<queries::Balance>,
}

/// A call that ran, and whose charge is settled or settling: on a lease,
/// its record is written with the next round, and the call may be
/// answered only once that has committed.
#[derive(Debug)]
#[must_use = "a call is settled only once waited for"]
pub struct Started {
    plugin: String,
    metered: Metered,
    settling: Option<leases::Waiting>,
}

impl Started {
    /// Blocks until the call is settled.
    pub fn wait(self) -> Result<Metered, MeterError> {
        let settled = self.settling.map(leases::Waiting::wait);
        finish(self.plugin, self.metered, settled)
    }

    /// Waits, without blocking a thread, until the call is settled.
    pub async fn settled(self) -> Result<Metered, MeterError> {
        let settled = match self.settling {
            Some(settling) => Some(settling.settled().await),
            None => None,
        };
        finish(self.plugin, self.metered, settled)
    }
}

/// A call's answer once settled (`settled`: the balance its lease round
/// left, or why that round failed; `None` when it settled on its own hold),
/// counted in the metrics.
fn finish(
    plugin: String,
    metered: Metered,
    settled: Option<Result<Option<queries::Balance>, MeterError>>,
) -> Result<Metered, MeterError> {
    let result = match settled {
        None => Ok(metered),
        Some(settled) => settled.map(|balance| Metered { balance, ..metered }),
    };
    observe(plugin, result.as_ref());
    result
}

/// Why a call was not made. Nothing was charged.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("plugin {0} is not enabled for this tenant; enable it with its settings first")]
    NotEnabled(String),
    #[error("plugin {plugin} is a {kind} plugin and has no function {function}")]
    WrongFunction {
        plugin: String,
        kind: crate::runtime::PluginKind,
        function: &'static str,
    },
    #[error(transparent)]
    Unpriced(#[from] Unpriced),
    #[error("insufficient credits: {available} available, and the call may cost up to {required}")]
    InsufficientCredits {
        available: Credits,
        required: Credits,
    },
    #[error(
        "this account is suspended, so no call is made; its reseller or the operator can resume it"
    )]
    Suspended,
    #[error(
        "your provider's account cannot cover this call, so it was not made and nothing was charged; ask your provider to top up its account"
    )]
    ResellerBalanceExhausted {
        reseller: TenantId,
        /// What the reseller's wallet had, and what the call needed of it
        /// at wholesale: for the reseller and the operator, never shown to
        /// the tenant.
        available: Credits,
        required: Credits,
    },
    #[error("the pricing rule {rule} bound to this tenant could not price the call: {reason}")]
    PricingRule { rule: String, reason: String },
    #[error("the ledger refused the call: {0}")]
    Ledger(LedgerError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl From<LedgerError> for MeterError {
    fn from(error: LedgerError) -> MeterError {
        MeterError::Ledger(error)
    }
}

/// Meters every plugin call of one host.
pub struct Meter {
    database: Database,
    ledger: Ledger,
    registry: Arc<Registry>,
    secrets: Arc<SecretBox>,
    book: Arc<PriceBook>,
    clock: Arc<dyn Clock>,
    /// HTTP limits and whether tenant-named hosts may be private; the
    /// allowed hosts come from each plugin's manifest.
    http: HttpPolicy,
    /// How long a call's hold lasts if the host dies before settling it.
    hold_timeout: Duration,
    wallets: std::sync::Mutex<std::collections::HashMap<i64, AccountId>>,
    /// The active version of each plugin, and each tenant's settings for
    /// it (`None`: not enabled), read at most once per [`CACHE_TTL`]:
    /// see [`Meter::forget_cached`].
    plugins: moka::sync::Cache<String, Arc<ActivePlugin>>,
    settings: moka::sync::Cache<(i64, String, String), Option<Arc<Settings>>>,
    /// Each tenant's plan (`None`: no live subscription), for the free
    /// units of its price and the pricing rules bound to the plan.
    plans: moka::sync::Cache<i64, Option<Arc<str>>>,
    /// Each tenant's standing: suspended or not, and its reseller with its
    /// retail prices.
    standings: moka::sync::Cache<i64, Arc<Standing>>,
    /// This host's leases on busy wallets: see [`leases`].
    leases: leases::Leases,
}

/// Whether a tenant may call, and at whose prices.
#[derive(Debug)]
struct Standing {
    suspended: bool,
    /// `None`: the platform sells to it directly.
    reseller: Option<Reseller>,
}

pub type Settings = std::collections::BTreeMap<String, String>;

/// How long a host trusts what it cached of the database: the active
/// version of a plugin, a tenant's settings for it, an API key. Changes
/// made through this host's API are seen at once (it forgets its caches);
/// changes made by another host or the CLI within this long.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries a cache keeps at most.
const CACHE_ENTRIES_MAX: u64 = 100_000;

/// A cache whose entries live [`CACHE_TTL`].
pub fn ttl_cache<K, V>() -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(CACHE_ENTRIES_MAX)
        .time_to_live(CACHE_TTL)
        .build()
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

/// The most units a call may report, which its hold covers: a search's
/// page size, one lead enriched, one message sent, one payment or refund.
/// Callbacks and price adjustments report none.
pub fn max_units(call: &Call) -> u64 {
    match call {
        Call::Search(query) => u64::from(query.limit),
        Call::Enrich(_) | Call::Send(_) | Call::CreatePayment(_) | Call::Refund(_) => 1,
        Call::ChannelCallback(_) | Call::PaymentCallback(_) | Call::AdjustPrice(_) => 0,
    }
}

/// The billing period a call counts towards: its calendar month, UTC.
pub fn period_of(at: Timestamp) -> String {
    crate::analytics::usage::month_of(at.micros())
}

const OUTCOME_OK: &str = "ok";
const OUTCOME_PLUGIN_ERROR: &str = "plugin_error";
const OUTCOME_PLATFORM_ERROR: &str = "platform_error";
const OUTCOME_PENDING: &str = "pending";
const STATE_INVOKING: &str = "invoking";
const STATE_INTERRUPTED: &str = "interrupted";
const STATE_SETTLED: &str = "settled";
const STATE_LOST: &str = "lost";

fn hold_id(call_id: &str) -> TransferId {
    TransferId::new(format!("call:{call_id}:hold")).expect("hex ids make valid transfer ids")
}

fn settle_id(call_id: &str) -> TransferId {
    TransferId::new(format!("call:{call_id}:settle")).expect("hex ids make valid transfer ids")
}

/// A resold call's hold on its reseller's wallet, at wholesale.
fn wholesale_hold_id(call_id: &str) -> TransferId {
    TransferId::new(format!("call:{call_id}:wholesale-hold"))
        .expect("hex ids make valid transfer ids")
}

fn wholesale_settle_id(call_id: &str) -> TransferId {
    TransferId::new(format!("call:{call_id}:wholesale-settle"))
        .expect("hex ids make valid transfer ids")
}

impl Meter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        database: Database,
        ledger: Ledger,
        registry: Arc<Registry>,
        secrets: Arc<SecretBox>,
        book: Arc<PriceBook>,
        clock: Arc<dyn Clock>,
        http: HttpPolicy,
        hold_timeout: Duration,
    ) -> Meter {
        Meter {
            database: database.clone(),
            ledger: ledger.clone(),
            registry,
            secrets,
            book,
            clock: clock.clone(),
            http,
            hold_timeout,
            wallets: Default::default(),
            plugins: ttl_cache(),
            settings: ttl_cache(),
            plans: ttl_cache(),
            standings: ttl_cache(),
            leases: leases::Leases::start(ledger, database, clock, hold_timeout),
        }
    }

    /// Settles the calls in flight on this host's wallet leases and gives
    /// the leases back; calls made after this hold their credits one by
    /// one. Graceful shutdown calls it; so does dropping the meter.
    pub fn close_leases(&self) {
        self.leases.close();
    }

    /// How many calls within 100 ms make a wallet busy enough for a lease
    /// (`[ledger] lease_after_calls`); 0 turns leases off.
    pub fn lease_after_calls(&self, calls: u32) {
        self.leases.set_busy_calls(calls);
    }

    /// The active version of plugin `name`, loaded.
    pub fn plugin(&self, name: &str) -> Result<Arc<ActivePlugin>, MeterError> {
        if let Some(plugin) = self.plugins.get(name) {
            return Ok(plugin);
        }
        let mut conn = self.database.get()?;
        let plugin = self.registry.get(&mut conn, name)?;
        self.plugins.insert(name.to_owned(), plugin.clone());
        Ok(plugin)
    }

    /// The tenant's settings for `plugin`, or `None` when the tenant has
    /// not enabled it.
    fn settings(
        &self,
        tenant: TenantId,
        plugin: &ActivePlugin,
    ) -> Result<Option<Arc<Settings>>, MeterError> {
        let key = (
            tenant.0,
            plugin.manifest.name.clone(),
            plugin.version.clone(),
        );
        if let Some(settings) = self.settings.get(&key) {
            return Ok(settings);
        }
        let mut conn = self.database.get()?;
        let settings =
            plugins::tenant_settings_of(&mut conn, &self.secrets, tenant, &plugin.manifest)?
                .map(Arc::new);
        self.settings.insert(key, settings.clone());
        Ok(settings)
    }

    /// The plan of the tenant's subscription while it is active or past due
    /// (paid for, or being collected); `None` without one.
    fn plan_of(&self, tenant: TenantId) -> Result<Option<Arc<str>>, MeterError> {
        use crate::db::schema::subscriptions;
        if let Some(plan) = self.plans.get(&tenant.0) {
            return Ok(plan);
        }
        let mut conn = self.database.get()?;
        let plan: Option<String> = subscriptions::table
            .filter(subscriptions::tenant_id.eq(tenant.0))
            .filter(subscriptions::state.eq_any(["active", "past_due"]))
            .select(subscriptions::plan)
            .first(&mut conn)
            .optional()?;
        let plan: Option<Arc<str>> = plan.map(Arc::from);
        self.plans.insert(tenant.0, plan.clone());
        Ok(plan)
    }

    /// Forgets what this host cached of plugins, settings and plans, after this
    /// host changed them (installed, upgraded, enabled, disabled).
    pub fn forget_cached(&self) {
        self.plugins.invalidate_all();
        self.settings.invalidate_all();
        self.plans.invalidate_all();
        self.standings.invalidate_all();
    }

    /// Whether the tenant is suspended, and its reseller with its retail
    /// prices.
    fn standing(&self, tenant: TenantId) -> Result<Arc<Standing>, MeterError> {
        if let Some(standing) = self.standings.get(&tenant.0) {
            return Ok(standing);
        }
        let mut conn = self.database.get()?;
        let other = |error: crate::tenants::TenantError| MeterError::Other(error.into());
        let standing = Arc::new(Standing {
            suspended: crate::tenants::is_suspended(&mut conn, tenant).map_err(other)?,
            reseller: crate::resale::reseller_of(&mut conn, tenant)
                .map_err(|error| MeterError::Other(error.into()))?,
        });
        self.standings.insert(tenant.0, standing.clone());
        Ok(standing)
    }

    /// Quotes, holds, invokes, records and settles one call. Blocking: run
    /// it on a blocking thread.
    pub fn invoke(&self, request: Request) -> Result<Metered, MeterError> {
        self.metered(request, true, None)
    }

    /// [`Meter::invoke`] up to the settlement, which the caller then waits
    /// for ([`Started::wait`]) or awaits ([`Started::settled`]), so a call
    /// settling on a lease round need not keep a blocking thread. Blocking:
    /// run it on a blocking thread.
    pub fn start(&self, request: Request) -> Result<Started, MeterError> {
        self.started(request, true, None)
    }

    /// Like [`Meter::invoke`], for a call the platform makes on the tenant's
    /// behalf with the merchant's settings instead of the tenant's: a
    /// payment provider taking the tenant's money for the platform. The
    /// tenant need not have enabled the plugin; the call is priced, held,
    /// charged and recorded like any other.
    pub fn invoke_as_merchant(
        &self,
        request: Request,
        settings: Arc<Settings>,
    ) -> Result<Metered, MeterError> {
        self.metered(request, true, Some(settings))
    }

    /// Like [`Meter::invoke`], with `defaults` for settings the tenant left
    /// unset: the host's own unsubscribe link for a sequence's email, say.
    /// The tenant must have enabled the plugin; what it set wins.
    pub fn invoke_with_defaults(
        &self,
        request: Request,
        defaults: &[(&str, String)],
    ) -> Result<Metered, MeterError> {
        let active = self.plugin(&request.plugin)?;
        let settings = self
            .settings(request.tenant, &active)?
            .ok_or_else(|| MeterError::NotEnabled(request.plugin.clone()))?;
        if defaults
            .iter()
            .all(|(name, _)| settings.contains_key(*name))
        {
            return self.metered(request, true, Some(settings));
        }
        let mut merged = (*settings).clone();
        for (name, value) in defaults {
            merged
                .entry((*name).to_owned())
                .or_insert_with(|| value.clone());
        }
        self.metered(request, true, Some(Arc::new(merged)))
    }

    /// Runs a call for the platform itself, with `settings`, in the same
    /// sandbox and limits as any call, but charged to no tenant and
    /// recorded only in the log and metrics: a payment provider's
    /// notification, which names its tenant only once parsed.
    pub fn invoke_for_platform(
        &self,
        plugin: &str,
        call: Call,
        settings: &Settings,
    ) -> Result<Result<Reply, CallError>, MeterError> {
        let active = self.plugin(plugin)?;
        let function = call.function();
        if call.kind() != active.kind {
            return Err(MeterError::WrongFunction {
                plugin: plugin.to_owned(),
                kind: active.kind,
                function,
            });
        }
        let mut http = self.http.clone();
        http.allowed_hosts = active.manifest.http_hosts.clone();
        let context = CallContext {
            settings: settings.clone(),
            kv: Arc::new(crate::runtime::MemoryKv::default()),
            http,
            ..CallContext::new("platform".to_owned())
        };
        let invocation = self.registry.runtime().invoke(&active, context, call);
        let outcome = match &invocation.result {
            Ok(_) => OUTCOME_OK,
            Err(CallError::Plugin { .. }) => OUTCOME_PLUGIN_ERROR,
            Err(_) => OUTCOME_PLATFORM_ERROR,
        };
        crate::metrics::global()
            .calls
            .get_or_create(&crate::metrics::CallLabels {
                plugin: plugin.to_owned(),
                function: function.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        tracing::info!(
            plugin,
            function,
            outcome,
            fuel = invocation.fuel_consumed,
            "platform call"
        );
        Ok(invocation.result)
    }

    /// A metered call; `rules` says whether a pricing rule bound to the
    /// tenant adjusts its price (never for the rule's own calls);
    /// `merchant` gives the settings of a call made with the merchant's
    /// settings rather than the tenant's.
    fn metered(
        &self,
        request: Request,
        rules: bool,
        merchant: Option<Arc<Settings>>,
    ) -> Result<Metered, MeterError> {
        self.started(request, rules, merchant)
            .and_then(Started::wait)
    }

    /// Runs the call up to its settlement: see [`Started`].
    fn started(
        &self,
        request: Request,
        rules: bool,
        merchant: Option<Arc<Settings>>,
    ) -> Result<Started, MeterError> {
        let plugin = request.plugin.clone();
        match self.invoke_inner(request, rules, merchant) {
            Ok((metered, settling)) => Ok(Started {
                plugin,
                metered,
                settling,
            }),
            Err(error) => {
                observe(plugin, Err(&error));
                Err(error)
            }
        }
    }

    fn invoke_inner(
        &self,
        request: Request,
        rules: bool,
        merchant: Option<Arc<Settings>>,
    ) -> Result<(Metered, Option<leases::Waiting>), MeterError> {
        let Request {
            tenant,
            plugin: name,
            call,
            idempotency_key,
        } = request;
        let now = self.clock.now();
        let plugin = self.plugin(&name)?;
        let function = call.function();
        if call.kind() != plugin.kind {
            return Err(MeterError::WrongFunction {
                plugin: name,
                kind: plugin.kind,
                function,
            });
        }
        let standing = self.standing(tenant)?;
        if standing.suspended {
            return Err(MeterError::Suspended);
        }
        let reseller = standing.reseller.as_ref();
        // A reseller's own plugin serves it and its tenants alone, and the
        // platform charges it the reseller-plugin price for each call.
        if let Some(owner) = plugin.owner
            && owner != tenant
            && reseller.map(|reseller| reseller.id) != Some(owner)
        {
            return Err(MeterError::Plugin(PluginError::NotInstalled(name)));
        }
        let settings = match merchant {
            Some(settings) => settings,
            None => self
                .settings(tenant, &plugin)?
                .ok_or_else(|| MeterError::NotEnabled(name.clone()))?,
        };
        let price = match plugin.owner {
            Some(_) => std::borrow::Cow::Owned(self.book.reseller_plugin_price(&name, function)),
            None => std::borrow::Cow::Borrowed(self.book.price(tenant, &name, function, now)?),
        };
        let own_price =
            reseller.and_then(|reseller| reseller.prices.own_price(tenant, &name, function, now));
        let period = period_of(now);
        // Either price may depend on the period's earlier units.
        let uses_period = price.uses_period() || own_price.is_some_and(Price::uses_period);
        let period_units = match uses_period {
            true => {
                let mut conn = self.database.get()?;
                period_units(&mut conn, tenant, &name, function, &period)?
            }
            false => 0,
        };
        let max_units = max_units(&call);
        let plan = self.plan_of(tenant)?;
        let plan = plan.as_deref();
        let wallet = self.wallet(tenant)?;
        // A pricing rule bound to the tenant adjusts the quote: the most the
        // call may cost, then what it cost. It is a metered call of its own.
        let rule = match rules {
            true => self.book.rule(tenant, plan).filter(|rule| *rule != name),
            false => None,
        };
        let adjust = |base: Credits, units: u64| -> Result<Credits, MeterError> {
            match rule {
                Some(rule) if base > Credits::ZERO => self.adjust(
                    rule,
                    tenant,
                    plan,
                    &name,
                    function,
                    units,
                    period_units,
                    base,
                ),
                _ => Ok(base),
            }
        };
        let usage_max = Usage {
            plan,
            period_units,
            units: max_units,
            fuel: plugin.limits.fuel,
        };
        let held_platform = adjust(price.max_charge(usage_max), max_units)?;
        // A resold tenant pays its reseller's retail price; the reseller
        // pays the platform's for the same call.
        let (held, wholesale_held) = match reseller {
            Some(reseller) => (
                reseller
                    .prices
                    .charge(own_price, held_platform, usage_max, true),
                held_platform,
            ),
            None => (held_platform, Credits::ZERO),
        };
        let call_id = new_call_id();
        let created_at = self.clock.now().micros();
        let record = UsageRow {
            id: call_id.clone(),
            tenant_id: tenant.0,
            plugin: name.clone(),
            version: plugin.version.clone(),
            function: function.to_owned(),
            units: 0,
            credits: 0,
            held: held.micros(),
            fuel: 0,
            duration_us: 0,
            outcome: OUTCOME_PENDING.to_owned(),
            error: None,
            idempotency_key,
            period,
            state: STATE_INVOKING.to_owned(),
            created_at,
            reseller_id: reseller.map(|reseller| reseller.id.0),
            wholesale_held: wholesale_held.micros(),
            wholesale: 0,
        };
        // A busy wallet's call reserves on this host's lease; any other
        // holds its own credits.
        let leased = match reseller {
            None if held > Credits::ZERO => {
                self.leases.reserve(wallet, held.micros(), self.clock.now())
            }
            _ => None,
        };
        if leased.is_none() {
            match self.hold(&record, wallet, reseller, &name, function) {
                // This host's lease held part of the balance: given back,
                // the call may fit.
                Err(MeterError::InsufficientCredits { .. })
                    if reseller.is_none() && self.leases.give_back(wallet) =>
                {
                    self.hold(&record, wallet, reseller, &name, function)?
                }
                held => held?,
            }
        }
        let mut http = self.http.clone();
        http.allowed_hosts = plugin.manifest.http_hosts.clone();
        let context = CallContext {
            settings: Settings::clone(&settings),
            kv: Arc::new(DbKv::new(
                self.database.clone(),
                tenant,
                &name,
                self.clock.clone(),
            )),
            http,
            ..CallContext::new(tenant.to_string())
        };
        let invocation = self.registry.runtime().invoke(&plugin, context, call);

        let (outcome, error, reported) = match &invocation.result {
            Ok(reply) => (OUTCOME_OK, None, reply.units()),
            Err(error @ CallError::Plugin { .. }) => (OUTCOME_PLUGIN_ERROR, Some(error), 0),
            Err(error) => (OUTCOME_PLATFORM_ERROR, Some(error), 0),
        };
        // A plugin cannot be charged for more units than were held for.
        let units = reported.min(max_units);
        let usage = match outcome {
            OUTCOME_OK => Some(Usage {
                plan,
                period_units,
                units,
                fuel: invocation.fuel_consumed,
            }),
            OUTCOME_PLUGIN_ERROR if price.charge_failed => Some(Usage {
                plan,
                period_units,
                units: 0,
                fuel: invocation.fuel_consumed,
            }),
            _ => None,
        };
        let charged = usage.map_or(Credits::ZERO, |usage| price.charge(usage));
        // The call ran: if the rule fails now, the unadjusted charge stands.
        let charged = adjust(charged, units)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, call = %call_id, "pricing rule failed at settlement; charging the configured price");
                charged
            })
            .min(held_platform);
        let (charged, wholesale) = match (reseller, usage) {
            (Some(reseller), Some(usage)) => (
                reseller
                    .prices
                    .charge(own_price, charged, usage, false)
                    .min(held),
                charged,
            ),
            (Some(_), None) => (Credits::ZERO, Credits::ZERO),
            (None, _) => (charged, Credits::ZERO),
        };
        let settled = UsageRow {
            units: units as i64,
            credits: charged.micros(),
            wholesale: wholesale.micros(),
            fuel: invocation.fuel_consumed as i64,
            duration_us: invocation.duration.as_micros() as i64,
            outcome: outcome.to_owned(),
            error: error.map(|error| error.to_string()),
            state: STATE_SETTLED.to_owned(),
            ..record
        };
        let (balance, settling) = match leased {
            Some(reserved) => (None, Some(self.leases.settle(reserved, settled))),
            None => (self.settle(settled, reseller)?, None),
        };
        let metered = Metered {
            balance,
            call_id,
            function,
            version: plugin.version.clone(),
            result: invocation.result,
            units,
            charged,
            fuel: invocation.fuel_consumed,
            duration: invocation.duration,
        };
        Ok((metered, settling))
    }

    /// Asks the pricing rule `rule` for the price of `units` of
    /// `plugin`'s `function` whose configured price is `base`.
    #[allow(clippy::too_many_arguments)]
    fn adjust(
        &self,
        rule: &str,
        tenant: TenantId,
        plan: Option<&str>,
        plugin: &str,
        function: &str,
        units: u64,
        period_units: u64,
        base: Credits,
    ) -> Result<Credits, MeterError> {
        let request = Request {
            tenant,
            plugin: rule.to_owned(),
            call: Call::AdjustPrice(crate::runtime::PriceRequest {
                plan: plan.map(str::to_owned),
                plugin: plugin.to_owned(),
                function: function.to_owned(),
                units,
                period_units,
                base_price_micros: base.micros().max(0) as u64,
            }),
            idempotency_key: None,
        };
        let failed = |reason: String| MeterError::PricingRule {
            rule: rule.to_owned(),
            reason,
        };
        let metered = self
            .metered(request, false, None)
            .map_err(|error| failed(error.to_string()))?;
        match metered.result {
            Ok(Reply::Price(price)) => Ok(Credits::from_micros(
                i64::try_from(price.price_micros).unwrap_or(i64::MAX),
            )),
            Ok(_) => Err(failed(
                "it answered with something other than a price".into(),
            )),
            Err(error) => Err(failed(error.to_string())),
        }
    }

    /// The loaded plugins this meter calls.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The tenant's wallet: an account id never changes, so it is looked
    /// up once per tenant.
    fn wallet(&self, tenant: TenantId) -> Result<AccountId, MeterError> {
        if let Some(wallet) = self.wallets.lock().expect("wallets lock").get(&tenant.0) {
            return Ok(*wallet);
        }
        let wallet = queries::wallet_of(&mut *self.database.get()?, tenant)?;
        self.wallets
            .lock()
            .expect("wallets lock")
            .insert(tenant.0, wallet);
        Ok(wallet)
    }
}

/// Counts a call in the metrics: what it did and cost, or why it was
/// refused.
fn observe(plugin: String, result: Result<&Metered, &MeterError>) {
    let metrics = crate::metrics::global();
    match result {
        Ok(metered) => {
            let (outcome, error_kind) = match &metered.result {
                Ok(_) => (OUTCOME_OK, None),
                Err(CallError::Plugin { error, .. }) => {
                    (OUTCOME_PLUGIN_ERROR, Some(format!("{:?}", error.kind)))
                }
                Err(error) => (OUTCOME_PLATFORM_ERROR, Some(stop_kind(error).to_owned())),
            };
            metrics
                .calls
                .get_or_create(&crate::metrics::CallLabels {
                    plugin: plugin.clone(),
                    function: metered.function.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc();
            let labels = crate::metrics::PluginLabels {
                plugin: plugin.clone(),
            };
            metrics
                .call_seconds
                .get_or_create(&labels)
                .observe(metered.duration.as_secs_f64());
            metrics
                .credits_charged_micros
                .get_or_create(&labels)
                .inc_by(metered.charged.micros().max(0) as u64);
            if let Some(kind) = error_kind {
                metrics
                    .plugin_errors
                    .get_or_create(&crate::metrics::ErrorLabels { plugin, kind })
                    .inc();
            }
        }
        Err(error) => {
            let reason = match error {
                MeterError::InsufficientCredits { .. } => "insufficient_credits",
                MeterError::ResellerBalanceExhausted { .. } => "reseller_balance_exhausted",
                MeterError::Suspended => "suspended",
                MeterError::NotEnabled(_) => "not_enabled",
                MeterError::Unpriced(_) => "unpriced",
                MeterError::PricingRule { .. } => "pricing_rule",
                MeterError::WrongFunction { .. } => "unknown_function",
                MeterError::Plugin(PluginError::NotInstalled(_)) => "unknown_plugin",
                _ => "platform_error",
            };
            metrics
                .refused
                .get_or_create(&crate::metrics::RefusalLabels {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }
}

/// Counts completed calls: their units towards their periods' counters,
/// and the calls into the usage rollups.
fn count(conn: &mut DbConnection, records: &[&UsageRow]) -> QueryResult<()> {
    // One upsert per counter, however many calls of the batch it counts.
    let mut counted: std::collections::BTreeMap<(i64, &str, &str, &str), i64> = Default::default();
    for record in records.iter().filter(|record| record.units > 0) {
        let key = (
            record.tenant_id,
            record.plugin.as_str(),
            record.function.as_str(),
            record.period.as_str(),
        );
        *counted.entry(key).or_default() += record.units;
    }
    for ((tenant_id, plugin, function, period), units) in counted {
        add_units(conn, tenant_id, plugin, function, period, units)?;
    }
    crate::analytics::usage::record(conn, records)
}

/// What stopped a call that did not finish, for metrics.
fn stop_kind(error: &CallError) -> &'static str {
    match error {
        CallError::Plugin { .. } => "plugin",
        CallError::WrongFunction { .. } => "wrong_function",
        CallError::FuelExhausted { .. } => "fuel",
        CallError::Timeout { .. } => "timeout",
        CallError::MemoryLimit { .. } => "memory",
        CallError::OutputTooLarge { .. } => "output",
        CallError::Trap { .. } => "crash",
        CallError::Host { .. } => "host",
    }
}

/// A UUIDv7 in 32 hex digits: unique, and ordered by time, so records
/// and transfers keyed by call ids are appended to their indexes.
fn new_call_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A usage record as stored.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_records, treat_none_as_default_value = false)]
pub struct UsageRow {
    pub id: String,
    pub tenant_id: i64,
    pub plugin: String,
    pub version: String,
    pub function: String,
    pub units: i64,
    pub credits: i64,
    pub held: i64,
    pub fuel: i64,
    pub duration_us: i64,
    pub outcome: String,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub period: String,
    pub state: String,
    pub created_at: i64,
    /// A resold tenant's reseller; `credits` and `held` are then at its
    /// retail prices, and these at the platform's.
    pub reseller_id: Option<i64>,
    pub wholesale_held: i64,
    pub wholesale: i64,
}

fn period_units(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    function: &str,
    period: &str,
) -> QueryResult<u64> {
    let units: Option<i64> = usage_counters::table
        .find((tenant.0, plugin, function, period))
        .select(usage_counters::units)
        .first(conn)
        .optional()?;
    Ok(units.unwrap_or(0).max(0) as u64)
}

/// Adds a record's units to its period's counter: one upsert, so the
/// first calls of a period, arriving together, all count.
fn add_units(
    conn: &mut DbConnection,
    tenant_id: i64,
    plugin: &str,
    function: &str,
    period: &str,
    units: i64,
) -> QueryResult<()> {
    db::upsert!(
        conn,
        usage_counters::table,
        (
            usage_counters::tenant_id.eq(tenant_id),
            usage_counters::plugin.eq(plugin),
            usage_counters::function.eq(function),
            usage_counters::period.eq(period),
            usage_counters::units.eq(units),
        ),
        (
            usage_counters::tenant_id,
            usage_counters::plugin,
            usage_counters::function,
            usage_counters::period,
        ),
        usage_counters::units.eq(usage_counters::units + units)
    );
    Ok(())
}

/// A tenant's usage records, newest first.
pub fn records(
    conn: &mut DbConnection,
    tenant: TenantId,
    limit: i64,
) -> QueryResult<Vec<UsageRow>> {
    usage_records::table
        .filter(usage_records::tenant_id.eq(tenant.0))
        .order((usage_records::created_at.desc(), usage_records::id.desc()))
        .limit(limit)
        .select(UsageRow::as_select())
        .load(conn)
}

#[cfg(test)]
mod tests;

/// Most usage records one page holds.
pub const RECORDS_PAGE_MAX: i64 = 500;

/// Where a page of usage records continues: the last record's time and id.
pub type RecordCursor = (i64, String);

/// A tenant's usage records, newest first, older than `before`, with the
/// cursor of the next page.
pub fn records_page(
    conn: &mut DbConnection,
    tenant: TenantId,
    before: Option<RecordCursor>,
    limit: i64,
) -> QueryResult<(Vec<UsageRow>, Option<RecordCursor>)> {
    let limit = limit.clamp(1, RECORDS_PAGE_MAX);
    let mut query = usage_records::table
        .filter(usage_records::tenant_id.eq(tenant.0))
        .order((usage_records::created_at.desc(), usage_records::id.desc()))
        .limit(limit + 1)
        .select(UsageRow::as_select())
        .into_boxed();
    if let Some((at, id)) = before {
        query = query.filter(
            usage_records::created_at
                .lt(at)
                .or(usage_records::created_at
                    .eq(at)
                    .and(usage_records::id.lt(id))),
        );
    }
    let mut rows = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match more {
        true => rows.last().map(|row| (row.created_at, row.id.clone())),
        false => None,
    };
    Ok((rows, next))
}

/// Longest range, in days, a usage report sums over.
pub const DAILY_RANGE_DAYS_MAX: i64 = 366;
