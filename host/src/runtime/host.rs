//! What the host gives a plugin during one call: a locked-down WASI (no
//! files, sockets, environment or arguments; stdout and stderr captured into
//! the host's log), and the `tollgate:plugin/host` imports: logging, HTTP to
//! approved hosts within size and time limits, a key-value store scoped to
//! (tenant, plugin), the tenant's settings, and the clock.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Limits;
use super::v0_1::{host, leads, messages, payments, pricing, smtp, types};

/// Bytes of stdout and of stderr kept per call; the rest is dropped.
const STDIO_BYTES_MAX: usize = 64 << 10;

/// Log lines a plugin may write per call through the `log` import.
const LOG_LINES_MAX: usize = 1_000;

/// Longest log line kept, in bytes.
const LOG_LINE_BYTES_MAX: usize = 4 << 10;

/// Table elements (function references) one instance may have.
const TABLE_ELEMENTS_MAX: usize = 100_000;

/// Limits on the key-value store, per (tenant, plugin).
pub const KV_KEY_BYTES_MAX: usize = 256;
pub const KV_VALUE_BYTES_MAX: usize = 64 << 10;

/// HTTP requests one call may make.
const HTTP_REQUESTS_PER_CALL_MAX: u32 = 50;

/// A per-(tenant, plugin) key-value store.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str);
}

/// A key-value store in memory, for tests and one-off calls.
#[derive(Debug, Default)]
pub struct MemoryKv(Mutex<BTreeMap<String, Vec<u8>>>);

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().expect("kv lock").get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0
            .lock()
            .expect("kv lock")
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) {
        self.0.lock().expect("kv lock").remove(key);
    }
}

/// Where a plugin may send HTTP requests, and how much.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Hosts (`api.example.com`, or `127.0.0.1:8080` with a port) that the
    /// manifest declares and the operator approved.
    pub allowed_hosts: Vec<String>,
    /// Time for one whole exchange.
    pub timeout: Duration,
    /// Largest request or response body.
    pub body_bytes_max: usize,
}

impl Default for HttpPolicy {
    fn default() -> HttpPolicy {
        HttpPolicy {
            allowed_hosts: Vec::new(),
            timeout: Duration::from_secs(10),
            body_bytes_max: 4 << 20,
        }
    }
}

/// Everything a call may see of the tenant it runs for.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// A label for logs, such as the tenant's id.
    pub tenant: String,
    /// The tenant's settings for this plugin, secrets included.
    pub settings: BTreeMap<String, String>,
    pub kv: Arc<dyn KvStore>,
    pub http: HttpPolicy,
    /// Milliseconds since the Unix epoch, as the host's clock says.
    pub now_ms: fn() -> u64,
}

impl CallContext {
    /// A context with no settings, an empty store and no HTTP access.
    pub fn new(tenant: impl Into<String>) -> CallContext {
        CallContext {
            tenant: tenant.into(),
            settings: BTreeMap::new(),
            kv: Arc::new(MemoryKv::default()),
            http: HttpPolicy::default(),
            now_ms: system_now_ms,
        }
    }
}

fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A line a plugin logged, through `log` or its stdout/stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The limits the store enforces while the plugin runs; it remembers when
/// it refused memory so the trap that follows can be named.
#[derive(Debug)]
pub(super) struct CallLimits {
    memory_bytes: usize,
    memory_denied: bool,
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.memory_denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}

pub(super) struct HostState {
    plugin: String,
    context: CallContext,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    pub(super) limits: CallLimits,
    logs: Vec<LogLine>,
    n_http_requests: u32,
}

impl HostState {
    pub(super) fn new(plugin: String, context: CallContext, limits: Limits) -> HostState {
        let stdout = MemoryOutputPipe::new(STDIO_BYTES_MAX);
        let stderr = MemoryOutputPipe::new(STDIO_BYTES_MAX);
        // Nothing inherited: no environment, arguments, files or network.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            plugin,
            context,
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            limits: CallLimits {
                memory_bytes: limits.memory_bytes,
                memory_denied: false,
            },
            logs: Vec::new(),
            n_http_requests: 0,
        }
    }

    pub(super) fn memory_denied(&self) -> bool {
        self.limits.memory_denied
    }

    /// Moves what the plugin printed into its log, then returns the log.
    pub(super) fn finish(&mut self) -> Vec<LogLine> {
        for (level, pipe) in [("info", &self.stdout), ("warn", &self.stderr)] {
            let contents = pipe.contents();
            let text = String::from_utf8_lossy(&contents);
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                self.logs.push(LogLine {
                    level,
                    message: line.to_owned(),
                });
            }
        }
        for line in &self.logs {
            tracing::info!(plugin = %self.plugin, tenant = %self.context.tenant, level = line.level, "{}", line.message);
        }
        std::mem::take(&mut self.logs)
    }

    fn http_send(
        &mut self,
        request: host::HttpRequest,
    ) -> Result<host::HttpResponse, host::HttpError> {
        self.n_http_requests += 1;
        if self.n_http_requests > HTTP_REQUESTS_PER_CALL_MAX {
            return Err(host::HttpError::Denied(format!(
                "more than {HTTP_REQUESTS_PER_CALL_MAX} HTTP requests in one call"
            )));
        }
        let uri: axum::http::Uri = request.url.parse().map_err(|error| {
            host::HttpError::InvalidRequest(format!("url {:?}: {error}", request.url))
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(host::HttpError::InvalidRequest(format!(
                    "url {:?} is not http or https",
                    request.url
                )));
            }
        }
        let authority = uri
            .authority()
            .map(|authority| authority.as_str())
            .unwrap_or_default();
        let host = uri.host().unwrap_or_default();
        let policy = &self.context.http;
        let allowed = policy.allowed_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host)
        });
        if !allowed {
            return Err(host::HttpError::Denied(format!(
                "host {authority:?} is not among the hosts this plugin may reach"
            )));
        }
        if request.body.len() > policy.body_bytes_max {
            return Err(host::HttpError::TooLarge(format!(
                "request body of {} bytes is over the limit of {}",
                request.body.len(),
                policy.body_bytes_max
            )));
        }
        send_http(&request, policy)
    }
}

/// Performs an approved request with the policy's time and size limits.
fn send_http(
    request: &host::HttpRequest,
    policy: &HttpPolicy,
) -> Result<host::HttpResponse, host::HttpError> {
    let method: axum::http::Method = request
        .method
        .parse()
        .map_err(|_| host::HttpError::InvalidRequest(format!("method {:?}", request.method)))?;
    let mut builder = axum::http::Request::builder()
        .method(method)
        .uri(&request.url);
    for header in &request.headers {
        builder = builder.header(&header.name, &header.value);
    }
    let http_request = builder
        .body(request.body.clone())
        .map_err(|error| host::HttpError::InvalidRequest(error.to_string()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(policy.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let response = agent.run(http_request).map_err(|error| match error {
        ureq::Error::Timeout(_) => host::HttpError::Timeout,
        other => host::HttpError::Failed(other.to_string()),
    })?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| types::Field {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();
    let limit = policy.body_bytes_max as u64;
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|error| host::HttpError::Failed(error.to_string()))?;
    if body.len() as u64 > limit {
        return Err(host::HttpError::TooLarge(format!(
            "response body is over the limit of {limit} bytes"
        )));
    }
    Ok(host::HttpResponse {
        status,
        headers,
        body,
    })
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}
impl leads::Host for HostState {}
impl messages::Host for HostState {}
impl payments::Host for HostState {}
impl pricing::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        if self.logs.len() >= LOG_LINES_MAX {
            return;
        }
        let level = match level {
            host::LogLevel::Trace => "trace",
            host::LogLevel::Debug => "debug",
            host::LogLevel::Info => "info",
            host::LogLevel::Warn => "warn",
            host::LogLevel::Error => "error",
        };
        let mut message = message;
        if message.len() > LOG_LINE_BYTES_MAX {
            let mut end = LOG_LINE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.logs.push(LogLine { level, message });
    }

    fn http_send(
        &mut self,
        request: host::HttpRequest,
    ) -> Result<host::HttpResponse, host::HttpError> {
        HostState::http_send(self, request)
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.context.kv.get(&key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.is_empty() || key.len() > KV_KEY_BYTES_MAX {
            return Err(format!("a key must be 1 to {KV_KEY_BYTES_MAX} bytes"));
        }
        if value.len() > KV_VALUE_BYTES_MAX {
            return Err(format!(
                "a value must be at most {KV_VALUE_BYTES_MAX} bytes"
            ));
        }
        self.context.kv.set(&key, &value)
    }

    fn kv_delete(&mut self, key: String) {
        self.context.kv.delete(&key);
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.context.settings.get(&name).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        (self.context.now_ms)()
    }
}

impl smtp::Host for HostState {
    fn send(
        &mut self,
        _envelope_from: String,
        _recipients: Vec<String>,
        _message: Vec<u8>,
    ) -> Result<String, smtp::SmtpError> {
        // FIXME(issue 3): the host's SMTP client (lettre) arrives with the
        // email channel; until then a channel cannot send mail.
        Err(smtp::SmtpError::Misconfigured(
            "this host has no SMTP client yet".into(),
        ))
    }
}
