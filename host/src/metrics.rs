//! What the host counts for Prometheus (`GET /metrics`): plugin calls by
//! plugin, function and outcome, their latency, the credits they charged,
//! plugin errors by kind, and HTTP requests by status. One registry per
//! process.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub plugin: String,
    pub function: String,
    /// ok, plugin_error or platform_error.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub plugin: String,
    /// The plugin's error kind (invalid-input, upstream...) or what stopped
    /// it (timeout, fuel, memory, crash, output, host).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// insufficient_credits, not_enabled, unpriced...
    pub reason: String,
}

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub call_seconds: Family<PluginLabels, Histogram>,
    /// Millionths of a credit, so the counter stays an integer.
    pub credits_charged_micros: Family<PluginLabels, Counter>,
    pub plugin_errors: Family<ErrorLabels, Counter>,
    pub refused: Family<RefusalLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("tollgate");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("plugin_calls", "Metered plugin calls", calls.clone());
        let call_seconds = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 30 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.5, 15,
            ))
        });
        registry.register(
            "plugin_call_seconds",
            "Time a plugin call took in the sandbox",
            call_seconds.clone(),
        );
        let credits_charged_micros = Family::<PluginLabels, Counter>::default();
        registry.register(
            "credits_charged_micros",
            "Millionths of a credit charged for plugin calls",
            credits_charged_micros.clone(),
        );
        let plugin_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "plugin_errors",
            "Plugin calls that failed, by kind",
            plugin_errors.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "calls_refused",
            "Calls refused before the plugin ran, by reason",
            refused.clone(),
        );
        Metrics {
            registry,
            calls,
            call_seconds,
            credits_charged_micros,
            plugin_errors,
            refused,
        }
    })
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
