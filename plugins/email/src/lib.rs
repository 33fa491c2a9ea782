//! `email`: email over SMTP through the host. The plugin builds the whole
//! RFC 5322 message and hands it to the host's SMTP client
//! (`tollgate_plugin_sdk::smtp::send`), which talks to the server in the
//! tenant's settings (`smtp_host`, `smtp_port`, `smtp_username`,
//! `smtp_password`, `smtp_tls`: read by the host, only declared here).
//!
//! # Sending
//!
//! One message goes to one recipient. It carries `From` (sender name and
//! address), `To` (recipient name and address), `Subject`, `Date` (the
//! host's clock), `Message-ID`, `In-Reply-To` (the last reference) and
//! `References` (all of them), the caller's extra headers, and, when the
//! tenant configured them, `List-Unsubscribe` and (RFC 8058, only with an
//! https link) `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The
//! body is `text/plain`, or `multipart/alternative` (text, then HTML) when
//! an HTML body is given; its boundary is derived from a hash of the
//! bodies, so the same message always builds to the same bytes.
//!
//! The Message-ID is `<H@D>`: `H` is the first 32 hex digits of
//! SHA-256(idempotency key), `D` is `message_id_domain` or else the sender
//! address's domain. The **delivery id is that Message-ID without its
//! angle brackets**, `H@D`: exactly what a reply's `In-Reply-To` names, and
//! what a later message passes in `references` (with or without brackets).
//! A retry with the same idempotency key (1 to 512 bytes, without tabs or
//! line breaks) returns the stored delivery id and sends nothing (units 0
//! then, 1 on a send); the SDK's `idempotency` helper remembers each key for
//! 30 days in a bounded part of the store.
//! The envelope sender is `return_path`, or else the sender address.
//!
//! # Unsubscribe links
//!
//! `unsubscribe_url` is an https URL template with the placeholders
//! `{delivery_id}`, `{recipient}` and `{sig}`, each replaced by its
//! percent-encoded value, where `sig` is the first 32 hex digits of
//! HMAC-SHA256(`unsubscribe_secret`, `"<delivery_id>\n<recipient>"`).
//! Each placeholder appears once, after the host name, and is followed by
//! the end of the URL or by a character that percent-encoding always
//! escapes (such as `&` or `/`), so the values can be read back from the
//! URL unambiguously. `unsubscribe_mailto` adds
//! `<mailto:ADDRESS?subject=unsubscribe>`.
//!
//! # Callbacks
//!
//! The host forwards two kinds of request to `parse_callback`:
//! - an inbound email (`content-type: message/rfc822`, or none), classified
//!   as a delivery-status bounce (`multipart/report;
//!   report-type=delivery-status`: one bounced-hard event per `Status: 5.x.x`
//!   recipient, bounced-soft per `4.x.x`; the recipient from
//!   `Original-Recipient`, else `Final-Recipient`; the detail the
//!   `Diagnostic-Code`, else the status; the delivery id from the
//!   Message-ID of the returned original or its headers), an automatic answer
//!   (`Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
//!   `Precedence: auto_reply`), an unsubscribe (sent to `unsubscribe_mailto`
//!   or with the subject `unsubscribe`) or a reply (its `In-Reply-To` or
//!   `References` names one of this channel's Message-IDs). Anything else
//!   yields no events, and so do other reports (read receipts) and
//!   non-standard bounces from `MAILER-DAEMON` or `postmaster`. A channel
//!   Message-ID is recognised by its shape (32 lower-case hex digits before
//!   the `@`); others are not reported. The sender (`From`) is the event's
//!   recipient, the first 500 characters of the text its detail, and the
//!   `Date` header its time.
//! - a one-click unsubscribe (RFC 8058: a form POST whose body holds
//!   `List-Unsubscribe=One-Click`), with the URL the host received in the
//!   header `x-tollgate-callback-url` (path and query). The URL is matched
//!   against `unsubscribe_url`; a missing or wrong `sig` is `unauthorized`.
//!   The event's time is the host's clock.
//!
//! A callback body over 10 MiB is refused as invalid input.

use tollgate_plugin_sdk::smtp::{self, SmtpError};
use tollgate_plugin_sdk::{
    Callback, Channel, ErrorKind, Events, Message, PluginError, Sent, host, idempotency,
    register_plugin,
};

mod inbound;
mod outgoing;
mod unsubscribe;

#[cfg(test)]
mod tests;

struct Email;

/// The longest idempotency key: the most the SDK's `idempotency` helper
/// remembers.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = idempotency::KEY_BYTES_MAX;

/// A callback body larger than this is refused: mail with big attachments
/// is not worth parsing for an event, and parsing costs fuel and memory.
const CALLBACK_BYTES_MAX: usize = 10 << 20;

/// A tenant's optional setting, with blank values treated as unset.
fn optional_setting(name: &str) -> Option<String> {
    host::setting(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn misconfigured(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::Misconfigured, message)
}

/// Maps the host's SMTP outcome to the plugin's error kinds: a refused
/// message is final, a deferred one is worth retrying with the same key.
fn smtp_error(error: SmtpError) -> PluginError {
    match error {
        SmtpError::Misconfigured(reason) => misconfigured(format!(
            "the SMTP settings (smtp_host, smtp_port, smtp_username, smtp_password, smtp_tls) do not work: {reason}"
        )),
        SmtpError::Rejected(answer) => PluginError {
            kind: ErrorKind::Upstream,
            message: format!("the SMTP server refused the message for good: {answer}"),
            retryable: false,
        },
        SmtpError::Transient(answer) => PluginError::upstream(format!(
            "the SMTP server deferred the message or could not be reached: {answer}; retry with the same idempotency key"
        )),
    }
}

impl Channel for Email {
    fn send(message: Message) -> Result<Sent, PluginError> {
        let key = &message.idempotency_key;
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(PluginError::invalid_input(format!(
                "idempotency_key: must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"
            )));
        }
        if key.contains(['\t', '\r', '\n']) {
            return Err(PluginError::invalid_input(
                "idempotency_key: must not contain a tab or a line break",
            ));
        }
        if let Some(delivery_id) = idempotency::recall(key) {
            return Ok(Sent {
                delivery_id,
                units: 0,
            });
        }
        let built = outgoing::build(&message, host::now_ms())?;
        let answer = smtp::send(
            &built.envelope_from,
            std::slice::from_ref(&message.recipient),
            &built.bytes,
        )
        .map_err(smtp_error)?;
        host::log(
            host::LogLevel::Debug,
            &format!("sent {}: {answer}", built.delivery_id),
        );
        // The server took the message: failing now would make the caller
        // send it again. The Message-ID is the same on a resend, which lets
        // receivers drop the duplicate.
        idempotency::remember_after_acting(key, &built.delivery_id);
        Ok(Sent {
            delivery_id: built.delivery_id,
            units: 1,
        })
    }

    fn parse_callback(callback: Callback) -> Result<Events, PluginError> {
        if callback.body.len() > CALLBACK_BYTES_MAX {
            return Err(PluginError::invalid_input(format!(
                "callback body: {} bytes, more than the {CALLBACK_BYTES_MAX} this channel reads",
                callback.body.len()
            )));
        }
        let content_type = header(&callback, "content-type")
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let events = match content_type.as_str() {
            "application/x-www-form-urlencoded" | "multipart/form-data" => {
                unsubscribe::one_click(&callback)?
            }
            "" | "message/rfc822" | "message/global" => inbound::classify(&callback.body),
            _ => Vec::new(),
        };
        Ok(Events { events, units: 0 })
    }
}

/// A callback header's value, by case-insensitive name.
fn header<'a>(callback: &'a Callback, name: &str) -> Option<&'a str> {
    callback
        .headers
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case(name))
        .map(|field| field.value.as_str())
}

register_plugin!(Email);
