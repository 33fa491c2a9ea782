//! `webhook`: a channel that hands each message to a URL the tenant names
//! (an SMS gateway, a chat tool's bridge) as a signed JSON POST, and turns the
//! gateway's signed callbacks into delivery events.
//!
//! # Sending
//!
//! `send` POSTs to the `url` setting:
//!
//! ```text
//! content-type: application/json
//! idempotency-key: <the message's idempotency key>
//! x-tollgate-delivery: <our delivery id>
//! x-tollgate-timestamp: <unix seconds>
//! x-tollgate-signature: v1=<hex HMAC-SHA256(signing_secret, "<timestamp>.<body>")>
//!
//! {"id": "<our delivery id>", "idempotency_key": "...", "recipient": "...",
//!  "recipient_name": "..." | null, "sender": {"address": "...", "name": "..." | null},
//!  "subject": "..." | null, "text": "...", "html": "..." | null,
//!  "headers": {"<name>": "<value>", ...}, "references": ["...", ...],
//!  "sent_at_ms": <milliseconds since the Unix epoch>}
//! ```
//!
//! Our delivery id is `wh_` and the first 32 hex digits of the SHA-256 of the
//! idempotency key, so a retry carries the same id. When the gateway answers
//! 2xx with a JSON object whose `"id"` is a string, the gateway's id wins: it
//! is the delivery id returned, and the one its callbacks should name.
//! Either way the id is remembered by the SDK's `idempotency` helper (for 30
//! days, in a bounded part of the store), and a retry with that key returns
//! it without sending again (and costs 0 units). Two concurrent first
//! attempts can both send; the `idempotency-key` header lets the gateway
//! drop the second. The key is 1 to 512 bytes of printable ASCII without
//! spaces.
//!
//! The gateway's answer: 2xx accepted; 401/403 unauthorized (it does not
//! accept our signature); 408/429 rate-limited; 3xx misconfigured (the host
//! does not follow redirects); other 4xx invalid-input, not retryable, with
//! the start of the answer; 5xx and transport failures upstream, retryable.
//!
//! # Callbacks
//!
//! The gateway POSTs `{"events": [{"type": ..., "delivery_id": ...,
//! "recipient": ..., "url": ..., "occurred_at_ms": ..., "detail": ...}]}`,
//! every field but `type` optional, signed the way we sign sends but with
//! `callback_secret` (`signing_secret` unless set): `x-tollgate-timestamp`
//! within five minutes of now, either way, and `x-tollgate-signature:
//! v1=<hex>` (several comma-separated `v1=` values are allowed, for rotating
//! the secret). The types are `delivered`, `opened`, `clicked`, `replied`,
//! `auto_replied`, `bounced_hard`, `bounced_soft` and `unsubscribed`; any
//! other type refuses the whole callback, so the gateway sees the mistake.
//!
//! Secrets must be at least 16 bytes. Every size a caller or the gateway
//! controls is capped (the `*_MAX` constants below); a message over a cap is
//! refused as invalid input naming the field.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_plugin_sdk::{
    Callback, Channel, ErrorKind, Event, EventKind, Events, Field, Message, PluginError, Sent,
    host, idempotency, register_plugin,
};

struct Webhook;

/// The longest idempotency key: the most the SDK's `idempotency` helper
/// remembers.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = idempotency::KEY_BYTES_MAX;

/// The longest `url` setting; real webhook URLs are far shorter.
const URL_BYTES_MAX: usize = 2048;

/// The shortest secret: anything shorter is guessable, not a secret.
const SECRET_BYTES_MIN: usize = 16;

/// The longest recipient, display name, sender address, subject or
/// reference: addresses and subject lines, not documents.
const FIELD_BYTES_MAX: usize = 1024;

/// The longest plain-text body: a long email; SMS and chat messages are
/// much shorter.
const TEXT_BYTES_MAX: usize = 64 << 10;

/// The longest HTML body: a heavy newsletter, inline styles included.
const HTML_BYTES_MAX: usize = 256 << 10;

/// Most headers (or metadata fields) one message may carry.
const HEADERS_MAX: usize = 64;

/// The longest header name and value.
const HEADER_NAME_BYTES_MAX: usize = 256;
const HEADER_VALUE_BYTES_MAX: usize = 4 << 10;

/// Most earlier messages one message may refer to: a long thread.
const REFERENCES_MAX: usize = 100;

/// The longest delivery id taken from the gateway; a longer one is not an id
/// and our own is used instead.
const GATEWAY_ID_BYTES_MAX: usize = 256;

/// How much of a refusing answer an error message quotes.
const EXCERPT_BYTES_MAX: usize = 300;

/// How far a callback's timestamp may be from now, either way, against
/// replays.
const CALLBACK_TOLERANCE_SECONDS: u64 = 300;

/// A callback larger than this is not one.
const CALLBACK_BYTES_MAX: usize = 256 << 10;

/// Most events one callback may carry.
const CALLBACK_EVENTS_MAX: usize = 100;

/// Most `v1=` signatures one callback may offer.
const CALLBACK_SIGNATURES_MAX: usize = 4;

/// The longest timestamp header: 20 digits hold any u64.
const TIMESTAMP_DIGITS_MAX: usize = 20;

/// How much of an unknown event type an error message quotes.
const EVENT_TYPE_QUOTED_BYTES_MAX: usize = 64;

const TIMESTAMP_HEADER: &str = "x-tollgate-timestamp";
const SIGNATURE_HEADER: &str = "x-tollgate-signature";

/// The body we POST; the fields keep this order on the wire.
#[derive(Serialize)]
struct Outgoing<'a> {
    id: &'a str,
    idempotency_key: &'a str,
    recipient: &'a str,
    recipient_name: Option<&'a str>,
    sender: OutgoingSender<'a>,
    subject: Option<&'a str>,
    text: &'a str,
    html: Option<&'a str>,
    headers: BTreeMap<&'a str, &'a str>,
    references: &'a [String],
    sent_at_ms: u64,
}

#[derive(Serialize)]
struct OutgoingSender<'a> {
    address: &'a str,
    name: Option<&'a str>,
}

/// A gateway's 2xx answer that names its own delivery id.
#[derive(Deserialize)]
struct Accepted {
    id: String,
}

#[derive(Deserialize)]
struct CallbackBody {
    events: Vec<CallbackEvent>,
}

#[derive(Deserialize)]
struct CallbackEvent {
    #[serde(rename = "type")]
    kind: String,
    delivery_id: Option<String>,
    recipient: Option<String>,
    url: Option<String>,
    occurred_at_ms: Option<u64>,
    detail: Option<String>,
}

impl Channel for Webhook {
    fn send(message: Message) -> Result<Sent, PluginError> {
        check_idempotency_key(&message.idempotency_key)?;
        if let Some(delivery_id) = idempotency::recall(&message.idempotency_key) {
            return Ok(Sent {
                delivery_id,
                units: 0,
            });
        }
        let headers = check_message(&message)?;
        let url = url_setting()?;
        let secret = secret_setting("signing_secret")?;
        let our_id = delivery_id(&message.idempotency_key);
        let now_ms = host::now_ms();
        let body = serde_json::to_vec(&Outgoing {
            id: &our_id,
            idempotency_key: &message.idempotency_key,
            recipient: &message.recipient,
            recipient_name: message.recipient_name.as_deref(),
            sender: OutgoingSender {
                address: &message.sender.address,
                name: message.sender.name.as_deref(),
            },
            subject: message.subject.as_deref(),
            text: &message.text_body,
            html: message.html_body.as_deref(),
            headers,
            references: &message.references,
            sent_at_ms: now_ms,
        })
        .map_err(|error| {
            PluginError::new(ErrorKind::Internal, format!("encoding the body: {error}"))
        })?;
        let timestamp = (now_ms / 1000).to_string();
        let signature = hex::encode(sign(&secret, &timestamp, &body).finalize().into_bytes());
        let request = host::HttpRequest {
            method: "POST".into(),
            url,
            headers: vec![
                field("content-type", "application/json"),
                field("idempotency-key", &message.idempotency_key),
                field("x-tollgate-delivery", &our_id),
                field(TIMESTAMP_HEADER, &timestamp),
                field(SIGNATURE_HEADER, &format!("v1={signature}")),
            ],
            body,
        };
        let response = host::http_send(&request)?;
        check_status(response.status, &response.body)?;
        let delivery_id = gateway_id(&response.body).unwrap_or(our_id);
        // The gateway can still drop a retry by its key.
        idempotency::remember_after_acting(&message.idempotency_key, &delivery_id);
        Ok(Sent {
            delivery_id,
            units: 1,
        })
    }

    fn parse_callback(callback: Callback) -> Result<Events, PluginError> {
        if callback.body.len() > CALLBACK_BYTES_MAX {
            return Err(PluginError::invalid_input(format!(
                "the callback is {} bytes, more than {CALLBACK_BYTES_MAX}",
                callback.body.len()
            )));
        }
        verify(&callback)?;
        let body: CallbackBody = serde_json::from_slice(&callback.body).map_err(|error| {
            PluginError::invalid_input(format!(
                "the callback is not {{\"events\": [...]}} as documented: {error}"
            ))
        })?;
        if body.events.len() > CALLBACK_EVENTS_MAX {
            return Err(PluginError::invalid_input(format!(
                "the callback carries {} events, more than {CALLBACK_EVENTS_MAX}; send them in several callbacks",
                body.events.len()
            )));
        }
        let events = body
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                let kind = event_kind(&event.kind).ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "event {index} has the unknown type {:?}; the types are delivered, opened, clicked, replied, auto_replied, bounced_hard, bounced_soft and unsubscribed",
                        clip(&event.kind, EVENT_TYPE_QUOTED_BYTES_MAX)
                    ))
                })?;
                Ok(Event {
                    kind,
                    delivery_id: event.delivery_id,
                    recipient: event.recipient,
                    url: event.url,
                    occurred_at_ms: event.occurred_at_ms,
                    detail: event.detail,
                })
            })
            .collect::<Result<Vec<Event>, PluginError>>()?;
        Ok(Events { events, units: 0 })
    }
}

fn field(name: &str, value: &str) -> Field {
    Field {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// Our delivery id for a message: stable across retries of the same key.
fn delivery_id(idempotency_key: &str) -> String {
    let digest = hex::encode(Sha256::digest(idempotency_key.as_bytes()));
    format!("wh_{}", &digest[..32])
}

/// The MAC of `<timestamp>.<body>` under `secret`, ready to finalize or verify.
fn sign(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The key is remembered by the `idempotency` helper and sent as an HTTP
/// header: it must suit both (printable ASCII has no tab or line break).
fn check_idempotency_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(PluginError::invalid_input(format!(
            "idempotency_key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"
        )));
    }
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(PluginError::invalid_input(
            "idempotency_key must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Checks every size the caller controls; returns the headers as the JSON
/// object they are sent as.
fn check_message(message: &Message) -> Result<BTreeMap<&str, &str>, PluginError> {
    if message.recipient.is_empty() {
        return Err(PluginError::invalid_input("recipient is empty"));
    }
    let short_fields = [
        ("recipient", Some(&message.recipient)),
        ("recipient_name", message.recipient_name.as_ref()),
        ("sender.address", Some(&message.sender.address)),
        ("sender.name", message.sender.name.as_ref()),
        ("subject", message.subject.as_ref()),
    ];
    for (name, value) in short_fields {
        check_len(name, value.map_or("", String::as_str), FIELD_BYTES_MAX)?;
    }
    check_len("text_body", &message.text_body, TEXT_BYTES_MAX)?;
    check_len(
        "html_body",
        message.html_body.as_deref().unwrap_or(""),
        HTML_BYTES_MAX,
    )?;
    if message.references.len() > REFERENCES_MAX {
        return Err(PluginError::invalid_input(format!(
            "references has {} entries, more than {REFERENCES_MAX}",
            message.references.len()
        )));
    }
    for reference in &message.references {
        check_len("a reference", reference, FIELD_BYTES_MAX)?;
    }
    if message.headers.len() > HEADERS_MAX {
        return Err(PluginError::invalid_input(format!(
            "headers has {} entries, more than {HEADERS_MAX}",
            message.headers.len()
        )));
    }
    let mut headers = BTreeMap::new();
    for header in &message.headers {
        check_len("a header name", &header.name, HEADER_NAME_BYTES_MAX)?;
        check_len(
            &format!("header {:?}", header.name),
            &header.value,
            HEADER_VALUE_BYTES_MAX,
        )?;
        if headers
            .insert(header.name.as_str(), header.value.as_str())
            .is_some()
        {
            return Err(PluginError::invalid_input(format!(
                "header {:?} appears more than once; they are sent as one JSON object",
                header.name
            )));
        }
    }
    Ok(headers)
}

fn check_len(name: &str, value: &str, bytes_max: usize) -> Result<(), PluginError> {
    match value.len() > bytes_max {
        true => Err(PluginError::invalid_input(format!(
            "{name} is {} bytes, more than {bytes_max}",
            value.len()
        ))),
        false => Ok(()),
    }
}

fn misconfigured(message: String) -> PluginError {
    PluginError::new(ErrorKind::Misconfigured, message)
}

/// The `url` setting, checked with the parser the host's HTTP client uses.
fn url_setting() -> Result<String, PluginError> {
    let url = host::required_setting("url")?;
    let bad = |reason: &str| misconfigured(format!("setting \"url\" {reason}"));
    if url.len() > URL_BYTES_MAX {
        return Err(bad(&format!("is longer than {URL_BYTES_MAX} bytes")));
    }
    let uri: http::Uri = url.parse().map_err(|error| {
        bad(&format!(
            "is not a URL such as https://gateway.example.com/hook ({error})"
        ))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with https:// (or http://)")),
    }
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    if authority.contains('@') {
        return Err(bad(
            "must not carry a user name or password: the gateway knows us by the signature",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(url)
}

/// A secret setting: required, and long enough to be one.
fn secret_setting(name: &str) -> Result<String, PluginError> {
    let secret = host::required_setting(name)?;
    check_secret(name, secret)
}

fn check_secret(name: &str, secret: String) -> Result<String, PluginError> {
    match secret.len() < SECRET_BYTES_MIN {
        true => Err(misconfigured(format!(
            "setting {name:?} is shorter than {SECRET_BYTES_MIN} bytes; use a long random secret"
        ))),
        false => Ok(secret),
    }
}

/// The secret callbacks are signed with: `callback_secret`, or
/// `signing_secret` when that is unset (or left blank).
fn callback_secret() -> Result<String, PluginError> {
    match host::setting("callback_secret").filter(|secret| !secret.is_empty()) {
        Some(secret) => check_secret("callback_secret", secret),
        None => secret_setting("signing_secret"),
    }
}

/// Maps the gateway's status onto the error the caller acts on.
fn check_status(status: u16, body: &[u8]) -> Result<(), PluginError> {
    let answer = excerpt(body);
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(PluginError::new(
            ErrorKind::Unauthorized,
            format!(
                "the gateway refused our signature ({status}: {answer}); give it the same signing_secret as this plugin"
            ),
        )),
        408 | 429 => Err(PluginError::new(
            ErrorKind::RateLimited,
            format!("the gateway asks to slow down ({status}: {answer})"),
        )),
        300..=399 => Err(misconfigured(format!(
            "the gateway redirects ({status}); set url to the address it redirects to"
        ))),
        400..=499 => Err(PluginError::invalid_input(format!(
            "the gateway refused the message ({status}: {answer})"
        ))),
        _ => Err(PluginError::upstream(format!(
            "the gateway failed ({status}: {answer}); retry with the same idempotency key"
        ))),
    }
}

/// The start of an answer, on one line, for an error message.
fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(EXCERPT_BYTES_MAX + 4)];
    let text: String = String::from_utf8_lossy(head)
        .chars()
        .map(|char| if char.is_control() { ' ' } else { char })
        .collect();
    let mut text = clip(text.trim(), EXCERPT_BYTES_MAX);
    if body.len() > EXCERPT_BYTES_MAX {
        text.push('…');
    }
    match text.is_empty() {
        true => "empty answer".to_owned(),
        false => text,
    }
}

/// At most `bytes_max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, bytes_max: usize) -> String {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The gateway's own id from a 2xx answer, when it gives a usable one.
fn gateway_id(body: &[u8]) -> Option<String> {
    let accepted: Accepted = serde_json::from_slice(body).ok()?;
    let usable = !accepted.id.is_empty()
        && accepted.id.len() <= GATEWAY_ID_BYTES_MAX
        && !accepted.id.chars().any(char::is_control);
    if !usable {
        host::log(
            host::LogLevel::Warn,
            "the gateway answered with an empty, overlong or unprintable id; using our own",
        );
    }
    usable.then_some(accepted.id)
}

fn header<'a>(callback: &'a Callback, name: &str) -> Option<&'a str> {
    callback
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.trim())
}

/// Checks a callback's timestamp and signature.
fn verify(callback: &Callback) -> Result<(), PluginError> {
    let unauthorized = |message: String| PluginError::new(ErrorKind::Unauthorized, message);
    let secret = callback_secret()?;
    let timestamp = header(callback, TIMESTAMP_HEADER)
        .ok_or_else(|| unauthorized(format!("the callback has no {TIMESTAMP_HEADER} header")))?;
    let seconds = match timestamp.len() <= TIMESTAMP_DIGITS_MAX
        && timestamp.bytes().all(|byte| byte.is_ascii_digit())
    {
        true => timestamp.parse::<u64>().ok(),
        false => None,
    }
    .ok_or_else(|| unauthorized(format!("{TIMESTAMP_HEADER} is not unix seconds")))?;
    let now = host::now_ms() / 1000;
    if now.abs_diff(seconds) > CALLBACK_TOLERANCE_SECONDS {
        return Err(unauthorized(format!(
            "the callback's timestamp is more than {CALLBACK_TOLERANCE_SECONDS} s from now: a replay, or the gateway's clock is wrong"
        )));
    }
    let signatures = header(callback, SIGNATURE_HEADER)
        .ok_or_else(|| unauthorized(format!("the callback has no {SIGNATURE_HEADER} header")))?;
    let valid = signatures
        .split(',')
        .take(CALLBACK_SIGNATURES_MAX)
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|signature| hex::decode(signature).ok())
        .any(|signature| {
            sign(&secret, timestamp, &callback.body)
                .verify_slice(&signature)
                .is_ok()
        });
    match valid {
        true => Ok(()),
        false => Err(unauthorized(
            "the callback's signature does not match its body under callback_secret (or signing_secret)".into(),
        )),
    }
}

fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "delivered" => EventKind::Delivered,
        "opened" => EventKind::Opened,
        "clicked" => EventKind::Clicked,
        "replied" => EventKind::Replied,
        "auto_replied" => EventKind::AutoReplied,
        "bounced_hard" => EventKind::BouncedHard,
        "bounced_soft" => EventKind::BouncedSoft,
        "unsubscribed" => EventKind::Unsubscribed,
        _ => return None,
    })
}

register_plugin!(Webhook);

#[cfg(test)]
mod tests;
