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

use super::v0_1::{host, leads, messages, payments, pricing, smtp, types};
use super::v0_2;
use super::{Limits, outbound};

/// Bytes of stdout and of stderr kept per call; the rest is dropped.
const STDIO_BYTES_MAX: usize = 64 << 10;

/// Log lines a plugin may write per call through the `log` import.
const LOG_LINES_MAX: usize = 1_000;

/// Longest log line kept, in bytes.
const LOG_LINE_BYTES_MAX: usize = 4 << 10;

/// Table elements (function references) one instance may have.
const TABLE_ELEMENTS_MAX: usize = 100_000;

/// Limits on the key-value store: on one key and one value, and on the
/// whole store of one (tenant, plugin).
pub const KV_KEY_BYTES_MAX: usize = 256;
pub const KV_VALUE_BYTES_MAX: usize = 64 << 10;
pub const KV_KEYS_MAX: u64 = 10_000;
pub const KV_BYTES_MAX: u64 = 48 << 20;

/// HTTP requests one call may make.
const HTTP_REQUESTS_PER_CALL_MAX: u32 = 50;

/// A per-(tenant, plugin) key-value store. An `Err` is the host's failure
/// (the database is down) and fails the call; a refusal the plugin can act
/// on (the store is full) is the inner `Err`.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<Result<(), String>>;
    fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Keys starting with `prefix`, in byte order, after `after`: at most
    /// `limit`.
    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> anyhow::Result<Vec<String>>;
}

/// Most keys one `kv-list` returns.
pub const KV_LIST_MAX: u32 = 1_000;

/// Whether a store holding `n_keys` keys and `n_bytes` bytes, besides the
/// key being written, has room for `value`; the refusal says what is full.
pub fn kv_quota_check(n_keys: u64, n_bytes: u64, value_bytes: usize) -> Result<(), String> {
    if n_keys + 1 > KV_KEYS_MAX {
        return Err(format!(
            "the store is full: it holds {KV_KEYS_MAX} keys, the most it may; delete some first"
        ));
    }
    if n_bytes + value_bytes as u64 > KV_BYTES_MAX {
        return Err(format!(
            "the store is full: {n_bytes} bytes stored, and {value_bytes} more would pass its limit of {KV_BYTES_MAX}; delete some first"
        ));
    }
    Ok(())
}

/// A key-value store in memory, for tests and one-off calls.
#[derive(Debug, Default)]
pub struct MemoryKv(Mutex<BTreeMap<String, Vec<u8>>>);

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().expect("kv lock").get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<Result<(), String>> {
        let mut entries = self.0.lock().expect("kv lock");
        let others = entries.iter().filter(|(other, _)| *other != key);
        let (n_keys, n_bytes) = others.fold((0, 0), |(n, bytes), (_, value)| {
            (n + 1, bytes + value.len() as u64)
        });
        if let Err(refusal) = kv_quota_check(n_keys, n_bytes, value.len()) {
            return Ok(Err(refusal));
        }
        entries.insert(key.to_owned(), value.to_vec());
        Ok(Ok(()))
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.0.lock().expect("kv lock").remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> anyhow::Result<Vec<String>> {
        let entries = self.0.lock().expect("kv lock");
        Ok(entries
            .keys()
            .filter(|key| key.starts_with(prefix) && after.is_none_or(|after| key.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Where a plugin may send HTTP requests (and mail), and how much.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Hosts (`api.example.com`, or `127.0.0.1:8080` with a port) that the
    /// manifest declares and the operator approved. `*` is any host the
    /// tenant names (a webhook URL), as long as it is on the public
    /// internet.
    pub allowed_hosts: Vec<String>,
    /// Whether hosts the tenant names (through `*`, or as its SMTP server)
    /// may be on private networks and loopback: for a host inside a
    /// private network of its own, and for tests.
    pub allow_private_networks: bool,
    /// Time for one whole exchange.
    pub timeout: Duration,
    /// Largest request or response body.
    pub body_bytes_max: usize,
    /// Answer requests from this script instead of the network (a plugin
    /// run in the sandbox without a server). Every check but the address
    /// lookup still applies.
    pub scripted: Option<Arc<ScriptedHttp>>,
}

/// HTTP answers given in advance, in order, and the requests that used
/// them.
#[derive(Debug, Default)]
pub struct ScriptedHttp {
    answers: Mutex<std::collections::VecDeque<Result<host::HttpResponse, host::HttpError>>>,
    requests: Mutex<Vec<host::HttpRequest>>,
}

impl ScriptedHttp {
    /// Queues the answer to the next request.
    pub fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers
            .iter()
            .map(|(name, value)| types::Field {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        self.answers
            .lock()
            .expect("script lock")
            .push_back(Ok(host::HttpResponse {
                status,
                headers,
                body: body.to_vec(),
            }));
    }

    /// Queues a failure for the next request.
    pub fn fail(&self, error: host::HttpError) {
        self.answers
            .lock()
            .expect("script lock")
            .push_back(Err(error));
    }

    /// The requests the plugin sent, in order.
    pub fn requests(&self) -> Vec<host::HttpRequest> {
        self.requests.lock().expect("script lock").clone()
    }

    fn answer(&self, request: &host::HttpRequest) -> Result<host::HttpResponse, host::HttpError> {
        self.requests
            .lock()
            .expect("script lock")
            .push(request.clone());
        self.answers
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or_else(|| {
                Err(host::HttpError::Failed(
                    "the script has no answer left for this request".into(),
                ))
            })
    }
}

impl Default for HttpPolicy {
    fn default() -> HttpPolicy {
        HttpPolicy {
            allowed_hosts: Vec::new(),
            allow_private_networks: false,
            scripted: None,
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
    n_smtp_messages: u32,
    /// Set when a host function failed on the host's side (the database
    /// was unreachable); the call then fails as the platform's fault.
    host_failure: Option<String>,
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
            n_smtp_messages: 0,
            host_failure: None,
        }
    }

    pub(super) fn memory_denied(&self) -> bool {
        self.limits.memory_denied
    }

    pub(super) fn host_failure(&self) -> Option<&str> {
        self.host_failure.as_deref()
    }

    /// Records that the host failed at `what` and returns the trap that
    /// ends the call.
    fn fail(&mut self, what: &str, error: anyhow::Error) -> wasmtime::Error {
        let message = format!("{what}: {error:#}");
        tracing::error!(plugin = %self.plugin, tenant = %self.context.tenant, "{message}");
        self.host_failure = Some(message.clone());
        wasmtime::Error::msg(message)
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
        let named = policy.allowed_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host)
        });
        let any_public = policy.allowed_hosts.iter().any(|allowed| allowed == "*");
        if !named && !any_public {
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
        if let Some(script) = &policy.scripted {
            return script.answer(&request);
        }
        // A host the operator named is trusted; one the tenant chose must
        // be public, checked again on the addresses the connection uses.
        let public_only = !named && !policy.allow_private_networks;
        if public_only {
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            outbound::resolve_public(host.trim_matches(['[', ']']), port)
                .map_err(host::HttpError::Denied)?;
        }
        send_http(&request, policy, public_only)
    }
}

/// Performs an approved request with the policy's time and size limits.
fn send_http(
    request: &host::HttpRequest,
    policy: &HttpPolicy,
    public_only: bool,
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
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(policy.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let agent = match public_only {
        true => ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            outbound::PublicResolver::default(),
        ),
        false => ureq::Agent::new_with_config(config),
    };
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
    fn log(&mut self, level: host::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.logs.len() >= LOG_LINES_MAX {
            return Ok(());
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
        Ok(())
    }

    fn http_send(
        &mut self,
        request: host::HttpRequest,
    ) -> wasmtime::Result<Result<host::HttpResponse, host::HttpError>> {
        Ok(HostState::http_send(self, request))
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let kv = self.context.kv.clone();
        kv.get(&key)
            .map_err(|error| self.fail("reading the plugin's store", error))
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if key.is_empty() || key.len() > KV_KEY_BYTES_MAX {
            return Ok(Err(format!("a key must be 1 to {KV_KEY_BYTES_MAX} bytes")));
        }
        if value.len() > KV_VALUE_BYTES_MAX {
            return Ok(Err(format!(
                "a value must be at most {KV_VALUE_BYTES_MAX} bytes"
            )));
        }
        let kv = self.context.kv.clone();
        kv.set(&key, &value)
            .map_err(|error| self.fail("writing the plugin's store", error))
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<()> {
        let kv = self.context.kv.clone();
        kv.delete(&key)
            .map_err(|error| self.fail("deleting from the plugin's store", error))
    }

    fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.context.settings.get(&name).cloned())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok((self.context.now_ms)())
    }
}

impl smtp::Host for HostState {
    fn send(
        &mut self,
        envelope_from: String,
        recipients: Vec<String>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<String, smtp::SmtpError>> {
        Ok(self.smtp_send(&envelope_from, &recipients, &message))
    }
}

/// Messages one call may send through SMTP, and how large.
const SMTP_MESSAGES_PER_CALL_MAX: u32 = 10;
const SMTP_RECIPIENTS_MAX: usize = 50;
const SMTP_MESSAGE_BYTES_MAX: usize = 10 << 20;

/// How long one SMTP command may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the host reaches the tenant's SMTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SmtpTls {
    /// Plain SMTP, upgraded with STARTTLS, which the server must offer.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS at all: only for a relay on a trusted network.
    None,
}

impl HostState {
    fn smtp_send(
        &mut self,
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<String, smtp::SmtpError> {
        use lettre::Transport as _;
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Tls, TlsParameters};

        let misconfigured = |message: String| smtp::SmtpError::Misconfigured(message);
        let rejected = |message: String| smtp::SmtpError::Rejected(message);
        self.n_smtp_messages += 1;
        if self.n_smtp_messages > SMTP_MESSAGES_PER_CALL_MAX {
            return Err(rejected(format!(
                "more than {SMTP_MESSAGES_PER_CALL_MAX} messages in one call"
            )));
        }
        if recipients.is_empty() || recipients.len() > SMTP_RECIPIENTS_MAX {
            return Err(rejected(format!(
                "a message needs 1 to {SMTP_RECIPIENTS_MAX} recipients, not {}",
                recipients.len()
            )));
        }
        if message.len() > SMTP_MESSAGE_BYTES_MAX {
            return Err(rejected(format!(
                "the message is {} bytes; at most {SMTP_MESSAGE_BYTES_MAX} may be sent",
                message.len()
            )));
        }
        let address = |text: &str| {
            text.parse::<lettre::Address>()
                .map_err(|error| rejected(format!("{text:?} is not an email address: {error}")))
        };
        let from = address(envelope_from)?;
        let to = recipients
            .iter()
            .map(|recipient| address(recipient))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = lettre::address::Envelope::new(Some(from), to)
            .map_err(|error| rejected(error.to_string()))?;

        let settings = &self.context.settings;
        let server = settings
            .get("smtp_host")
            .filter(|host| !host.is_empty())
            .ok_or_else(|| misconfigured("setting \"smtp_host\" is not set".into()))?;
        let tls = match settings.get("smtp_tls").map(String::as_str) {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Implicit,
            Some("none") => SmtpTls::None,
            Some(other) => {
                return Err(misconfigured(format!(
                    "setting \"smtp_tls\" is {other:?}; use starttls, tls or none"
                )));
            }
        };
        let port = match settings.get("smtp_port") {
            Some(port) => port.parse::<u16>().map_err(|_| {
                misconfigured(format!(
                    "setting \"smtp_port\" is {port:?}, not a port number"
                ))
            })?,
            None if tls == SmtpTls::Implicit => 465,
            None => 587,
        };
        // The tenant names the server: like a webhook URL, it must be on
        // the public internet unless the operator allows private networks.
        // Connect to the address checked, not to the name again.
        let addrs = match self.context.http.allow_private_networks {
            true => std::net::ToSocketAddrs::to_socket_addrs(&(server.as_str(), port))
                .map(Iterator::collect::<Vec<_>>)
                .map_err(|error| format!("cannot resolve {server}: {error}")),
            false => outbound::resolve_public(server, port),
        }
        .map_err(misconfigured)?;
        let Some(addr) = addrs.first() else {
            return Err(misconfigured(format!("{server} resolves to no address")));
        };
        let tls_parameters = || {
            TlsParameters::new(server.clone())
                .map_err(|error| misconfigured(format!("TLS for {server}: {error}")))
        };
        let mut transport = lettre::SmtpTransport::builder_dangerous(addr.ip().to_string())
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .tls(match tls {
                SmtpTls::StartTls => Tls::Required(tls_parameters()?),
                SmtpTls::Implicit => Tls::Wrapper(tls_parameters()?),
                SmtpTls::None => Tls::None,
            });
        match (settings.get("smtp_username"), settings.get("smtp_password")) {
            (Some(username), Some(password)) => {
                transport =
                    transport.credentials(Credentials::new(username.clone(), password.clone()));
            }
            (None, None) => {}
            _ => {
                return Err(misconfigured(
                    "set both smtp_username and smtp_password, or neither".into(),
                ));
            }
        }
        match transport.build().send_raw(&envelope, message) {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(error) if error.is_permanent() => Err(rejected(format!("{server}: {error}"))),
            Err(error) => Err(smtp::SmtpError::Transient(format!("{server}: {error}"))),
        }
    }
}

/// WIT 0.2: 0.1's functions, adapted, and `kv-list`.
impl v0_2::host::Host for HostState {
    fn log(&mut self, level: v0_2::host::LogLevel, message: String) -> wasmtime::Result<()> {
        host::Host::log(self, level.into(), message)
    }

    fn http_send(
        &mut self,
        request: v0_2::host::HttpRequest,
    ) -> wasmtime::Result<Result<v0_2::host::HttpResponse, v0_2::host::HttpError>> {
        Ok(HostState::http_send(self, request.into())
            .map(Into::into)
            .map_err(Into::into))
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        host::Host::kv_get(self, key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        host::Host::kv_set(self, key, value)
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<()> {
        host::Host::kv_delete(self, key)
    }

    fn kv_list(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        let kv = self.context.kv.clone();
        let limit = limit.min(KV_LIST_MAX) as usize;
        kv.list(&prefix, after.as_deref(), limit)
            .map_err(|error| self.fail("listing the plugin's store", error))
    }

    fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        host::Host::setting(self, name)
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        host::Host::now_ms(self)
    }
}

impl v0_2::smtp::Host for HostState {
    fn send(
        &mut self,
        envelope_from: String,
        recipients: Vec<String>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<String, v0_2::smtp::SmtpError>> {
        Ok(self
            .smtp_send(&envelope_from, &recipients, &message)
            .map_err(Into::into))
    }
}
