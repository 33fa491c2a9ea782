//! The traits plugin authors implement, one per kind, and the names they use.

pub use crate::wit::tollgate::plugin::types::{Callback, ErrorKind, Field, PluginError};

/// What the host offers: logging, HTTP to declared hosts, a key-value
/// store, the tenant's settings and the clock. Compiled for the host's own
/// target (in a plugin's unit tests), these answer from the
/// [`testing::Harness`](crate::testing::Harness) the test installed.
pub mod host {
    pub use crate::wit::tollgate::plugin::host::{HttpError, HttpRequest, HttpResponse, LogLevel};

    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::backend;
    #[cfg(target_arch = "wasm32")]
    use crate::wit::tollgate::plugin::host as backend;

    /// Writes a line to the host's log.
    pub fn log(level: LogLevel, message: &str) {
        backend::log(level, message)
    }

    /// Sends an HTTP request through the host.
    pub fn http_send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        backend::http_send(request)
    }

    /// Reads a value from this tenant's store for this plugin.
    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        backend::kv_get(key)
    }

    /// Writes a value to this tenant's store for this plugin.
    pub fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
        backend::kv_set(key, value)
    }

    /// Removes a value from this tenant's store for this plugin.
    pub fn kv_delete(key: &str) {
        backend::kv_delete(key)
    }

    /// Keys of this tenant's store for this plugin that start with
    /// `prefix`, in byte order, after `after`: at most `limit`, and never
    /// more than 1,000. WIT 0.2 (the `api-0-2` feature) only.
    #[cfg(feature = "api-0-2")]
    pub fn kv_list(prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        backend::kv_list(prefix, after, limit)
    }

    /// The tenant's setting for this plugin, if set.
    pub fn setting(name: &str) -> Option<String> {
        backend::setting(name)
    }

    /// Milliseconds since the Unix epoch, UTC.
    pub fn now_ms() -> u64 {
        backend::now_ms()
    }

    /// A required setting, or a `misconfigured` error that names it.
    pub fn required_setting(name: &str) -> Result<String, crate::PluginError> {
        setting(name).ok_or_else(|| {
            crate::PluginError::new(
                crate::ErrorKind::Misconfigured,
                format!("setting {name:?} is not set for this plugin"),
            )
        })
    }
}

/// Why an HTTP request failed, as the error a plugin reports: a denied host
/// is the operator's configuration to fix; a malformed request is a bug in
/// the plugin; the rest are the outside service's, and worth retrying except
/// for an oversized exchange. Use it as `host::http_send(&request)?`.
impl From<host::HttpError> for PluginError {
    fn from(error: host::HttpError) -> PluginError {
        match error {
            host::HttpError::Denied(reason) => PluginError::new(ErrorKind::Misconfigured, reason),
            host::HttpError::InvalidRequest(reason) => PluginError::new(
                ErrorKind::Internal,
                format!("the plugin built a bad HTTP request: {reason}"),
            ),
            host::HttpError::TooLarge(reason) => PluginError {
                kind: ErrorKind::Upstream,
                message: reason,
                retryable: false,
            },
            host::HttpError::Timeout => PluginError::upstream(
                "the outside service did not answer within the host's time limit",
            ),
            host::HttpError::Failed(reason) => PluginError::upstream(reason),
        }
    }
}

impl PluginError {
    /// A plugin error that is not worth retrying.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PluginError {
        let retryable = matches!(kind, ErrorKind::RateLimited | ErrorKind::Upstream);
        PluginError {
            kind,
            message: message.into(),
            retryable,
        }
    }

    /// Bad input from the caller.
    pub fn invalid_input(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::InvalidInput, message)
    }

    /// The outside service failed; the call may be retried.
    pub fn upstream(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::Upstream, message)
    }
}

#[cfg(feature = "lead-source")]
pub use lead_source::*;
#[cfg(feature = "lead-source")]
mod lead_source {
    use crate::PluginError;
    pub use crate::wit::tollgate::plugin::leads::{Enrichment, Lead, SearchPage, SearchQuery};

    /// A source of leads.
    pub trait LeadSource {
        /// Searches for leads, one page at a time. Report the leads
        /// returned as `units`: that is what the tenant pays for.
        fn search(query: SearchQuery) -> Result<SearchPage, PluginError>;

        /// Fills in what the source knows about a lead. By default the
        /// source knows nothing more, and that costs nothing.
        fn enrich(lead: Lead) -> Result<Enrichment, PluginError> {
            let _ = lead;
            Ok(Enrichment {
                lead: None,
                units: 0,
            })
        }
    }

    impl<T: LeadSource> crate::wit::Guest for T {
        fn search(query: SearchQuery) -> Result<SearchPage, PluginError> {
            T::search(query)
        }
        fn enrich(lead: Lead) -> Result<Enrichment, PluginError> {
            T::enrich(lead)
        }
    }
}

#[cfg(feature = "channel")]
pub use channel::*;
#[cfg(feature = "channel")]
mod channel {
    pub use crate::wit::tollgate::plugin::messages::{
        Event, EventKind, Events, Message, Sender, Sent,
    };
    use crate::{Callback, PluginError};

    /// Sending email through the host's SMTP client. The plugin builds the
    /// whole RFC 5322 message; the host speaks SMTP to the server in the
    /// tenant's settings (`smtp_host`, `smtp_port`, `smtp_username`,
    /// `smtp_password`, `smtp_tls`). In native unit tests the
    /// [`testing::Harness`](crate::testing::Harness) answers instead.
    pub mod smtp {
        pub use crate::wit::tollgate::plugin::smtp::SmtpError;

        /// Sends `message` to `recipients` with `envelope_from` as the
        /// return path; returns the server's answer to the message.
        pub fn send(
            envelope_from: &str,
            recipients: &[String],
            message: &[u8],
        ) -> Result<String, SmtpError> {
            #[cfg(target_arch = "wasm32")]
            return crate::wit::tollgate::plugin::smtp::send(envelope_from, recipients, message);
            #[cfg(not(target_arch = "wasm32"))]
            return crate::testing::backend::smtp_send(envelope_from, recipients, message);
        }
    }

    /// A messaging channel.
    pub trait Channel {
        /// Sends one message; report 1 unit per message sent.
        fn send(message: Message) -> Result<Sent, PluginError>;

        /// Turns a provider callback into events. By default the channel
        /// has no callbacks and reports none.
        fn parse_callback(callback: Callback) -> Result<Events, PluginError> {
            let _ = callback;
            Ok(Events {
                events: Vec::new(),
                units: 0,
            })
        }
    }

    impl<T: Channel> crate::wit::Guest for T {
        fn send(message: Message) -> Result<Sent, PluginError> {
            T::send(message)
        }
        fn parse_callback(callback: Callback) -> Result<Events, PluginError> {
            T::parse_callback(callback)
        }
    }
}

#[cfg(feature = "payment-provider")]
pub use payment_provider::*;
#[cfg(feature = "payment-provider")]
mod payment_provider {
    pub use crate::wit::tollgate::plugin::payments::{
        Method, Payment, PaymentEvent, PaymentEventKind, PaymentEvents, PaymentRequest,
        PaymentStatus, Refund, RefundRequest,
    };
    use crate::{Callback, PluginError};

    /// A payment provider.
    pub trait PaymentProvider {
        /// Takes a payment.
        fn create_payment(request: PaymentRequest) -> Result<Payment, PluginError>;

        /// Gives money back.
        fn refund(request: RefundRequest) -> Result<Refund, PluginError>;

        /// Verifies a notification's signature and turns it into events.
        fn parse_callback(callback: Callback) -> Result<PaymentEvents, PluginError>;
    }

    impl<T: PaymentProvider> crate::wit::Guest for T {
        fn create_payment(request: PaymentRequest) -> Result<Payment, PluginError> {
            T::create_payment(request)
        }
        fn refund(request: RefundRequest) -> Result<Refund, PluginError> {
            T::refund(request)
        }
        fn parse_callback(callback: Callback) -> Result<PaymentEvents, PluginError> {
            T::parse_callback(callback)
        }
    }
}

#[cfg(feature = "pricing-rule")]
pub use pricing_rule::*;
#[cfg(feature = "pricing-rule")]
mod pricing_rule {
    use crate::PluginError;
    pub use crate::wit::tollgate::plugin::pricing::{Price, PriceRequest};

    /// A rule that adjusts the configured price of a call.
    pub trait PricingRule {
        /// Returns the price to charge, in millionths of a credit.
        fn adjust_price(request: PriceRequest) -> Result<Price, PluginError>;
    }

    impl<T: PricingRule> crate::wit::Guest for T {
        fn adjust_price(request: PriceRequest) -> Result<Price, PluginError> {
            T::adjust_price(request)
        }
    }
}

/// Registers the type that implements the plugin's trait as the component's
/// exports. Use it once, at the crate root.
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ident) => {
        $crate::wit::__export_world!($plugin with_types_in $crate::wit);
    };
}
