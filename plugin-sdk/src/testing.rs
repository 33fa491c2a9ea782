//! Running a plugin natively, as plain Rust, in its own unit tests: install
//! a [`Harness`] with the settings, HTTP responses, store contents and time
//! the test needs, call the plugin's trait functions inside
//! [`Harness::run`], and read back what the plugin did.
//!
//! ```ignore
//! let mut harness = Harness::new().setting("api_key", "k").respond(200, r#"{"people": []}"#);
//! let page = harness.run(|| MyLeads::search(query));
//! assert_eq!(harness.requests()[0].url, "https://api.example.com/v1/search");
//! ```
//!
//! To run it in the real sandbox as well, build it for `wasm32-wasip2` and
//! call it through the host's runtime.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use crate::host::{HttpError, HttpRequest, HttpResponse, LogLevel};

/// What a plugin sees of the host during a native test, and what it did.
#[derive(Debug, Default, Clone)]
pub struct Harness {
    settings: BTreeMap<String, String>,
    kv: BTreeMap<String, Vec<u8>>,
    responses: VecDeque<Result<HttpResponse, HttpError>>,
    requests: Vec<HttpRequest>,
    logs: Vec<(LogLevel, String)>,
    now_ms: u64,
    #[cfg(feature = "channel")]
    smtp_answers: VecDeque<Result<String, crate::smtp::SmtpError>>,
    #[cfg(feature = "channel")]
    mails: Vec<SentMail>,
}

/// A message a channel handed to the host's SMTP client.
#[cfg(feature = "channel")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    /// The return path.
    pub envelope_from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The RFC 5322 message, as the plugin built it.
    pub message: Vec<u8>,
}

thread_local! {
    static CURRENT: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

impl Harness {
    /// No settings, an empty store, no HTTP responses, the clock at 0.
    pub fn new() -> Harness {
        Harness::default()
    }

    /// Sets one of the tenant's settings.
    pub fn setting(mut self, name: &str, value: &str) -> Harness {
        self.settings.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Queues the response to the next HTTP request (a JSON or text body).
    pub fn respond(mut self, status: u16, body: &str) -> Harness {
        self.responses.push_back(Ok(HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }));
        self
    }

    /// Queues a failure for the next HTTP request.
    pub fn fail_http(mut self, error: HttpError) -> Harness {
        self.responses.push_back(Err(error));
        self
    }

    /// Queues the SMTP server's answer to the next message; without one,
    /// the server accepts every message with `250 OK`.
    #[cfg(feature = "channel")]
    pub fn smtp_answer(mut self, answer: Result<String, crate::smtp::SmtpError>) -> Harness {
        self.smtp_answers.push_back(answer);
        self
    }

    /// The messages the plugin sent through SMTP, in order.
    #[cfg(feature = "channel")]
    pub fn mails(&self) -> &[SentMail] {
        &self.mails
    }

    /// Puts a value in the store.
    pub fn kv(mut self, key: &str, value: &[u8]) -> Harness {
        self.kv.insert(key.to_owned(), value.to_vec());
        self
    }

    /// Sets the clock.
    pub fn now_ms(mut self, now_ms: u64) -> Harness {
        self.now_ms = now_ms;
        self
    }

    /// Runs `call` with this harness as the host; what the plugin does to
    /// the host is recorded here afterwards.
    pub fn run<T>(&mut self, call: impl FnOnce() -> T) -> T {
        CURRENT.with(|current| *current.borrow_mut() = Some(std::mem::take(self)));
        let result = call();
        CURRENT.with(|current| *self = current.borrow_mut().take().expect("installed above"));
        result
    }

    /// The HTTP requests the plugin sent, in order.
    pub fn requests(&self) -> &[HttpRequest] {
        &self.requests
    }

    /// The lines the plugin logged.
    pub fn logs(&self) -> &[(LogLevel, String)] {
        &self.logs
    }

    /// The store as the plugin left it.
    pub fn stored(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }
}

fn with<T>(use_harness: impl FnOnce(&mut Harness) -> T) -> T {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let harness = current
            .as_mut()
            .expect("host functions run natively only inside Harness::run");
        use_harness(harness)
    })
}

/// The host functions, answered by the installed harness.
pub(crate) mod backend {
    use super::*;

    pub fn log(level: LogLevel, message: &str) {
        with(|harness| harness.logs.push((level, message.to_owned())))
    }

    pub fn http_send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        with(|harness| {
            harness.requests.push(request.clone());
            harness.responses.pop_front().unwrap_or_else(|| {
                Err(HttpError::Failed(
                    "the harness has no response queued".into(),
                ))
            })
        })
    }

    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        with(|harness| harness.kv.get(key).cloned())
    }

    pub fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
        with(|harness| {
            harness.kv.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub fn kv_delete(key: &str) {
        with(|harness| {
            harness.kv.remove(key);
        })
    }

    #[cfg(feature = "api-0-2")]
    pub fn kv_list(prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        with(|harness| {
            harness
                .kv
                .keys()
                .filter(|key| {
                    key.starts_with(prefix) && after.is_none_or(|after| key.as_str() > after)
                })
                .take(limit.min(1_000) as usize)
                .cloned()
                .collect()
        })
    }

    pub fn setting(name: &str) -> Option<String> {
        with(|harness| harness.settings.get(name).cloned())
    }

    pub fn now_ms() -> u64 {
        with(|harness| harness.now_ms)
    }

    #[cfg(feature = "channel")]
    pub fn smtp_send(
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<String, crate::smtp::SmtpError> {
        with(|harness| {
            harness.mails.push(SentMail {
                envelope_from: envelope_from.to_owned(),
                recipients: recipients.to_vec(),
                message: message.to_vec(),
            });
            harness
                .smtp_answers
                .pop_front()
                .unwrap_or_else(|| Ok("250 OK".to_owned()))
        })
    }
}
