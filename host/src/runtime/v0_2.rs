//! Bindings for WIT `tollgate:plugin@0.2.0`: version 0.1 plus the host
//! function `kv-list`. The types and the export signatures are those of
//! 0.1, so these bindings reuse 0.1's Rust types for every interface but
//! the two with host functions (`host`, which gained `kv-list`, and
//! `smtp`), which are generated anew and adapted to 0.1's with `From`.
//! A call into a 0.2 plugin is thus the same `Call` and `Reply` as into a
//! 0.1 plugin.

pub mod lead_source {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.2",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        imports: { default: trappable },
        world: "lead-source",
        with: {
            "tollgate:plugin/types": crate::runtime::v0_1::types,
            "tollgate:plugin/leads": crate::runtime::v0_1::leads,
        },
    });
}

pub mod channel {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.2",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        imports: { default: trappable },
        world: "channel",
        with: {
            "tollgate:plugin/types": crate::runtime::v0_1::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
            "tollgate:plugin/messages": crate::runtime::v0_1::messages,
        },
    });
}

pub mod payment_provider {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.2",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        imports: { default: trappable },
        world: "payment-provider",
        with: {
            "tollgate:plugin/types": crate::runtime::v0_1::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
            "tollgate:plugin/payments": crate::runtime::v0_1::payments,
        },
    });
}

pub mod pricing_rule {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/v0.2",
        additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
        imports: { default: trappable },
        world: "pricing-rule",
        with: {
            "tollgate:plugin/types": crate::runtime::v0_1::types,
            "tollgate:plugin/host": super::lead_source::tollgate::plugin::host,
            "tollgate:plugin/pricing": crate::runtime::v0_1::pricing,
        },
    });
}

pub use channel::tollgate::plugin::smtp;
pub use lead_source::tollgate::plugin::host;

/// The 0.2 interfaces that hold only types. Their bindings are 0.1's, which
/// name the 0.1 instances, so the linker is given the 0.2 names as well.
pub const TYPE_ONLY_INTERFACES: [&str; 5] = [
    "tollgate:plugin/types@0.2.0",
    "tollgate:plugin/leads@0.2.0",
    "tollgate:plugin/messages@0.2.0",
    "tollgate:plugin/payments@0.2.0",
    "tollgate:plugin/pricing@0.2.0",
];

use super::v0_1;

impl From<host::LogLevel> for v0_1::host::LogLevel {
    fn from(level: host::LogLevel) -> v0_1::host::LogLevel {
        match level {
            host::LogLevel::Trace => v0_1::host::LogLevel::Trace,
            host::LogLevel::Debug => v0_1::host::LogLevel::Debug,
            host::LogLevel::Info => v0_1::host::LogLevel::Info,
            host::LogLevel::Warn => v0_1::host::LogLevel::Warn,
            host::LogLevel::Error => v0_1::host::LogLevel::Error,
        }
    }
}

impl From<host::HttpRequest> for v0_1::host::HttpRequest {
    fn from(request: host::HttpRequest) -> v0_1::host::HttpRequest {
        v0_1::host::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        }
    }
}

impl From<v0_1::host::HttpResponse> for host::HttpResponse {
    fn from(response: v0_1::host::HttpResponse) -> host::HttpResponse {
        host::HttpResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

impl From<v0_1::host::HttpError> for host::HttpError {
    fn from(error: v0_1::host::HttpError) -> host::HttpError {
        match error {
            v0_1::host::HttpError::Denied(reason) => host::HttpError::Denied(reason),
            v0_1::host::HttpError::InvalidRequest(reason) => {
                host::HttpError::InvalidRequest(reason)
            }
            v0_1::host::HttpError::TooLarge(reason) => host::HttpError::TooLarge(reason),
            v0_1::host::HttpError::Timeout => host::HttpError::Timeout,
            v0_1::host::HttpError::Failed(reason) => host::HttpError::Failed(reason),
        }
    }
}

impl From<v0_1::smtp::SmtpError> for smtp::SmtpError {
    fn from(error: v0_1::smtp::SmtpError) -> smtp::SmtpError {
        match error {
            v0_1::smtp::SmtpError::Misconfigured(reason) => smtp::SmtpError::Misconfigured(reason),
            v0_1::smtp::SmtpError::Rejected(reason) => smtp::SmtpError::Rejected(reason),
            v0_1::smtp::SmtpError::Transient(reason) => smtp::SmtpError::Transient(reason),
        }
    }
}
