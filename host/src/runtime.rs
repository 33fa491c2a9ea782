//! The plugin runtime: a wasmtime engine running component-model plugins in
//! a sandbox, one fresh instance per call, with limits on fuel, memory,
//! wall-clock time and output size.
//!
//! This is the only module that names wasmtime. It knows nothing about money:
//! an invocation reports what it consumed (units, fuel, time) and the meter
//! that wraps every call decides what that costs. A plugin's failure is data
//! ([`CallError::Plugin`]); a trap, a timeout or a memory blow-up fails that
//! one call with an error naming the plugin, never the host.

pub mod v0_1;
pub mod v0_2;

mod host;
pub mod outbound;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use host::HostState;
pub use host::{
    CallContext, HttpPolicy, KV_BYTES_MAX, KV_KEY_BYTES_MAX, KV_KEYS_MAX, KV_VALUE_BYTES_MAX,
    KvStore, LogLine, MemoryKv, ScriptedHttp, kv_quota_check,
};
pub use v0_1::leads::{Enrichment, Lead, SearchPage, SearchQuery};
pub use v0_1::messages::{Event, EventKind, Events, Message, Sender, Sent};
pub use v0_1::payments::{
    Method, Payment, PaymentEvent, PaymentEventKind, PaymentEvents, PaymentRequest, PaymentStatus,
    Refund, RefundRequest,
};
pub use v0_1::pricing::{Price, PriceRequest};
pub use v0_1::types::{Callback, ErrorKind, Field, PluginError};

/// The WIT versions this host runs, oldest first.
pub const API_VERSIONS: [&str; 2] = ["0.1", "0.2"];

/// How often the epoch ticks; wall-clock limits are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instances alive at once across all plugins: the pooling allocator
/// reserves their memory up front, so this bounds the host's footprint.
const INSTANCES_CONCURRENT_MAX: u32 = 256;

/// Memory a pooled instance slot keeps mapped between calls. A Rust plugin
/// starts with about 1.1 MiB (its stack and data); this covers that and
/// a few megabytes of heap.
const MEMORY_KEEP_RESIDENT_BYTES: usize = 8 << 20;
const TABLE_KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// What the host allows any plugin at most; a manifest may ask for less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one call may burn.
    pub fuel: u64,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take, host calls included.
    pub timeout: Duration,
    /// Size of the result one call may return.
    pub output_bytes: usize,
}

impl Limits {
    /// The host's maxima: generous for real work, small enough that a
    /// runaway plugin costs milliseconds and megabytes, not the host.
    pub const HOST_MAX: Limits = Limits {
        fuel: 2_000_000_000,
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(30),
        output_bytes: 4 << 20,
    };

    /// What a plugin gets when its manifest asks for nothing.
    pub const DEFAULT: Limits = Limits {
        fuel: 200_000_000,
        memory_bytes: 32 << 20,
        timeout: Duration::from_secs(10),
        output_bytes: 1 << 20,
    };

    /// Each limit capped by the host's.
    pub fn capped_by(self, max: Limits) -> Limits {
        Limits {
            fuel: self.fuel.min(max.fuel),
            memory_bytes: self.memory_bytes.min(max.memory_bytes),
            timeout: self.timeout.min(max.timeout),
            output_bytes: self.output_bytes.min(max.output_bytes),
        }
    }
}

/// The four kinds of plugin, one WIT world each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PluginKind {
    LeadSource,
    Channel,
    PaymentProvider,
    PricingRule,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::LeadSource,
        PluginKind::Channel,
        PluginKind::PaymentProvider,
        PluginKind::PricingRule,
    ];

    /// The WIT world's name, as manifests spell the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::LeadSource => "lead-source",
            PluginKind::Channel => "channel",
            PluginKind::PaymentProvider => "payment-provider",
            PluginKind::PricingRule => "pricing-rule",
        }
    }

    pub fn parse(text: &str) -> Option<PluginKind> {
        PluginKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the runtime is set up.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub limits_max: Limits,
    /// Where compiled code is cached, so a restart does not recompile;
    /// `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            limits_max: Limits::HOST_MAX,
            cache_dir: None,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin}: the file is not a WebAssembly component: {reason}")]
    NotAComponent { plugin: String, reason: String },
    #[error("plugin {plugin}: the component is not a {kind} plugin: {reason}")]
    WrongWorld {
        plugin: String,
        kind: PluginKind,
        reason: String,
    },
}

/// A plugin version, compiled and linked, ready for calls.
pub struct LoadedPlugin {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub limits: Limits,
    /// The WIT version (`0.1`) of the host interfaces the component
    /// imports; `None` when it imports none of them.
    pub api_version: Option<String>,
    pre: WorldPre,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A plugin version pre-instantiated against the bindings of its WIT
/// version.
enum WorldPre {
    V0_1(Pre0_1),
    V0_2(Pre0_2),
}

/// The pre-instantiated world of one WIT version, and how to call it. Both
/// versions export the same functions with the same types.
macro_rules! world_pre {
    ($name:ident, $version:ident) => {
        enum $name {
            LeadSource($version::lead_source::LeadSourcePre<HostState>),
            Channel($version::channel::ChannelPre<HostState>),
            PaymentProvider($version::payment_provider::PaymentProviderPre<HostState>),
            PricingRule($version::pricing_rule::PricingRulePre<HostState>),
        }

        impl $name {
            fn new(
                kind: PluginKind,
                pre: wasmtime::component::InstancePre<HostState>,
            ) -> wasmtime::Result<$name> {
                Ok(match kind {
                    PluginKind::LeadSource => {
                        $name::LeadSource($version::lead_source::LeadSourcePre::new(pre)?)
                    }
                    PluginKind::Channel => $name::Channel($version::channel::ChannelPre::new(pre)?),
                    PluginKind::PaymentProvider => $name::PaymentProvider(
                        $version::payment_provider::PaymentProviderPre::new(pre)?,
                    ),
                    PluginKind::PricingRule => {
                        $name::PricingRule($version::pricing_rule::PricingRulePre::new(pre)?)
                    }
                })
            }

            /// Instantiates the plugin in `store` and calls the export
            /// `call` names. The outer error is a trap; the inner one the
            /// plugin's own failure.
            fn run(
                &self,
                store: &mut Store<HostState>,
                call: Call,
                label: &str,
                kind: PluginKind,
            ) -> CallResult {
                let plugin_error = |error: PluginError| CallError::Plugin {
                    plugin: label.to_owned(),
                    error,
                };
                let result = match (self, call) {
                    ($name::LeadSource(pre), Call::Search(query)) => pre
                        .instantiate(&mut *store)?
                        .call_search(&mut *store, &query)?
                        .map(Reply::SearchPage),
                    ($name::LeadSource(pre), Call::Enrich(lead)) => pre
                        .instantiate(&mut *store)?
                        .call_enrich(&mut *store, &lead)?
                        .map(Reply::Enrichment),
                    ($name::Channel(pre), Call::Send(message)) => pre
                        .instantiate(&mut *store)?
                        .call_send(&mut *store, &message)?
                        .map(Reply::Sent),
                    ($name::Channel(pre), Call::ChannelCallback(callback)) => pre
                        .instantiate(&mut *store)?
                        .call_parse_callback(&mut *store, &callback)?
                        .map(Reply::Events),
                    ($name::PaymentProvider(pre), Call::CreatePayment(request)) => pre
                        .instantiate(&mut *store)?
                        .call_create_payment(&mut *store, &request)?
                        .map(Reply::Payment),
                    ($name::PaymentProvider(pre), Call::Refund(request)) => pre
                        .instantiate(&mut *store)?
                        .call_refund(&mut *store, &request)?
                        .map(Reply::Refund),
                    ($name::PaymentProvider(pre), Call::PaymentCallback(callback)) => pre
                        .instantiate(&mut *store)?
                        .call_parse_callback(&mut *store, &callback)?
                        .map(Reply::PaymentEvents),
                    ($name::PricingRule(pre), Call::AdjustPrice(request)) => pre
                        .instantiate(&mut *store)?
                        .call_adjust_price(&mut *store, &request)?
                        .map(Reply::Price),
                    (_, call) => {
                        debug_assert_ne!(call.kind(), kind);
                        return Ok(Err(CallError::WrongFunction {
                            plugin: label.to_owned(),
                            kind,
                            function: call.function(),
                        }));
                    }
                };
                Ok(result.map_err(plugin_error))
            }
        }
    };
}

world_pre!(Pre0_1, v0_1);
world_pre!(Pre0_2, v0_2);

/// One call into a plugin: which export, with what.
#[derive(Clone, Debug)]
pub enum Call {
    Search(SearchQuery),
    Enrich(Lead),
    Send(Message),
    ChannelCallback(Callback),
    CreatePayment(PaymentRequest),
    Refund(RefundRequest),
    PaymentCallback(Callback),
    AdjustPrice(PriceRequest),
}

impl Call {
    /// The export's WIT name: what pricing and usage records call it.
    pub fn function(&self) -> &'static str {
        match self {
            Call::Search(_) => "search",
            Call::Enrich(_) => "enrich",
            Call::Send(_) => "send",
            Call::ChannelCallback(_) | Call::PaymentCallback(_) => "parse-callback",
            Call::CreatePayment(_) => "create-payment",
            Call::Refund(_) => "refund",
            Call::AdjustPrice(_) => "adjust-price",
        }
    }

    /// The kind of plugin that has this function.
    pub fn kind(&self) -> PluginKind {
        match self {
            Call::Search(_) | Call::Enrich(_) => PluginKind::LeadSource,
            Call::Send(_) | Call::ChannelCallback(_) => PluginKind::Channel,
            Call::CreatePayment(_) | Call::Refund(_) | Call::PaymentCallback(_) => {
                PluginKind::PaymentProvider
            }
            Call::AdjustPrice(_) => PluginKind::PricingRule,
        }
    }
}

/// What a call returned.
#[derive(Clone, Debug)]
pub enum Reply {
    SearchPage(SearchPage),
    Enrichment(Enrichment),
    Sent(Sent),
    Events(Events),
    Payment(Payment),
    Refund(Refund),
    PaymentEvents(PaymentEvents),
    Price(Price),
}

impl Reply {
    /// The units the plugin reports it consumed.
    pub fn units(&self) -> u64 {
        match self {
            Reply::SearchPage(page) => page.units,
            Reply::Enrichment(enrichment) => enrichment.units,
            Reply::Sent(sent) => sent.units,
            Reply::Events(events) => events.units,
            Reply::Payment(payment) => payment.units,
            Reply::Refund(refund) => refund.units,
            Reply::PaymentEvents(events) => events.units,
            Reply::Price(_) => 0,
        }
    }

    /// Roughly how many bytes of data the reply carries.
    fn size_bytes(&self) -> usize {
        fn fields(fields: &[Field]) -> usize {
            fields
                .iter()
                .map(|field| field.name.len() + field.value.len())
                .sum()
        }
        fn text(text: &Option<String>) -> usize {
            text.as_ref().map_or(0, String::len)
        }
        fn lead(lead: &Lead) -> usize {
            [
                &lead.first_name,
                &lead.last_name,
                &lead.email,
                &lead.title,
                &lead.company,
                &lead.domain,
                &lead.linkedin_url,
                &lead.phone,
                &lead.location,
                &lead.time_zone,
            ]
            .into_iter()
            .map(text)
            .sum::<usize>()
                + fields(&lead.custom_fields)
        }
        match self {
            Reply::SearchPage(page) => {
                page.leads.iter().map(lead).sum::<usize>() + text(&page.next_cursor)
            }
            Reply::Enrichment(enrichment) => enrichment.lead.as_ref().map_or(0, lead),
            Reply::Sent(sent) => sent.delivery_id.len(),
            Reply::Events(events) => events
                .events
                .iter()
                .map(|event| {
                    16 + text(&event.delivery_id)
                        + text(&event.recipient)
                        + text(&event.url)
                        + text(&event.detail)
                })
                .sum(),
            Reply::Payment(payment) => {
                payment.provider_reference.len()
                    + text(&payment.failure_reason)
                    + text(&payment.instructions)
            }
            Reply::Refund(refund) => refund.provider_reference.len(),
            Reply::PaymentEvents(events) => events
                .events
                .iter()
                .map(|event| {
                    16 + event.provider_reference.len()
                        + event.event_id.len()
                        + text(&event.currency)
                        + text(&event.failure_reason)
                })
                .sum(),
            Reply::Price(price) => 8 + text(&price.note),
        }
    }
}

/// Why a call produced no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and reported a failure.
    #[error("plugin {plugin} failed ({:?}): {}", .error.kind, .error.message)]
    Plugin { plugin: String, error: PluginError },
    #[error("plugin {plugin} is a {kind} plugin and has no function {function}")]
    WrongFunction {
        plugin: String,
        kind: PluginKind,
        function: &'static str,
    },
    #[error("plugin {plugin} used all {fuel} units of fuel it may burn per call")]
    FuelExhausted { plugin: String, fuel: u64 },
    #[error("plugin {plugin} ran longer than its limit of {} ms", .timeout.as_millis())]
    Timeout { plugin: String, timeout: Duration },
    #[error("plugin {plugin} tried to grow its memory beyond its limit of {memory_bytes} bytes")]
    MemoryLimit { plugin: String, memory_bytes: usize },
    #[error(
        "plugin {plugin} returned about {size_bytes} bytes, more than its limit of {output_bytes}"
    )]
    OutputTooLarge {
        plugin: String,
        size_bytes: usize,
        output_bytes: usize,
    },
    #[error("plugin {plugin} crashed: {message}")]
    Trap { plugin: String, message: String },
    /// The host failed while serving the plugin (its store's database was
    /// unreachable): the platform's fault, not the plugin's.
    #[error("plugin {plugin} could not finish: the host failed ({message}); try again")]
    Host { plugin: String, message: String },
}

impl CallError {
    /// Whether the failure is the plugin's own report (the tenant's call
    /// failed) rather than the platform stopping or losing the call.
    pub fn is_plugin_failure(&self) -> bool {
        matches!(self, CallError::Plugin { .. })
    }
}

/// The result of one invocation, with what it consumed.
#[derive(Debug)]
pub struct Invocation {
    pub result: Result<Reply, CallError>,
    pub fuel_consumed: u64,
    pub duration: Duration,
    /// What the plugin logged or printed during the call.
    pub logs: Vec<LogLine>,
}

/// The engine and everything shared by all calls.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    compile_cache: Option<wasmtime::Cache>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(INSTANCES_CONCURRENT_MAX)
            .total_core_instances(INSTANCES_CONCURRENT_MAX * 4)
            .total_memories(INSTANCES_CONCURRENT_MAX)
            .total_tables(INSTANCES_CONCURRENT_MAX * 4)
            .total_stacks(INSTANCES_CONCURRENT_MAX)
            .max_memories_per_component(1)
            .max_core_instances_per_component(8)
            .max_memory_size(config.limits_max.memory_bytes)
            // Keep a plugin's pages resident between calls and reset them
            // in place: far cheaper than unmapping them and faulting them
            // back in on the next call. pagemap_scan (Linux 6.7+) resets
            // only the pages a call dirtied.
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
            .pagemap_scan(wasmtime::Enabled::Auto);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let mut compile_cache = None;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // wasmtime wants an absolute path; ours may be relative to the
            // working directory.
            let dir =
                std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            let cache = wasmtime::Cache::new(cache_config)?;
            wasm.cache(Some(cache.clone()));
            compile_cache = Some(cache);
        }
        let engine = Engine::new(&wasm)
            .map_err(|error| anyhow::anyhow!("starting the wasm engine: {error:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Every world imports the same host interfaces; link them once each.
        linker.allow_shadowing(true);
        v0_1::lead_source::LeadSource::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_1::channel::Channel::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_1::payment_provider::PaymentProvider::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |state| state,
        )?;
        v0_1::pricing_rule::PricingRule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| {
            state
        })?;
        v0_2::lead_source::LeadSource::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_2::channel::Channel::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        for interface in v0_2::TYPE_ONLY_INTERFACES {
            linker.instance(interface)?;
        }
        linker.allow_shadowing(false);
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), ticker_stop.clone())?;
        Ok(Runtime {
            engine,
            linker,
            config,
            compile_cache,
            ticker_stop,
        })
    }

    /// How often loading found compiled code in the on-disk cache, and how
    /// often it had to compile: (hits, misses). `None` without a cache.
    pub fn compile_cache_stats(&self) -> Option<(usize, usize)> {
        self.compile_cache
            .as_ref()
            .map(|cache| (cache.cache_hits(), cache.cache_misses()))
    }

    pub fn limits_max(&self) -> Limits {
        self.config.limits_max
    }

    /// Compiles (or fetches from the cache) and links a plugin, checking
    /// that the component implements the world of `kind`.
    pub fn load(
        &self,
        name: &str,
        version: &str,
        kind: PluginKind,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let plugin = format!("{name}@{version}");
        let component = Component::from_binary(&self.engine, wasm).map_err(|error| {
            LoadError::NotAComponent {
                plugin: plugin.clone(),
                reason: format!("{error:#}"),
            }
        })?;
        let wrong_world = |error: wasmtime::Error| LoadError::WrongWorld {
            plugin: plugin.clone(),
            kind,
            reason: format!("{error:#}"),
        };
        let api_version = imported_api_version(&self.engine, &component);
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = match api_version.as_deref() {
            Some("0.2") => WorldPre::V0_2(Pre0_2::new(kind, instance_pre).map_err(wrong_world)?),
            // 0.1, or a component that imports nothing of ours.
            _ => WorldPre::V0_1(Pre0_1::new(kind, instance_pre).map_err(wrong_world)?),
        };
        Ok(LoadedPlugin {
            name: name.to_owned(),
            version: version.to_owned(),
            kind,
            limits: limits.capped_by(self.config.limits_max),
            api_version,
            pre,
        })
    }

    /// Runs one call in a fresh instance of the plugin. Blocking: async
    /// callers run it on a blocking thread.
    pub fn invoke(&self, plugin: &LoadedPlugin, context: CallContext, call: Call) -> Invocation {
        let started = Instant::now();
        let label = format!("{}@{}", plugin.name, plugin.version);
        let limits = plugin.limits;
        let mut store = Store::new(&self.engine, HostState::new(label.clone(), context, limits));
        store.limiter(|state| &mut state.limits);
        store
            .set_fuel(limits.fuel)
            .expect("fuel is enabled on this engine");
        let ticks = limits
            .timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos())
            .max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let outcome = match &plugin.pre {
            WorldPre::V0_1(pre) => pre.run(&mut store, call, &label, plugin.kind),
            WorldPre::V0_2(pre) => pre.run(&mut store, call, &label, plugin.kind),
        };
        let fuel_left = store.get_fuel().unwrap_or(0);
        let logs = store.data_mut().finish();
        let result = match outcome {
            Ok(Ok(reply)) => match reply.size_bytes() {
                size_bytes if size_bytes > limits.output_bytes => Err(CallError::OutputTooLarge {
                    plugin: label,
                    size_bytes,
                    output_bytes: limits.output_bytes,
                }),
                _ => Ok(reply),
            },
            Ok(result) => result,
            Err(trap) => Err(classify_trap(trap, &store, label, limits)),
        };
        Invocation {
            result,
            fuel_consumed: limits.fuel - fuel_left,
            duration: started.elapsed(),
            logs,
        }
    }
}

/// The `major.minor` of the first `tollgate:plugin/...@x.y.z` import.
fn imported_api_version(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .find_map(|(name, _)| {
            let version = name.strip_prefix("tollgate:plugin/")?.split_once('@')?.1;
            let mut parts = version.split('.');
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        })
}

type CallResult = wasmtime::Result<Result<Reply, CallError>>;

/// Names what stopped a call: its fuel, its deadline, its memory limit, or
/// a crash of its own.
fn classify_trap(
    error: wasmtime::Error,
    store: &Store<HostState>,
    plugin: String,
    limits: Limits,
) -> CallError {
    if let Some(message) = store.data().host_failure() {
        return CallError::Host {
            plugin,
            message: message.to_owned(),
        };
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => {
            return CallError::FuelExhausted {
                plugin,
                fuel: limits.fuel,
            };
        }
        Some(wasmtime::Trap::Interrupt) => {
            return CallError::Timeout {
                plugin,
                timeout: limits.timeout,
            };
        }
        _ => {}
    }
    if store.data().memory_denied() {
        return CallError::MemoryLimit {
            plugin,
            memory_bytes: limits.memory_bytes,
        };
    }
    CallError::Trap {
        plugin,
        message: format!("{error:#}"),
    }
}

/// Advances the engine's epoch every tick until the runtime is dropped;
/// stores whose deadline passes trap at their next check.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .context("starting the epoch ticker")?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// Where the plugins in `plugins/` were built (by `host/build.rs`).
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/plugin_artifacts.rs"));

    /// The built component of the plugin crate `name`.
    pub fn path(name: &str) -> Option<&'static str> {
        PLUGIN_ARTIFACTS
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
            .map(|(_, path)| *path)
    }
}
