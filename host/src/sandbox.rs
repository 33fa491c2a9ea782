//! One plugin in the real sandbox, without a server, a database or the
//! network: for plugin authors' tests and `tollgate plugin call`. The
//! plugin is checked as install checks it, runs with its manifest's limits
//! in a fresh instance per call like any other, and its host imports are
//! real but for three: settings come from the caller, HTTP is answered from
//! a script (after the manifest's host checks), and the store is in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::plugins::{self, MANIFEST_FILE, Manifest};
use crate::runtime::{
    Call, CallContext, Invocation, LoadedPlugin, MemoryKv, Reply, Runtime, RuntimeConfig,
    ScriptedHttp,
};

/// A plugin loaded for calls with scripted surroundings.
pub struct Sandbox {
    runtime: Runtime,
    plugin: LoadedPlugin,
    manifest: Manifest,
    settings: BTreeMap<String, String>,
    script: Arc<ScriptedHttp>,
    kv: Arc<MemoryKv>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Checks and loads a plugin from its manifest and component. The hosts
    /// its manifest declares count as approved.
    pub fn new(manifest_text: &str, wasm: &[u8]) -> anyhow::Result<Sandbox> {
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let manifest = Manifest::parse(manifest_text)?;
        let (manifest, plugin) =
            plugins::check(&runtime, manifest_text, wasm, &manifest.http_hosts)?;
        Ok(Sandbox {
            runtime,
            plugin,
            manifest,
            settings: BTreeMap::new(),
            script: Arc::new(ScriptedHttp::default()),
            kv: Arc::new(MemoryKv::default()),
        })
    }

    /// Loads `dir/plugin.toml` with `wasm`, or `dir/plugin.wasm` (what
    /// `tollgate plugin build` writes).
    pub fn from_dir(dir: &Path, wasm: Option<&Path>) -> anyhow::Result<Sandbox> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let wasm_path = wasm.map_or_else(|| dir.join("plugin.wasm"), Path::to_path_buf);
        let wasm = std::fs::read(&wasm_path).with_context(|| {
            format!(
                "reading {} (build it with `tollgate plugin build`)",
                wasm_path.display()
            )
        })?;
        Sandbox::new(&manifest_text, &wasm)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Sets one of the tenant's settings for the plugin.
    pub fn setting(&mut self, name: &str, value: &str) -> &mut Sandbox {
        self.settings.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The HTTP script: queue answers, read the requests made.
    pub fn http(&self) -> &ScriptedHttp {
        &self.script
    }

    /// The plugin's store, shared by every call of this sandbox.
    pub fn kv(&self) -> &MemoryKv {
        &self.kv
    }

    /// Runs one call in a fresh instance. Enabling a plugin refuses one
    /// without its required settings; so does this, before the call.
    pub fn call(&self, call: Call) -> anyhow::Result<Invocation> {
        if let Some(missing) = self
            .manifest
            .settings
            .iter()
            .find(|spec| spec.required && !self.settings.contains_key(&spec.name))
        {
            anyhow::bail!(
                "plugin {} needs the setting {:?}: {}",
                self.manifest.name,
                missing.name,
                missing.description
            );
        }
        let mut context = CallContext::new("sandbox");
        context.settings = self.settings.clone();
        context.kv = self.kv.clone();
        context.http.allowed_hosts = self.manifest.http_hosts.clone();
        context.http.scripted = Some(self.script.clone());
        Ok(self.runtime.invoke(&self.plugin, context, call))
    }
}

/// Why input does not make a call.
#[derive(Debug, thiserror::Error)]
pub enum CallInputError {
    #[error("a {kind} plugin has no function {function:?}; it has {functions}")]
    UnknownFunction {
        kind: crate::runtime::PluginKind,
        function: String,
        functions: &'static str,
    },
    #[error("input for {function}: {reason}")]
    Input {
        function: &'static str,
        reason: String,
    },
}

/// A call from its function's WIT name and its input as JSON (the Rust
/// field names: `{"limit": 10, "keywords": "fintech"}`). A callback's input
/// is its raw body, with `headers`.
pub fn parse_call(
    kind: crate::runtime::PluginKind,
    function: &str,
    input: &[u8],
    headers: Vec<crate::runtime::Field>,
) -> Result<Call, CallInputError> {
    use crate::runtime::PluginKind::*;
    fn json<T: serde::de::DeserializeOwned>(
        function: &'static str,
        input: &[u8],
    ) -> Result<T, CallInputError> {
        let mut deserializer = serde_json::Deserializer::from_slice(input);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let reason = match error.path().to_string().as_str() {
                "." => error.inner().to_string(),
                path => format!("{path}: {}", error.inner()),
            };
            CallInputError::Input { function, reason }
        })
    }
    let callback = || crate::runtime::Callback {
        headers: headers.clone(),
        body: input.to_vec(),
    };
    Ok(match (kind, function) {
        (LeadSource, "search") => Call::Search(json("search", input)?),
        (LeadSource, "enrich") => Call::Enrich(json("enrich", input)?),
        (Channel, "send") => Call::Send(json("send", input)?),
        (Channel, "parse-callback") => Call::ChannelCallback(callback()),
        (PaymentProvider, "create-payment") => Call::CreatePayment(json("create-payment", input)?),
        (PaymentProvider, "refund") => Call::Refund(json("refund", input)?),
        (PaymentProvider, "parse-callback") => Call::PaymentCallback(callback()),
        (PricingRule, "adjust-price") => Call::AdjustPrice(json("adjust-price", input)?),
        (kind, function) => {
            let functions = match kind {
                LeadSource => "search, enrich",
                Channel => "send, parse-callback",
                PaymentProvider => "create-payment, refund, parse-callback",
                PricingRule => "adjust-price",
            };
            return Err(CallInputError::UnknownFunction {
                kind,
                function: function.to_owned(),
                functions,
            });
        }
    })
}

/// A reply as JSON.
pub fn reply_json(reply: &Reply) -> serde_json::Value {
    let value = match reply {
        Reply::SearchPage(page) => serde_json::to_value(page),
        Reply::Enrichment(enrichment) => serde_json::to_value(enrichment),
        Reply::Sent(sent) => serde_json::to_value(sent),
        Reply::Events(events) => serde_json::to_value(events),
        Reply::Payment(payment) => serde_json::to_value(payment),
        Reply::Refund(refund) => serde_json::to_value(refund),
        Reply::PaymentEvents(events) => serde_json::to_value(events),
        Reply::Price(price) => serde_json::to_value(price),
    };
    value.expect("replies are plain data")
}
