//! Configuration: `tollgate.toml`, `plans.toml` and `pricing.toml`, parsed once
//! at start and validated into domain types.
//!
//! Settings apply in this order: built-in defaults, then the file, then
//! environment variables `TOLLGATE__SECTION__KEY` (for `tollgate.toml` only).
//! Every error names the file (or variable), the key and the reason. The rest
//! of the host never sees raw TOML. What the process is told on its command
//! line (which file, which database) lives in `main.rs`, not here.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::pricing::{ChargeModel, Price, PriceBook, ResellerPluginPrice, RuleBinding, Tier};
use crate::units::{Credits, Currency, Money, Timestamp};

/// Prefix of environment variables that override `tollgate.toml`.
pub const ENV_PREFIX: &str = "TOLLGATE__";

/// A config file larger than this is certainly a mistake (a log, a binary).
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// More plans or packages than this is no longer a price list anyone reads.
const PLANS_MAX: usize = 1_000;
const PACKAGES_MAX: usize = 1_000;

/// Ids are short, stable, machine-readable names: `starter`, `pack-500`.
const ID_BYTES_MAX: usize = 64;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub plans: Vec<Plan>,
    pub pricing: Pricing,
}

/// `tollgate.toml`: what this installation runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub ledger: LedgerSettings,
    pub limits: LimitSettings,
    /// Paths of the other two files, relative to `tollgate.toml`'s folder.
    pub files: FileSettings,
    pub billing: BillingSettings,
    pub payments: PaymentSettings,
    pub analytics: AnalyticsSettings,
    pub mail: MailSettings,
}

/// The SMTP server system emails (invoices, payments, a reseller's wallet
/// alerts) go out through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// Empty: system emails wait in the outbox, unsent, until a server is
    /// set.
    pub smtp_host: String,
    /// 0: 465 for `tls`, else 587.
    pub smtp_port: u16,
    /// `starttls` (required), `tls` (implicit, usually port 465) or
    /// `none` (a relay on this machine or a test server only).
    pub smtp_security: String,
    /// Both or neither.
    pub smtp_username: String,
    pub smtp_password: String,
    /// The sender of the platform's own emails, and the envelope sender
    /// (where bounces go) of every system email.
    pub from_address: String,
    /// The name the platform's own emails come from; empty: the billing
    /// issuer's.
    pub from_name: String,
}

impl MailSettings {
    /// Whether a server is set: emails wait in the outbox until one is.
    pub fn configured(&self) -> bool {
        !self.smtp_host.trim().is_empty()
    }
}

/// What the analytics reports assume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// A customer is at risk when the credits it used in a month fell by
    /// at least this share against the month before: 0.5 for half.
    pub at_risk_usage_drop: Decimal,
    /// How many customers the revenue report's top list shows.
    pub top_customers: u32,
    /// Months the revenue forecast looks ahead.
    pub forecast_months: u32,
    /// What an hour of a sales rep's time costs, in the pricing currency:
    /// the ROI report prices the manual baselines with it.
    pub hourly_cost: Decimal,
    /// What each action would take by hand, for the ROI report.
    pub baselines: Vec<Baseline>,
}

/// The manual cost of what one plugin function does: `minutes` of a rep's
/// time per unit it returns (a lead researched) or per call (an email
/// written and sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// A plugin name, or "*" for any plugin with this function.
    pub plugin: String,
    pub function: String,
    pub per: BaselinePer,
    pub minutes: Decimal,
    /// What the report calls the action: "lead researched by hand".
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselinePer {
    Unit,
    Call,
}

/// Longest forecast and top list, and most baselines, the settings accept.
pub const FORECAST_MONTHS_MAX: u32 = 24;
pub const TOP_CUSTOMERS_MAX: u32 = 1_000;
pub const BASELINES_MAX: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Where people reach this platform from outside, such as
    /// `https://tollgate.example.com`: the origin of the tracking,
    /// unsubscribe and callback links put in messages. Empty: the
    /// `listen` address over http (a developer's machine; one-click
    /// unsubscribe headers need https).
    pub public_url: String,
}

impl ServerSettings {
    /// The public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match self.public_url.trim() {
            "" => format!("http://{}", self.listen),
            url => url.trim_end_matches('/').to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Where the embedded database and caches live; relative paths are taken
    /// from the working directory.
    pub data_dir: PathBuf,
    /// Empty: the embedded SQLite database `<data_dir>/tollgate.db`.
    /// Otherwise `postgres://...` or `sqlite://<path>`.
    pub database_url: String,
    /// Read connections kept open; writes go through the ledger's writer.
    pub pool_size: u32,
    /// The key that seals secret plugin settings; empty means
    /// `<data_dir>/secret.key`, created on first use. Hosts sharing one
    /// database must share this file.
    pub secret_key_file: PathBuf,
}

impl StorageSettings {
    /// Where the secret key is.
    pub fn secret_key_path(&self) -> PathBuf {
        match self.secret_key_file.as_os_str().is_empty() {
            true => self.data_dir.join("secret.key"),
            false => self.secret_key_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Transfers applied in one commit at most (group commit).
    pub batch_transfers_max: u32,
    /// How long a hold lives when its creator does not say.
    pub hold_timeout_seconds_default: u32,
    /// The longest hold anyone may ask for.
    pub hold_timeout_seconds_max: u32,
    /// How often expired grants and forgotten holds are swept.
    pub expiry_sweep_seconds: u32,
    /// A wallet making this many metered calls within 100 ms gets a lease
    /// (`metering::leases`); 0 turns leases off.
    pub lease_after_calls: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub request_body_bytes_max: u32,
    /// API requests one tenant may make per second, sustained; more get 429.
    pub tenant_requests_per_second: u32,
    /// Requests a tenant may make at once above the sustained rate.
    pub tenant_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    pub plans: PathBuf,
    pub pricing: PathBuf,
}

/// Who issues invoices, and the tax they charge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    /// The name printed on invoices; each issuer's invoices and credit
    /// notes are numbered in series of their own.
    pub issuer: String,
    /// The issuer's address as printed, lines separated by newlines.
    pub issuer_address: String,
    /// Tax charged on every invoice, as a fraction: "0.2" for 20%.
    pub tax_rate: Decimal,
    /// What invoices call the tax ("VAT", "Sales tax").
    pub tax_name: String,
}

/// How the platform takes payments: the merchant's settings for each
/// payment-provider plugin, and the dunning schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// After a renewal's payment fails, try again this many days after the
    /// previous attempt, once per entry; when the last retry fails the
    /// invoice is uncollectible and the subscription is canceled.
    pub dunning_retry_days: Vec<u32>,
    /// The platform's own settings (it is the merchant) for each
    /// payment-provider plugin, by plugin name: `[payments.providers.card]
    /// secret_key = "..."`. A provider without a table here takes no
    /// payments. Secret values are best given in the environment:
    /// `TOLLGATE__PAYMENTS__PROVIDERS__CARD__SECRET_KEY`.
    pub providers: BTreeMap<String, BTreeMap<String, String>>,
}

/// Retries of a failed renewal at most: the schedule is the operator's,
/// but a tenant should not be dunned forever.
pub const DUNNING_RETRIES_MAX: usize = 12;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: ServerSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                public_url: String::new(),
            },
            storage: StorageSettings {
                data_dir: PathBuf::from("data"),
                database_url: String::new(),
                pool_size: 8,
                secret_key_file: PathBuf::new(),
            },
            ledger: LedgerSettings {
                batch_transfers_max: 1_000,
                hold_timeout_seconds_default: 300,
                hold_timeout_seconds_max: 86_400,
                expiry_sweep_seconds: 1,
                lease_after_calls: 32,
            },
            limits: LimitSettings {
                request_body_bytes_max: 1 << 20,
                tenant_requests_per_second: 1_000,
                tenant_burst: 2_000,
            },
            files: FileSettings {
                plans: PathBuf::from("plans.toml"),
                pricing: PathBuf::from("pricing.toml"),
            },
            billing: BillingSettings {
                issuer: "Tollgate".to_owned(),
                issuer_address: String::new(),
                tax_rate: Decimal::ZERO,
                tax_name: "Tax".to_owned(),
            },
            payments: PaymentSettings {
                dunning_retry_days: vec![1, 1, 8],
                providers: BTreeMap::new(),
            },
            analytics: AnalyticsSettings {
                at_risk_usage_drop: Decimal::new(5, 1),
                top_customers: 10,
                forecast_months: 3,
                hourly_cost: Decimal::new(40, 0),
                baselines: default_baselines(),
            },
            mail: MailSettings {
                smtp_host: String::new(),
                smtp_port: 0,
                smtp_security: "starttls".to_owned(),
                smtp_username: String::new(),
                smtp_password: String::new(),
                from_address: "billing@localhost".to_owned(),
                from_name: String::new(),
            },
        }
    }
}

/// Minutes a rep spends by hand on what the first-party plugins do.
fn default_baselines() -> Vec<Baseline> {
    let baseline = |function: &str, per, minutes: i64, label: &str| Baseline {
        plugin: "*".to_owned(),
        function: function.to_owned(),
        per,
        minutes: Decimal::new(minutes, 0),
        label: label.to_owned(),
    };
    vec![
        baseline(
            "search",
            BaselinePer::Unit,
            5,
            "lead found and researched by hand",
        ),
        baseline(
            "enrich",
            BaselinePer::Unit,
            3,
            "lead's details looked up by hand",
        ),
        baseline(
            "send",
            BaselinePer::Call,
            4,
            "message written and sent by hand",
        ),
    ]
}

macro_rules! default_from_settings {
    ($($ty:ident . $field:ident),*) => {$(
        impl Default for $ty {
            fn default() -> $ty {
                Settings::default().$field
            }
        }
    )*};
}
default_from_settings!(
    ServerSettings.server,
    StorageSettings.storage,
    LedgerSettings.ledger,
    LimitSettings.limits,
    FileSettings.files,
    BillingSettings.billing,
    PaymentSettings.payments,
    AnalyticsSettings.analytics,
    MailSettings.mail
);

/// A subscription plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub price: Money,
    pub interval: Interval,
    /// Credits granted each period.
    pub credits: Credits,
    pub carryover: Carryover,
    /// A custom plan (enterprise pricing) only this tenant may subscribe
    /// to and see; `None` for a plan on general sale.
    pub tenant: Option<TenantId>,
    /// Percent taken off every period's price (a negotiated or promotional
    /// price): 10 for 10% off. Invoices show it as a line of its own, and
    /// MRR counts the price net of it.
    pub discount_percent: Decimal,
}

impl Plan {
    /// What the discount takes off a period's price, in minor units,
    /// rounded half away from zero to the minor unit.
    pub fn discount_minor(&self) -> i64 {
        let off = Decimal::from(self.price.minor) * self.discount_percent / Decimal::ONE_HUNDRED;
        off.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .try_into()
            .unwrap_or(0)
    }

    /// A period's price net of the discount, in minor units.
    pub fn net_minor(&self) -> i64 {
        self.price.minor - self.discount_minor()
    }

    /// The plan's monthly recurring revenue, in twelfths of a minor unit:
    /// the net price times 12 for a monthly plan, the net price itself for
    /// an annual one (a twelfth of it a month). Kept in twelfths so that
    /// annual plans sum exactly and round once, when reported.
    pub fn mrr_12(&self) -> i64 {
        match self.interval {
            Interval::Month => self.net_minor() * 12,
            Interval::Year => self.net_minor(),
        }
    }

    /// Whether `tenant` may see and subscribe to this plan.
    pub fn offered_to(&self, tenant: TenantId) -> bool {
        self.tenant.is_none_or(|only| only == tenant)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Month,
    Year,
}

/// How much unused allowance rolls into the next period, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carryover {
    /// At most this many unused credits roll over; zero means none do.
    pub credits_max: Credits,
    /// Carried credits expire this many periods after they were carried.
    pub expires_after_periods: u32,
}

/// `pricing.toml`: what credits cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub currency: Currency,
    /// The list price of one credit, before any discount.
    pub credit_price: Decimal,
    pub packages: Vec<CreditPackage>,
    /// What each plugin function costs, and which pricing rules adjust it.
    pub book: PriceBook,
}

/// A bulk credit package with its volume discount, priced once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPackage {
    pub id: String,
    pub credits: Credits,
    pub discount_percent: Decimal,
    /// `credits × credit_price × (1 − discount)`, rounded half away from zero
    /// to the currency's minor unit.
    pub price: Money,
}

impl Config {
    /// Loads `tollgate.toml` from `path`, the plans and pricing files it names,
    /// and the environment's overrides.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let settings = load_settings(path, env)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let plans_path = dir.join(&settings.files.plans);
        let pricing_path = dir.join(&settings.files.pricing);
        let plans = parse_plans(&plans_path, &read_file(&plans_path)?)?;
        let pricing = parse_pricing(&pricing_path, &read_file(&pricing_path)?)?;
        // Plans named by prices and rules must exist.
        let known = |plan: &str| plans.iter().any(|known| known.id == plan);
        for (index, price) in pricing.book.prices.iter().enumerate() {
            if let Some(plan) = price.free_units.keys().find(|plan| !known(plan)) {
                anyhow::bail!(
                    "{}: price[{index}].free_units: no plan {plan:?} in {}",
                    pricing_path.display(),
                    plans_path.display()
                );
            }
        }
        for (index, rule) in pricing.book.rules.iter().enumerate() {
            if let Some(plan) = rule.plan.as_deref().filter(|plan| !known(plan)) {
                anyhow::bail!(
                    "{}: rule[{index}].plan: no plan {plan:?} in {}",
                    pricing_path.display(),
                    plans_path.display()
                );
            }
        }
        Ok(Config {
            settings,
            plans,
            pricing,
        })
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|plan| plan.id == id)
    }
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        metadata.len() <= CONFIG_FILE_BYTES_MAX,
        "{}: {} bytes is more than a config file may hold ({CONFIG_FILE_BYTES_MAX})",
        path.display(),
        metadata.len()
    );
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads `tollgate.toml` and applies `TOLLGATE__SECTION__KEY` overrides.
pub fn load_settings(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Settings> {
    let text = read_file(path)?;
    parse_settings(path, &text, env)
}

pub fn parse_settings(
    path: &Path,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Settings> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let known = known_keys();
    let mut overridden = BTreeMap::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        // Provider settings are named by the plugin, not by Tollgate.
        if !known.contains(&key) && !key.starts_with("payments.providers.") {
            tracing::warn!(variable = %name, "environment variable does not name a setting; ignored");
            continue;
        }
        set_path(&mut table, &key, env_value(&raw));
        overridden.insert(key, name);
    }
    let deserializer = toml::Value::Table(table);
    let source = |key: &str| match overridden.get(key) {
        Some(variable) => format!("{variable} (overriding {})", path.display()),
        None => path.display().to_string(),
    };
    let settings: Settings = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        anyhow::anyhow!("{}: {key}: {}", source(&key), error.inner())
    })?;
    let billing = &settings.billing;
    if billing.tax_rate.is_sign_negative() || billing.tax_rate >= Decimal::ONE {
        anyhow::bail!(
            "{}: billing.tax_rate: {} is not a fraction from 0 up to 1 (write 0.2 for 20%)",
            source("billing.tax_rate"),
            billing.tax_rate
        );
    }
    let retries = &settings.payments.dunning_retry_days;
    if retries.len() > DUNNING_RETRIES_MAX || retries.contains(&0) {
        anyhow::bail!(
            "{}: payments.dunning_retry_days: give at most {DUNNING_RETRIES_MAX} retries, each at least 1 day after the previous attempt",
            source("payments.dunning_retry_days")
        );
    }
    let mail = &settings.mail;
    if !["starttls", "tls", "none"].contains(&mail.smtp_security.as_str()) {
        anyhow::bail!(
            "{}: mail.smtp_security is {:?}; use starttls, tls or none",
            source("mail.smtp_security"),
            mail.smtp_security
        );
    }
    if mail.smtp_username.is_empty() != mail.smtp_password.is_empty() {
        anyhow::bail!(
            "{}: mail: set both smtp_username and smtp_password, or neither",
            source("mail")
        );
    }
    if let Err(error) = mail.from_address.parse::<lettre::Address>() {
        anyhow::bail!(
            "{}: mail.from_address {:?} is not an email address: {error}",
            source("mail.from_address"),
            mail.from_address
        );
    }
    let analytics = &settings.analytics;
    if analytics.at_risk_usage_drop <= Decimal::ZERO || analytics.at_risk_usage_drop > Decimal::ONE
    {
        anyhow::bail!(
            "{}: analytics.at_risk_usage_drop: {} is not a share above 0 and up to 1 (write 0.5 for half)",
            source("analytics.at_risk_usage_drop"),
            analytics.at_risk_usage_drop
        );
    }
    if !(1..=FORECAST_MONTHS_MAX).contains(&analytics.forecast_months)
        || !(1..=TOP_CUSTOMERS_MAX).contains(&analytics.top_customers)
    {
        anyhow::bail!(
            "{}: analytics: forecast_months must be 1 to {FORECAST_MONTHS_MAX} and top_customers 1 to {TOP_CUSTOMERS_MAX}",
            source("analytics")
        );
    }
    if analytics.hourly_cost.is_sign_negative() {
        anyhow::bail!(
            "{}: analytics.hourly_cost must not be negative",
            source("analytics.hourly_cost")
        );
    }
    if analytics.baselines.len() > BASELINES_MAX {
        anyhow::bail!(
            "{}: analytics.baselines: at most {BASELINES_MAX}",
            source("analytics.baselines")
        );
    }
    for (index, baseline) in analytics.baselines.iter().enumerate() {
        if baseline.minutes.is_sign_negative()
            || baseline.function.is_empty()
            || baseline.plugin.is_empty()
        {
            anyhow::bail!(
                "{}: analytics.baselines[{index}]: name a plugin (or \"*\") and a function, and minutes not below 0",
                source("analytics.baselines")
            );
        }
    }
    let public_url = settings.server.public_url.trim();
    if !public_url.is_empty()
        && !((public_url.starts_with("https://") || public_url.starts_with("http://"))
            && public_url.split("://").nth(1).is_some_and(|rest| {
                let host = rest.trim_end_matches('/');
                !host.is_empty() && !host.contains(['/', '?', '#', ' '])
            }))
    {
        anyhow::bail!(
            "{}: server.public_url: {public_url:?} is not an origin such as https://tollgate.example.com (a scheme and a host, no path)",
            source("server.public_url")
        );
    }
    if billing.issuer.trim().is_empty() {
        anyhow::bail!(
            "{}: billing.issuer: name who issues the invoices",
            source("billing.issuer")
        );
    }
    Ok(settings)
}

/// Every leaf key of `tollgate.toml`, dotted: `server.listen`.
fn known_keys() -> HashSet<String> {
    fn walk(prefix: &str, table: &toml::Table, keys: &mut HashSet<String>) {
        for (key, value) in table {
            let path = match prefix {
                "" => key.clone(),
                _ => format!("{prefix}.{key}"),
            };
            match value {
                toml::Value::Table(inner) => walk(&path, inner, keys),
                _ => {
                    keys.insert(path);
                }
            }
        }
    }
    let defaults = toml::Table::try_from(Settings::default()).expect("defaults serialize");
    let mut keys = HashSet::new();
    walk("", &defaults, &mut keys);
    keys
}

/// An environment value is read as a TOML value when it is one (`8`,
/// `true`), and as a string otherwise (`0.0.0.0:80`, a URL).
fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("value = {raw}")) {
        Ok(mut table) => table.remove("value").expect("just parsed"),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("split yields one part at least");
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("made a table above");
    }
    current.insert(last.to_owned(), value);
}

/// A validation failure: which key and why. The file is added by the caller.
struct Invalid {
    key: String,
    reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn parse_file<Raw: serde::de::DeserializeOwned, T>(
    path: &Path,
    text: &str,
    validate: impl FnOnce(Raw) -> Result<T, Invalid>,
) -> anyhow::Result<T> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let raw: Raw = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        anyhow::anyhow!("{}: {}: {}", path.display(), error.path(), error.inner())
    })?;
    validate(raw)
        .map_err(|Invalid { key, reason }| anyhow::anyhow!("{}: {key}: {reason}", path.display()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlans {
    #[serde(default)]
    plan: Vec<RawPlan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    id: String,
    name: String,
    price: Decimal,
    currency: String,
    interval: Interval,
    credits: Decimal,
    carryover: RawCarryover,
    #[serde(default)]
    tenant: Option<i64>,
    #[serde(default)]
    discount_percent: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCarryover {
    credits_max: Decimal,
    #[serde(default = "one")]
    expires_after_periods: u32,
}

fn one() -> u32 {
    1
}

pub fn parse_plans(path: &Path, text: &str) -> anyhow::Result<Vec<Plan>> {
    parse_file(path, text, |raw: RawPlans| {
        if raw.plan.is_empty() {
            return Err(invalid("plan", "at least one [[plan]] is required"));
        }
        if raw.plan.len() > PLANS_MAX {
            return Err(invalid("plan", format!("more than {PLANS_MAX} plans")));
        }
        let mut seen = HashSet::new();
        raw.plan
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                let key = |field: &str| format!("plan[{index}].{field}");
                check_id(&plan.id, &key("id"))?;
                if !seen.insert(plan.id.clone()) {
                    return Err(invalid(
                        key("id"),
                        format!("duplicate plan id {:?}", plan.id),
                    ));
                }
                if plan.name.trim().is_empty() {
                    return Err(invalid(key("name"), "must not be empty"));
                }
                let currency = Currency::parse(&plan.currency)
                    .map_err(|error| invalid(key("currency"), error.to_string()))?;
                let price = positive_money(plan.price, currency, &key("price"))?;
                let credits = positive_credits(plan.credits, &key("credits"))?;
                let credits_max = Credits::from_decimal(plan.carryover.credits_max)
                    .map_err(|error| invalid(key("carryover.credits_max"), error.to_string()))?;
                if credits_max < Credits::ZERO {
                    return Err(invalid(
                        key("carryover.credits_max"),
                        "must not be negative",
                    ));
                }
                if plan.carryover.expires_after_periods == 0 {
                    return Err(invalid(
                        key("carryover.expires_after_periods"),
                        "must be at least 1: carried credits live one period or more",
                    ));
                }
                if plan.discount_percent < Decimal::ZERO
                    || plan.discount_percent >= Decimal::ONE_HUNDRED
                {
                    return Err(invalid(
                        key("discount_percent"),
                        "must be at least 0 and less than 100",
                    ));
                }
                Ok(Plan {
                    id: plan.id,
                    name: plan.name,
                    price,
                    interval: plan.interval,
                    credits,
                    carryover: Carryover {
                        credits_max,
                        expires_after_periods: plan.carryover.expires_after_periods,
                    },
                    tenant: plan.tenant.map(TenantId),
                    discount_percent: plan.discount_percent.normalize(),
                })
            })
            .collect()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    currency: String,
    credit_price: Decimal,
    #[serde(default)]
    package: Vec<RawPackage>,
    #[serde(default)]
    price: Vec<RawPrice>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    reseller_plugins: RawResellerPlugins,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResellerPlugins {
    #[serde(default)]
    per_call: Decimal,
    #[serde(default)]
    per_million_fuel: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    plugin: String,
    function: String,
    tenant: Option<i64>,
    effective_from: Option<String>,
    #[serde(default)]
    per_call: Decimal,
    #[serde(default = "standard")]
    model: String,
    per_unit: Option<Decimal>,
    package_size: Option<u64>,
    package_price: Option<Decimal>,
    #[serde(default)]
    package_free_units: u64,
    tiers: Option<Vec<RawTier>>,
    #[serde(default)]
    free_units: BTreeMap<String, u64>,
    #[serde(default)]
    per_million_fuel: Decimal,
    #[serde(default)]
    charge_failed: bool,
}

fn standard() -> String {
    "standard".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    up_to: Option<u64>,
    per_unit: Decimal,
    #[serde(default)]
    flat: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    rule: String,
    plan: Option<String>,
    tenant: Option<i64>,
}

/// The functions a price can name: every export of every plugin world.
const PRICED_FUNCTIONS: [&str; 7] = [
    "search",
    "enrich",
    "send",
    "parse-callback",
    "create-payment",
    "refund",
    "adjust-price",
];

/// Most prices and rule bindings one file may hold.
pub const PRICES_MAX: usize = 10_000;

/// The largest amount a price may name, in credits: small enough that no
/// call's charge can overflow.
const PRICE_CREDITS_MAX: u32 = 1_000_000_000;

fn parse_price(index: usize, raw: RawPrice) -> Result<Price, Invalid> {
    let key = |field: &str| format!("price[{index}].{field}");
    if raw.plugin.is_empty() || raw.plugin.len() > ID_BYTES_MAX {
        return Err(invalid(key("plugin"), "must be a plugin name"));
    }
    if !PRICED_FUNCTIONS.contains(&raw.function.as_str()) {
        return Err(invalid(
            key("function"),
            format!(
                "{:?} is not a plugin function; use one of {}",
                raw.function,
                PRICED_FUNCTIONS.join(", ")
            ),
        ));
    }
    let amount = |value: Decimal, field: &str| {
        if value.is_sign_negative() || value > Decimal::from(PRICE_CREDITS_MAX) {
            return Err(invalid(
                key(field),
                format!("must be 0 to {PRICE_CREDITS_MAX} credits, got {value}"),
            ));
        }
        Ok(value)
    };
    let field_for = |model: &str, field: &str, value: bool| match value {
        true => Err(invalid(
            key(field),
            format!("does not apply to model = {model:?}"),
        )),
        false => Ok(()),
    };
    let model = raw.model.as_str();
    let units = match model {
        "standard" => {
            field_for(model, "package_size", raw.package_size.is_some())?;
            field_for(model, "tiers", raw.tiers.is_some())?;
            ChargeModel::Standard {
                per_unit: amount(raw.per_unit.unwrap_or_default(), "per_unit")?,
            }
        }
        "package" => {
            field_for(model, "per_unit", raw.per_unit.is_some())?;
            field_for(model, "tiers", raw.tiers.is_some())?;
            ChargeModel::Package {
                size: raw
                    .package_size
                    .ok_or_else(|| invalid(key("package_size"), "is required for a package"))?,
                price: amount(
                    raw.package_price.ok_or_else(|| {
                        invalid(key("package_price"), "is required for a package")
                    })?,
                    "package_price",
                )?,
                free_units: raw.package_free_units,
            }
        }
        "graduated" | "volume" => {
            field_for(model, "per_unit", raw.per_unit.is_some())?;
            field_for(model, "package_size", raw.package_size.is_some())?;
            let tiers = raw
                .tiers
                .ok_or_else(|| invalid(key("tiers"), format!("are required for {model}")))?
                .into_iter()
                .enumerate()
                .map(|(n, tier)| {
                    Ok(Tier {
                        up_to: tier.up_to,
                        per_unit: amount(tier.per_unit, &format!("tiers[{n}].per_unit"))?,
                        flat: amount(tier.flat, &format!("tiers[{n}].flat"))?,
                    })
                })
                .collect::<Result<Vec<_>, Invalid>>()?;
            match model {
                "graduated" => ChargeModel::Graduated { tiers },
                _ => ChargeModel::Volume { tiers },
            }
        }
        other => {
            return Err(invalid(
                key("model"),
                format!("{other:?} is not standard, package, graduated or volume"),
            ));
        }
    };
    units
        .validate()
        .map_err(|reason| invalid(format!("price[{index}]"), reason))?;
    let effective_from = match &raw.effective_from {
        None => Timestamp::from_micros(0),
        Some(text) => Timestamp::parse_rfc3339(text).ok_or_else(|| {
            invalid(
                key("effective_from"),
                format!("{text:?} is not an RFC 3339 time, such as 2027-01-01T00:00:00Z"),
            )
        })?,
    };
    Ok(Price {
        plugin: raw.plugin,
        function: raw.function,
        tenant: raw.tenant.map(TenantId),
        effective_from,
        per_call: amount(raw.per_call, "per_call")?,
        units,
        free_units: raw.free_units,
        per_million_fuel: amount(raw.per_million_fuel, "per_million_fuel")?,
        charge_failed: raw.charge_failed,
    })
}

/// Parses one price of a list given as JSON (a reseller's retail prices),
/// checked exactly as a `[[price]]` of `pricing.toml` is; the error names
/// the field at fault.
pub fn parse_price_json(index: usize, value: serde_json::Value) -> Result<Price, String> {
    let raw: RawPrice = serde_path_to_error::deserialize(value)
        .map_err(|error| format!("price[{index}].{}: {}", error.path(), error.inner()))?;
    parse_price(index, raw).map_err(|Invalid { key, reason }| format!("{key}: {reason}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    id: String,
    credits: Decimal,
    #[serde(default)]
    discount_percent: Decimal,
}

pub fn parse_pricing(path: &Path, text: &str) -> anyhow::Result<Pricing> {
    parse_file(path, text, |raw: RawPricing| {
        let currency = Currency::parse(&raw.currency)
            .map_err(|error| invalid("currency", error.to_string()))?;
        if raw.credit_price <= Decimal::ZERO {
            return Err(invalid(
                "credit_price",
                format!("must be greater than zero, got {}", raw.credit_price),
            ));
        }
        if raw.package.len() > PACKAGES_MAX {
            return Err(invalid(
                "package",
                format!("more than {PACKAGES_MAX} packages"),
            ));
        }
        let mut seen = HashSet::new();
        let packages = raw
            .package
            .into_iter()
            .enumerate()
            .map(|(index, package)| {
                let key = |field: &str| format!("package[{index}].{field}");
                check_id(&package.id, &key("id"))?;
                if !seen.insert(package.id.clone()) {
                    return Err(invalid(
                        key("id"),
                        format!("duplicate package id {:?}", package.id),
                    ));
                }
                let credits = positive_credits(package.credits, &key("credits"))?;
                let discount = package.discount_percent;
                if discount < Decimal::ZERO || discount >= Decimal::ONE_HUNDRED {
                    return Err(invalid(
                        key("discount_percent"),
                        format!("must be at least 0 and below 100, got {discount}"),
                    ));
                }
                let list = package.credits * raw.credit_price;
                let net = list * (Decimal::ONE_HUNDRED - discount) / Decimal::ONE_HUNDRED;
                let rounded = net.round_dp_with_strategy(
                    currency.minor_digits(),
                    RoundingStrategy::MidpointAwayFromZero,
                );
                let price = positive_money(rounded, currency, &key("credits"))?;
                Ok(CreditPackage {
                    id: package.id,
                    credits,
                    discount_percent: discount,
                    price,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if raw.price.len() + raw.rule.len() > PRICES_MAX {
            return Err(invalid(
                "price",
                format!("more than {PRICES_MAX} prices and rules"),
            ));
        }
        let prices = raw
            .price
            .into_iter()
            .enumerate()
            .map(|(index, price)| parse_price(index, price))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = HashSet::new();
        for (index, price) in prices.iter().enumerate() {
            let id = (
                &price.plugin,
                &price.function,
                price.tenant,
                price.effective_from,
            );
            if !seen.insert(id) {
                return Err(invalid(
                    format!("price[{index}]"),
                    format!(
                        "a second price for {} {} with the same tenant and effective_from",
                        price.plugin, price.function
                    ),
                ));
            }
        }
        let rules = raw
            .rule
            .into_iter()
            .enumerate()
            .map(|(index, rule)| match (&rule.plan, rule.tenant) {
                (Some(_), None) | (None, Some(_)) => Ok(RuleBinding {
                    rule: rule.rule,
                    plan: rule.plan,
                    tenant: rule.tenant.map(TenantId),
                }),
                _ => Err(invalid(
                    format!("rule[{index}]"),
                    "binds a pricing rule to one plan or one tenant: give plan or tenant",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let amount = |value: Decimal, key: &str| {
            if value.is_sign_negative() || value > Decimal::from(PRICE_CREDITS_MAX) {
                return Err(invalid(
                    key,
                    format!("must be 0 to {PRICE_CREDITS_MAX} credits, got {value}"),
                ));
            }
            Ok(value)
        };
        let reseller_plugins = ResellerPluginPrice {
            per_call: amount(raw.reseller_plugins.per_call, "reseller_plugins.per_call")?,
            per_million_fuel: amount(
                raw.reseller_plugins.per_million_fuel,
                "reseller_plugins.per_million_fuel",
            )?,
        };
        Ok(Pricing {
            currency,
            credit_price: raw.credit_price,
            packages,
            book: PriceBook {
                prices,
                rules,
                reseller_plugins,
            },
        })
    })
}

fn check_id(id: &str, key: &str) -> Result<(), Invalid> {
    let valid = !id.is_empty()
        && id.len() <= ID_BYTES_MAX
        && id.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        });
    match valid {
        true => Ok(()),
        false => Err(invalid(
            key,
            format!("{id:?} is not an id: use 1 to {ID_BYTES_MAX} of a-z, 0-9, - and _"),
        )),
    }
}

fn positive_money(value: Decimal, currency: Currency, key: &str) -> Result<Money, Invalid> {
    if value <= Decimal::ZERO {
        return Err(invalid(
            key,
            format!("must be greater than zero, got {value}"),
        ));
    }
    Money::from_decimal(value, currency).map_err(|error| invalid(key, error.to_string()))
}

fn positive_credits(value: Decimal, key: &str) -> Result<Credits, Invalid> {
    if value <= Decimal::ZERO {
        return Err(invalid(
            key,
            format!("must be greater than zero, got {value}"),
        ));
    }
    Credits::from_decimal(value).map_err(|error| invalid(key, error.to_string()))
}

#[cfg(test)]
mod tests;
