//! `linkedin`: connection requests and messages through a LinkedIn-style
//! REST API, and the signed webhooks that report replies, reads and answers
//! to invitations. Every request goes through the host, which allows only
//! approved hosts.
//!
//! # Sending
//!
//! The recipient is a member URN, `urn:li:person:<id>` (`<id>`: ASCII
//! letters, digits, `-`, `_`), or a profile URL,
//! `https://www.linkedin.com/in/<vanity>/`. The URL may also use `http://`
//! or no scheme, `linkedin.com` or a country subdomain (`uk.linkedin.com`),
//! no trailing slash, and a query string or fragment, which are ignored.
//! Anything else is invalid input. The vanity name is normalized: it is
//! percent-decoded and lower-cased (LinkedIn ignores case), then
//! percent-encoded again with upper-case hex for everything but ASCII
//! letters, digits, `-` and `_`. So `Ada-Lovelace` and `ada-lovelace` share
//! one cache entry, and so do `jos%C3%A9` and `josé`. A profile URL is
//! resolved once, and the store keeps the URN:
//!
//! ```text
//! GET {api_base_url}/v2/people/(vanityName:<vanity>)
//!     -> 2xx {"id": "<id>"}     kv urn/<vanity> = "urn:li:person:<id>"
//! ```
//!
//! The message header `linkedin-action` (name and value in any case)
//! chooses what to send:
//!
//! ```text
//! connect            POST {api_base_url}/v2/invitations
//!                    {"invitee": "<urn>", "message": "<text-body>"}
//!                    -> 2xx {"id": "<id>"}   delivery id "invitation:<id>"
//! message (default)  POST {api_base_url}/v2/messages
//!                    {"recipients": ["<urn>"], "subject": "<subject>",
//!                     "body": "<text-body>", "thread": "<thread>"}
//!                    -> 2xx {"id": "<id>"}   delivery id "message:<id>"
//! ```
//!
//! An invitation leaves `message` out when the text body is empty (an
//! invitation without a note), and its note is at most 300 characters, as on
//! LinkedIn. A message leaves `subject` out when there is none. It leaves
//! `thread` out unless the message has a `message:` reference. Then `thread`
//! is the latest such reference with the prefix removed. `invitation:`
//! references are skipped, because an invitation is not a thread, and
//! references without either prefix are passed on as they are. The HTML
//! body, the sender (the token's member is the sender) and a connection
//! request's subject are not used. A JSON `"id"` in the answer may be a
//! string or a number.
//!
//! Every request carries these headers, and the POSTs also carry
//! `Content-Type: application/json`:
//!
//! ```text
//! Authorization: Bearer <access_token>
//! X-Restli-Protocol-Version: 2.0.0
//! LinkedIn-Version: 202401
//! ```
//!
//! Answers other than 2xx become these errors. The reason is the answer's
//! JSON `"message"`, or else its text.
//!
//! ```text
//! 401        unauthorized   the token expired or was revoked: reconnect LinkedIn
//! 403        invalid-input  for a message: you are not connected, send a
//!                           connection request first
//! 404        not-found      no such profile or member; a cached URN is forgotten
//! 429        rate-limited   for a connection request: the weekly invitation limit
//! other 4xx  invalid-input  (400, 422: LinkedIn refused the request's content)
//! 5xx        upstream       retryable
//! ```
//!
//! Sending is idempotent. After LinkedIn accepts, the SDK's `idempotency`
//! helper remembers the delivery id by the idempotency key (1 to 512 bytes,
//! without tabs or line breaks) for 30 days, in a bounded part of the store.
//! A call with a key it remembers returns that delivery id with 0 units and
//! sends nothing. The API itself takes no idempotency key, so if LinkedIn
//! acts but the answer is lost (a timeout), a retry sends the request again.
//!
//! # Callbacks
//!
//! A callback is a webhook POST signed with
//! `X-LI-Signature: <hex HMAC-SHA256(webhook_secret, raw body)>` (hex in
//! either case). If the signature is missing or wrong, the callback is
//! refused as unauthorized. Without a `webhook_secret` setting the plugin is
//! misconfigured for callbacks. The signature covers no timestamp, so the
//! plugin cannot refuse a replayed callback. The body is at most 256 KiB and
//! carries at most 100 events:
//!
//! ```text
//! {"events": [{"type": "<type>", "id": "<event id, not used>",
//!              "inReplyTo": "<delivery id>", "from": "urn:li:person:<id>",
//!              "text": "<text>", "createdAt": <ms since the epoch>}]}
//! ```
//!
//! Only `type` is required. `inReplyTo` becomes the event's delivery id. It
//! normally holds a delivery id as `send` returned it. A bare LinkedIn id is
//! given the prefix of the event's family: `message:` for `MESSAGE_*`,
//! `invitation:` for `INVITATION_*`. `from` becomes the event's recipient
//! (the member we wrote to), and `createdAt` becomes its time.
//!
//! ```text
//! MESSAGE_RECEIVED      replied       detail: the first 500 characters of text
//! MESSAGE_READ          opened
//! INVITATION_ACCEPTED   delivered     detail: "invitation accepted"
//! INVITATION_IGNORED    bounced-hard  detail: says not to invite again
//! INVITATION_WITHDRAWN  bounced-hard  detail: says not to invite again
//! anything else         skipped (LinkedIn adds event types over time)
//! ```
//!
//! An accepted invitation is reported as `delivered` because a connection
//! request never lands in an inbox the way a message does. What it
//! delivers is the connection. Once the invitation is accepted, the
//! connection exists and messages to this member can be delivered, which is
//! what a sequence waits for before its first message. A received message
//! without `inReplyTo` is still a reply: it has no delivery id, but the
//! recipient identifies the member.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_plugin_sdk::{
    Callback, Channel, ErrorKind, Event, EventKind, Events, Field, Message, PluginError, Sent,
    host, idempotency, register_plugin,
};

struct LinkedIn;

const DEFAULT_BASE_URL: &str = "https://api.linkedin.com";
const RESTLI_PROTOCOL_VERSION: &str = "2.0.0";
/// The API version this plugin speaks; LinkedIn names versions by month.
const LINKEDIN_VERSION: &str = "202401";
const ACTION_HEADER: &str = "linkedin-action";
const SIGNATURE_HEADER: &str = "x-li-signature";
const PERSON_URN_PREFIX: &str = "urn:li:person:";
const INVITATION_PREFIX: &str = "invitation:";
const MESSAGE_PREFIX: &str = "message:";

/// LinkedIn refuses longer notes on a connection request.
const INVITATION_NOTE_CHARS_MAX: usize = 300;
/// LinkedIn's limit on a message's text.
const MESSAGE_TEXT_CHARS_MAX: usize = 8_000;
/// LinkedIn's limit on a message's subject.
const SUBJECT_CHARS_MAX: usize = 200;
/// LinkedIn's limit on a custom profile URL's name.
const VANITY_CHARS_MAX: usize = 100;
/// The encoded vanity name must fit in a store key (`urn/<vanity>`), which
/// the host caps at 256 bytes.
const VANITY_ENCODED_BYTES_MAX: usize = 200;
/// LinkedIn's member ids are about ten characters; this is ample.
const MEMBER_ID_BYTES_MAX: usize = 100;
/// Delivery ids, thread ids and ids in callbacks are at most this long. It
/// keeps what the plugin stores and reports small.
const ID_BYTES_MAX: usize = 200;
/// No profile URL or URN comes close to this.
const RECIPIENT_BYTES_MAX: usize = 500;
/// The longest idempotency key: the most the SDK's `idempotency` helper
/// remembers.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = idempotency::KEY_BYTES_MAX;
/// A webhook larger than this is not one.
const CALLBACK_BYTES_MAX: usize = 256 << 10;
/// LinkedIn batches a few events per webhook; more than this is abuse.
const CALLBACK_EVENTS_MAX: usize = 100;
/// How much of a reply's text the event keeps: enough to read its gist.
const REPLY_DETAIL_CHARS_MAX: usize = 500;
/// How much of LinkedIn's reason an error message quotes.
const REASON_CHARS_MAX: usize = 200;

/// What a send does, from the `linkedin-action` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// A connection request (an invitation) with an optional note.
    Connect,
    /// A message to a connection.
    Message,
}

impl Action {
    fn from_headers(headers: &[Field]) -> Result<Action, PluginError> {
        let Some(header) = headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(ACTION_HEADER))
        else {
            return Ok(Action::Message);
        };
        match header.value.trim().to_ascii_lowercase().as_str() {
            "connect" => Ok(Action::Connect),
            "message" => Ok(Action::Message),
            _ => Err(PluginError::invalid_input(format!(
                "header {ACTION_HEADER} is {:?}; use \"connect\" for a connection request or \
                 \"message\" for a message",
                excerpt(&header.value, 50)
            ))),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Action::Connect => "/v2/invitations",
            Action::Message => "/v2/messages",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Action::Connect => INVITATION_PREFIX,
            Action::Message => MESSAGE_PREFIX,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Action::Connect => "the connection request",
            Action::Message => "the message",
        }
    }
}

/// Who a message is for, as the caller named them.
#[derive(Debug, PartialEq, Eq)]
enum Recipient {
    /// A profile URL's vanity name, normalized and percent-encoded.
    Profile(String),
    /// A member URN, `urn:li:person:<id>`.
    Member(String),
}

fn parse_recipient(recipient: &str) -> Result<Recipient, PluginError> {
    let recipient = recipient.trim();
    let refuse = || {
        PluginError::invalid_input(format!(
            "recipient {:?} is neither a LinkedIn profile URL \
             (https://www.linkedin.com/in/<name>/) nor a member URN (urn:li:person:<id>)",
            excerpt(recipient, 100)
        ))
    };
    if recipient.len() > RECIPIENT_BYTES_MAX {
        return Err(refuse());
    }
    if let Some(id) = recipient.strip_prefix(PERSON_URN_PREFIX) {
        return match is_member_id(id) {
            true => Ok(Recipient::Member(recipient.to_owned())),
            false => Err(refuse()),
        };
    }
    profile_vanity(recipient)
        .map(Recipient::Profile)
        .ok_or_else(refuse)
}

/// The normalized vanity name of a LinkedIn profile URL.
fn profile_vanity(url: &str) -> Option<String> {
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
        .unwrap_or(url);
    let (host, path) = rest.split_once('/')?;
    let host = host.to_ascii_lowercase();
    let on_linkedin = host == "linkedin.com"
        || host.strip_suffix(".linkedin.com").is_some_and(|subdomain| {
            (2..=3).contains(&subdomain.len())
                && subdomain.bytes().all(|byte| byte.is_ascii_lowercase())
        });
    if !on_linkedin {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let vanity = path.strip_prefix("in/")?;
    canonical_vanity(vanity.strip_suffix('/').unwrap_or(vanity))
}

/// Decodes, lower-cases and re-encodes a vanity name, so that every
/// spelling of one name gives one cache key; `None` if it is not one.
fn canonical_vanity(raw: &str) -> Option<String> {
    let decoded = percent_decode(raw)?.to_lowercase();
    let n_chars = decoded.chars().count();
    let valid = (1..=VANITY_CHARS_MAX).contains(&n_chars)
        && decoded
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return None;
    }
    let mut encoded = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            encoded.push(c);
            continue;
        }
        let mut buffer = [0; 4];
        for byte in c.encode_utf8(&mut buffer).bytes() {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    (encoded.len() <= VANITY_ENCODED_BYTES_MAX).then_some(encoded)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'%' {
            decoded.push(bytes[index]);
            index += 1;
            continue;
        }
        let hex = bytes.get(index + 1..index + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let hex = std::str::from_utf8(hex).ok()?;
        decoded.push(u8::from_str_radix(hex, 16).ok()?);
        index += 3;
    }
    String::from_utf8(decoded).ok()
}

fn is_member_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MEMBER_ID_BYTES_MAX
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// At most `chars_max` characters of `text`, control characters made
/// spaces, with `…` where it was cut: safe to quote in a message.
fn excerpt(text: &str, chars_max: usize) -> String {
    let mut quoted: String = text
        .chars()
        .take(chars_max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(chars_max).is_some() {
        quoted.push('…');
    }
    quoted
}

/// What one send posts, checked before anything goes out.
struct Draft<'a> {
    action: Action,
    text: &'a str,
    subject: Option<&'a str>,
    thread: Option<&'a str>,
}

impl<'a> Draft<'a> {
    fn new(action: Action, message: &'a Message) -> Result<Draft<'a>, PluginError> {
        let text = message.text_body.as_str();
        let n_chars = text.chars().count();
        if action == Action::Connect {
            if n_chars > INVITATION_NOTE_CHARS_MAX {
                return Err(PluginError::invalid_input(format!(
                    "the connection request's note has {n_chars} characters; LinkedIn allows at \
                     most {INVITATION_NOTE_CHARS_MAX}: shorten it, or send the rest as a message \
                     once connected"
                )));
            }
            return Ok(Draft {
                action,
                text,
                subject: None,
                thread: None,
            });
        }
        if text.trim().is_empty() {
            return Err(PluginError::invalid_input(
                "the message has no text; LinkedIn sends no empty messages",
            ));
        }
        if n_chars > MESSAGE_TEXT_CHARS_MAX {
            return Err(PluginError::invalid_input(format!(
                "the message has {n_chars} characters; LinkedIn allows at most \
                 {MESSAGE_TEXT_CHARS_MAX}"
            )));
        }
        let subject = message
            .subject
            .as_deref()
            .filter(|subject| !subject.is_empty());
        if let Some(subject) = subject
            && subject.chars().count() > SUBJECT_CHARS_MAX
        {
            return Err(PluginError::invalid_input(format!(
                "the subject is longer than LinkedIn's {SUBJECT_CHARS_MAX} characters"
            )));
        }
        Ok(Draft {
            action,
            text,
            subject,
            thread: thread(&message.references)?,
        })
    }

    fn body(&self, urn: &str) -> Value {
        match self.action {
            Action::Connect => {
                let mut body = json!({ "invitee": urn });
                if !self.text.is_empty() {
                    body["message"] = json!(self.text);
                }
                body
            }
            Action::Message => {
                let mut body = json!({ "recipients": [urn], "body": self.text });
                if let Some(subject) = self.subject {
                    body["subject"] = json!(subject);
                }
                if let Some(thread) = self.thread {
                    body["thread"] = json!(thread);
                }
                body
            }
        }
    }
}

/// The thread a message continues: its latest reference that is not an
/// invitation, without the `message:` prefix.
fn thread(references: &[String]) -> Result<Option<&str>, PluginError> {
    let Some(reference) = references
        .iter()
        .rev()
        .map(|reference| reference.trim())
        .find(|reference| !reference.is_empty() && !reference.starts_with(INVITATION_PREFIX))
    else {
        return Ok(None);
    };
    let thread = reference.strip_prefix(MESSAGE_PREFIX).unwrap_or(reference);
    if thread.is_empty() || thread.len() > ID_BYTES_MAX || thread.chars().any(char::is_control) {
        return Err(PluginError::invalid_input(format!(
            "reference {:?} is not a LinkedIn message id",
            excerpt(reference, 50)
        )));
    }
    Ok(Some(thread))
}

/// Which request LinkedIn answered, to say what its refusal means.
#[derive(Clone, Copy)]
enum Step<'a> {
    /// Resolving a profile URL's vanity name.
    Lookup(&'a str),
    /// Sending to a member URN.
    Send(Action, &'a str),
}

/// The error for a LinkedIn answer that is not 2xx.
fn refusal(step: Step, status: u16, body: &[u8]) -> PluginError {
    let reason = reason(body);
    let what = match step {
        Step::Lookup(_) => "the profile lookup",
        Step::Send(action, _) => action.noun(),
    };
    match (status, step) {
        (401, _) => PluginError::new(
            ErrorKind::Unauthorized,
            format!(
                "LinkedIn refused the access_token (401: {reason}): it has expired or was \
                 revoked; reconnect the LinkedIn account and save the new access_token"
            ),
        ),
        (403, Step::Send(Action::Message, urn)) => PluginError::invalid_input(format!(
            "LinkedIn refused the message to {urn} (403: {reason}): you can message only your \
             connections; send a connection request first (header {ACTION_HEADER}: connect)"
        )),
        (403, _) => PluginError::invalid_input(format!("LinkedIn refused {what} (403: {reason})")),
        (404, Step::Lookup(vanity)) => PluginError::new(
            ErrorKind::NotFound,
            format!("LinkedIn has no profile named {vanity:?} (404); check the profile URL"),
        ),
        (404, Step::Send(_, urn)) => PluginError::new(
            ErrorKind::NotFound,
            format!("LinkedIn has no member {urn} (404: {reason})"),
        ),
        (429, Step::Send(Action::Connect, _)) => PluginError::new(
            ErrorKind::RateLimited,
            format!(
                "LinkedIn's weekly invitation limit is reached (429: {reason}); send more \
                 connection requests next week"
            ),
        ),
        (429, _) => PluginError::new(
            ErrorKind::RateLimited,
            format!("LinkedIn asks to slow down (429: {reason}); try again later"),
        ),
        (500..=599, _) => PluginError::upstream(format!(
            "LinkedIn failed during {what} ({status}: {reason}); try again later"
        )),
        (400..=499, _) => {
            PluginError::invalid_input(format!("LinkedIn refused {what} ({status}: {reason})"))
        }
        _ => PluginError::upstream(format!(
            "LinkedIn answered {what} with the unexpected status {status}"
        )),
    }
}

/// LinkedIn's reason for a refusal: the JSON error's `message`, or the text.
fn reason(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => error.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    match text.trim() {
        "" => "no reason given".to_owned(),
        text => excerpt(text, REASON_CHARS_MAX),
    }
}

/// The `"id"` of a JSON answer, a string or a number, if it is a sane id.
fn answer_id(body: &[u8]) -> Option<String> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let id = match answer.get("id")? {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    let sane = !id.is_empty() && id.len() <= ID_BYTES_MAX && !id.chars().any(char::is_control);
    sane.then_some(id)
}

fn field(name: &str, value: impl Into<String>) -> Field {
    Field {
        name: name.into(),
        value: value.into(),
    }
}

/// The API as the tenant's settings describe it.
struct Api {
    base_url: String,
    access_token: String,
}

impl Api {
    fn from_settings() -> Result<Api, PluginError> {
        let misconfigured = |message: String| PluginError::new(ErrorKind::Misconfigured, message);
        let access_token = host::required_setting("access_token")?.trim().to_owned();
        if access_token.is_empty() || access_token.chars().any(char::is_control) {
            return Err(misconfigured(
                "setting \"access_token\" is empty or holds a line break; paste the token again"
                    .to_owned(),
            ));
        }
        let base_url = host::setting("api_base_url")
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let has_host = strip_prefix_ignore_case(&base_url, "https://")
            .or_else(|| strip_prefix_ignore_case(&base_url, "http://"))
            .is_some_and(|rest| !rest.is_empty());
        if !has_host {
            return Err(misconfigured(format!(
                "setting \"api_base_url\" ({:?}) is not an http or https URL",
                excerpt(&base_url, 100)
            )));
        }
        Ok(Api {
            base_url,
            access_token,
        })
    }

    /// Sends one request; returns the body of a 2xx answer, and maps any
    /// other answer to the error that says what it means for `step`.
    fn request(
        &self,
        step: Step,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, PluginError> {
        let mut headers = vec![
            field("Authorization", format!("Bearer {}", self.access_token)),
            field("X-Restli-Protocol-Version", RESTLI_PROTOCOL_VERSION),
            field("LinkedIn-Version", LINKEDIN_VERSION),
        ];
        if body.is_some() {
            headers.push(field("Content-Type", "application/json"));
        }
        let request = host::HttpRequest {
            method: method.into(),
            url: format!("{}{path}", self.base_url),
            headers,
            body: body
                .map(|body| body.to_string().into_bytes())
                .unwrap_or_default(),
        };
        let response = host::http_send(&request)?;
        match response.status {
            200..=299 => Ok(response.body),
            status => Err(refusal(step, status, &response.body)),
        }
    }

    /// The recipient's member URN and, for a profile URL, the store key
    /// that caches it.
    fn resolve(&self, recipient: &Recipient) -> Result<(String, Option<String>), PluginError> {
        let vanity = match recipient {
            Recipient::Member(urn) => return Ok((urn.clone(), None)),
            Recipient::Profile(vanity) => vanity,
        };
        let key = format!("urn/{vanity}");
        if let Some(cached) = host::kv_get(&key)
            && let Ok(urn) = String::from_utf8(cached)
            && urn
                .strip_prefix(PERSON_URN_PREFIX)
                .is_some_and(is_member_id)
        {
            return Ok((urn, Some(key)));
        }
        let path = format!("/v2/people/(vanityName:{vanity})");
        let body = self.request(Step::Lookup(vanity), "GET", &path, None)?;
        let id = answer_id(&body)
            .filter(|id| is_member_id(id))
            .ok_or_else(|| {
                PluginError::upstream(format!(
                    "LinkedIn's answer to the lookup of {vanity:?} carries no member id: {}",
                    excerpt(&String::from_utf8_lossy(&body), REASON_CHARS_MAX)
                ))
            })?;
        let urn = format!("{PERSON_URN_PREFIX}{id}");
        if let Err(error) = host::kv_set(&key, urn.as_bytes()) {
            // The send can go on; the next one looks the profile up again.
            host::log(
                host::LogLevel::Warn,
                &format!("could not cache the URN of {vanity:?}: {error}"),
            );
        }
        Ok((urn, Some(key)))
    }
}

/// Refuses a key the `idempotency` helper could not remember.
fn check_idempotency_key(idempotency_key: &str) -> Result<(), PluginError> {
    let n_bytes = idempotency_key.len();
    if n_bytes == 0 || n_bytes > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(PluginError::invalid_input(format!(
            "the idempotency_key has {n_bytes} bytes; it must have 1 to \
             {IDEMPOTENCY_KEY_BYTES_MAX}"
        )));
    }
    if idempotency_key.contains(['\t', '\r', '\n']) {
        return Err(PluginError::invalid_input(
            "the idempotency_key contains a tab or a line break",
        ));
    }
    Ok(())
}

/// A webhook's body.
#[derive(Deserialize)]
struct Envelope {
    events: Vec<Value>,
}

/// The fields of a known event that the plugin reads; `type` is read first,
/// and the event's own `id` is not used.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEvent {
    in_reply_to: Option<String>,
    from: Option<String>,
    text: Option<String>,
    created_at: Option<u64>,
}

/// One webhook event as a delivery event; `None` for a type the plugin
/// does not know.
fn event(index: usize, raw: &Value) -> Result<Option<Event>, PluginError> {
    let type_name = raw
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| PluginError::invalid_input(format!("event {index} has no \"type\"")))?;
    let (kind, family, detail) = match type_name {
        "MESSAGE_RECEIVED" => (EventKind::Replied, MESSAGE_PREFIX, None),
        "MESSAGE_READ" => (EventKind::Opened, MESSAGE_PREFIX, None),
        "INVITATION_ACCEPTED" => (
            EventKind::Delivered,
            INVITATION_PREFIX,
            Some("invitation accepted"),
        ),
        "INVITATION_IGNORED" => (
            EventKind::BouncedHard,
            INVITATION_PREFIX,
            Some("invitation ignored; do not invite this member again"),
        ),
        "INVITATION_WITHDRAWN" => (
            EventKind::BouncedHard,
            INVITATION_PREFIX,
            Some("invitation withdrawn; do not invite this member again"),
        ),
        _ => {
            host::log(
                host::LogLevel::Debug,
                &format!(
                    "skipping LinkedIn event {index} of unknown type {:?}",
                    excerpt(type_name, 50)
                ),
            );
            return Ok(None);
        }
    };
    let fields = WebhookEvent::deserialize(raw).map_err(|error| {
        PluginError::invalid_input(format!("event {index} ({type_name}) is malformed: {error}"))
    })?;
    let checked = |name: &str, value: Option<String>| match value {
        Some(value) if value.len() > ID_BYTES_MAX || value.chars().any(char::is_control) => {
            Err(PluginError::invalid_input(format!(
                "event {index}: {name} is not an id of at most {ID_BYTES_MAX} bytes"
            )))
        }
        value => Ok(value.filter(|value| !value.trim().is_empty())),
    };
    let delivery_id = checked("inReplyTo", fields.in_reply_to)?.map(|id| {
        match id.starts_with(MESSAGE_PREFIX) || id.starts_with(INVITATION_PREFIX) {
            true => id,
            false => format!("{family}{id}"),
        }
    });
    let detail = match kind {
        EventKind::Replied => fields
            .text
            .map(|text| text.chars().take(REPLY_DETAIL_CHARS_MAX).collect()),
        _ => detail.map(str::to_owned),
    };
    Ok(Some(Event {
        kind,
        delivery_id,
        recipient: checked("from", fields.from)?,
        url: None,
        occurred_at_ms: fields.created_at,
        detail,
    }))
}

/// Checks `X-LI-Signature` against the raw body, in constant time.
fn verify(callback: &Callback) -> Result<(), PluginError> {
    let unauthorized = |message: &str| PluginError::new(ErrorKind::Unauthorized, message);
    let secret = host::setting("webhook_secret")
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::Misconfigured,
                "setting \"webhook_secret\" is not set, so LinkedIn callbacks cannot be \
                 verified; copy the webhook secret from the LinkedIn app into it",
            )
        })?;
    let header = callback
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(SIGNATURE_HEADER))
        .ok_or_else(|| unauthorized("the callback is not signed: it has no X-LI-Signature"))?;
    let signature = hex::decode(header.value.trim())
        .map_err(|_| unauthorized("the X-LI-Signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| {
        PluginError::new(
            ErrorKind::Internal,
            "HMAC refused the webhook_secret as a key",
        )
    })?;
    mac.update(&callback.body);
    mac.verify_slice(&signature).map_err(|_| {
        unauthorized("the X-LI-Signature does not match the body; check webhook_secret")
    })
}

impl Channel for LinkedIn {
    fn send(message: Message) -> Result<Sent, PluginError> {
        check_idempotency_key(&message.idempotency_key)?;
        if let Some(delivery_id) = idempotency::recall(&message.idempotency_key) {
            return Ok(Sent {
                delivery_id,
                units: 0,
            });
        }
        let action = Action::from_headers(&message.headers)?;
        let recipient = parse_recipient(&message.recipient)?;
        let draft = Draft::new(action, &message)?;
        let api = Api::from_settings()?;
        let (urn, cache_key) = api.resolve(&recipient)?;
        let step = Step::Send(action, &urn);
        let answer = match api.request(step, "POST", action.path(), Some(&draft.body(&urn))) {
            Err(error) if error.kind == ErrorKind::NotFound => {
                // The cached URN may belong to a profile that is gone, or to
                // a name its owner gave up; look it up afresh next time.
                if let Some(cache_key) = cache_key {
                    host::kv_delete(&cache_key);
                }
                return Err(error);
            }
            answer => answer?,
        };
        let id = answer_id(&answer).ok_or_else(|| PluginError {
            kind: ErrorKind::Upstream,
            message: format!(
                "LinkedIn accepted {} to {urn} but its answer carries no id ({}); check on \
                 LinkedIn before sending it again",
                action.noun(),
                excerpt(&String::from_utf8_lossy(&answer), REASON_CHARS_MAX)
            ),
            // It was sent: a retry would send it twice.
            retryable: false,
        })?;
        let delivery_id = format!("{}{id}", action.prefix());
        idempotency::remember_after_acting(&message.idempotency_key, &delivery_id);
        Ok(Sent {
            delivery_id,
            units: 1,
        })
    }

    fn parse_callback(callback: Callback) -> Result<Events, PluginError> {
        if callback.body.len() > CALLBACK_BYTES_MAX {
            return Err(PluginError::invalid_input(format!(
                "the callback has {} bytes; at most {CALLBACK_BYTES_MAX} are accepted",
                callback.body.len()
            )));
        }
        verify(&callback)?;
        let envelope: Envelope = serde_json::from_slice(&callback.body).map_err(|error| {
            PluginError::invalid_input(format!(
                "the callback is not a LinkedIn webhook ({{\"events\": [...]}}): {error}"
            ))
        })?;
        if envelope.events.len() > CALLBACK_EVENTS_MAX {
            return Err(PluginError::invalid_input(format!(
                "the callback carries {} events; at most {CALLBACK_EVENTS_MAX} are accepted",
                envelope.events.len()
            )));
        }
        let mut events = Vec::new();
        for (index, raw) in envelope.events.iter().enumerate() {
            events.extend(event(index, raw)?);
        }
        Ok(Events { events, units: 0 })
    }
}

register_plugin!(LinkedIn);

#[cfg(test)]
mod tests;
