//! Inbound email, parsed with `mail-parser` and told apart: delivery-status
//! bounces, automatic answers, unsubscribe requests and replies, each
//! turned into events. Anyone can send mail, so nothing in it is trusted
//! beyond what an event claims, and mail of no known kind yields none.
//! One-click unsubscribe POSTs are `unsubscribe`'s.

use mail_parser::{
    HeaderValue, Message as Mail, MessageParser, MessagePart, MimeHeaders, PartType,
};
use tollgate_plugin_sdk::{Event, EventKind};

use crate::optional_setting;

/// A reply's text or a bounce's diagnostic kept in an event, in
/// characters: enough to read, small enough for any store.
const DETAIL_CHARS_MAX: usize = 500;

/// Recipients read from one delivery-status report; the host sends to one
/// recipient a message, so a real report names one.
const DSN_RECIPIENTS_MAX: usize = 100;

/// Fields read from one block of a delivery-status report.
const DSN_FIELDS_MAX: usize = 64;

/// A field value, folded lines included, in bytes.
const DSN_VALUE_BYTES_MAX: usize = 2000;

/// References and In-Reply-To ids looked at for one of ours.
const REFERENCES_READ_MAX: usize = 200;

/// A reported recipient address longer than this is not one.
const RECIPIENT_BYTES_MAX: usize = 320;

/// The events in one inbound message; none when it is not a bounce,
/// automatic answer, unsubscribe or reply to this channel's mail.
pub(crate) fn classify(raw: &[u8]) -> Vec<Event> {
    let Some(mail) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    if mail.parts.is_empty() {
        return Vec::new();
    }
    let occurred_at_ms = date_ms(&mail);
    if let Some(report_type) = report_type(&mail) {
        // Read receipts and abuse reports are reports too, never replies.
        return match report_type.eq_ignore_ascii_case("delivery-status") {
            true => bounces(&mail, occurred_at_ms),
            false => Vec::new(),
        };
    }
    let from = from_address(&mail);
    if from.as_deref().is_some_and(is_mailer_daemon) {
        // A bounce in no standard format: its recipient cannot be read
        // reliably, and it is not an answer from a person.
        return Vec::new();
    }
    let delivery_id = our_reference(&mail);
    let event = |kind, detail| Event {
        kind,
        delivery_id: delivery_id.clone(),
        recipient: from.clone(),
        url: None,
        occurred_at_ms,
        detail,
    };
    if is_automatic(&mail) {
        return vec![event(EventKind::AutoReplied, preview(&mail))];
    }
    if is_unsubscribe(&mail) {
        return vec![event(
            EventKind::Unsubscribed,
            Some("unsubscribe email".to_owned()),
        )];
    }
    match delivery_id {
        Some(_) => vec![event(EventKind::Replied, preview(&mail))],
        None => Vec::new(),
    }
}

/// Whether `id` (without angle brackets) has the shape of this channel's
/// Message-IDs: 32 lower-case hex digits, `@`, a domain.
pub(crate) fn is_ours(id: &str) -> bool {
    id.split_once('@').is_some_and(|(hash, domain)| {
        hash.len() == 32
            && hash
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
            && !domain.is_empty()
    })
}

/// The Date header in milliseconds, when it is a valid date after 1970.
fn date_ms(mail: &Mail<'_>) -> Option<u64> {
    let date = mail.date().filter(|date| date.is_valid())?;
    u64::try_from(date.to_timestamp()).ok()?.checked_mul(1000)
}

/// The report type of a `multipart/report` message.
fn report_type<'a>(mail: &'a Mail<'_>) -> Option<&'a str> {
    let content_type = mail.content_type()?;
    let is_report = content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|subtype| subtype.eq_ignore_ascii_case("report"));
    is_report.then(|| content_type.attribute("report-type").unwrap_or_default())
}

fn from_address(mail: &Mail<'_>) -> Option<String> {
    let address = mail.from()?.first()?.address()?.trim();
    (!address.is_empty() && address.len() <= RECIPIENT_BYTES_MAX).then(|| address.to_owned())
}

fn is_mailer_daemon(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or_default();
    local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster")
}

/// The ids in a Message-ID header (In-Reply-To, References).
fn ids<'a>(value: &'a HeaderValue<'_>) -> Vec<&'a str> {
    match value {
        HeaderValue::Text(id) => vec![id.as_ref()],
        HeaderValue::TextList(ids) => ids
            .iter()
            .take(REFERENCES_READ_MAX)
            .map(|id| id.as_ref())
            .collect(),
        _ => Vec::new(),
    }
}

/// The message of ours this one answers: In-Reply-To first, then the
/// newest of the References.
fn our_reference(mail: &Mail<'_>) -> Option<String> {
    let in_reply_to = ids(mail.in_reply_to());
    let references = ids(mail.references());
    in_reply_to
        .into_iter()
        .chain(references.into_iter().rev())
        .map(str::trim)
        .find(|id| is_ours(id))
        .map(str::to_owned)
}

/// A header's text, by case-insensitive name.
fn header_text<'a>(mail: &'a Mail<'_>, name: &str) -> Option<&'a str> {
    mail.headers()
        .iter()
        .find(|header| header.name.as_str().eq_ignore_ascii_case(name))
        .and_then(|header| header.value.as_text())
        .map(str::trim)
}

/// An automatic answer by RFC 3834's `Auto-Submitted` or the older
/// markers that vacation responders still send.
fn is_automatic(mail: &Mail<'_>) -> bool {
    let auto_submitted = header_text(mail, "Auto-Submitted")
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .is_some_and(|value| !value.is_empty() && !value.eq_ignore_ascii_case("no"));
    auto_submitted
        || header_text(mail, "X-Autoreply").is_some()
        || header_text(mail, "X-Autorespond").is_some()
        || header_text(mail, "Precedence")
            .is_some_and(|value| value.eq_ignore_ascii_case("auto_reply"))
}

/// Sent to `unsubscribe_mailto`, or with the subject `unsubscribe`.
fn is_unsubscribe(mail: &Mail<'_>) -> bool {
    let subject = mail.subject().map(str::trim).unwrap_or_default();
    if subject.eq_ignore_ascii_case("unsubscribe") {
        return true;
    }
    let Some(mailto) = optional_setting("unsubscribe_mailto") else {
        return false;
    };
    let to_mailto = |address: Option<&str>| {
        address.is_some_and(|address| address.trim().eq_ignore_ascii_case(&mailto))
    };
    let listed = [mail.to(), mail.cc()]
        .into_iter()
        .flatten()
        .flat_map(|addresses| addresses.iter())
        .any(|address| to_mailto(address.address()));
    listed || to_mailto(header_text(mail, "Delivered-To"))
}

/// The first characters of the message's text, for a reply's detail.
fn preview(mail: &Mail<'_>) -> Option<String> {
    let text = mail.body_text(0)?;
    let text: String = text.trim().chars().take(DETAIL_CHARS_MAX).collect();
    (!text.is_empty()).then_some(text)
}

/// One bounce event per failed recipient of a delivery-status report.
fn bounces(mail: &Mail<'_>, occurred_at_ms: Option<u64>) -> Vec<Event> {
    let Some(status) = mail.parts.iter().find_map(delivery_status) else {
        return Vec::new();
    };
    let delivery_id = mail
        .parts
        .iter()
        .find_map(original_message_id)
        .filter(|id| is_ours(id));
    dsn_blocks(&status)
        .into_iter()
        .filter_map(|fields| {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(found, _)| found.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.trim())
                    .filter(|value| !value.is_empty())
            };
            let status = field("Status")?.split_whitespace().next()?;
            let kind = match status_class(status)? {
                '5' => EventKind::BouncedHard,
                '4' => EventKind::BouncedSoft,
                _ => return None,
            };
            let recipient = field("Original-Recipient")
                .or_else(|| field("Final-Recipient"))
                .map(typed_value)
                .map(|address| address.trim_start_matches('<').trim_end_matches('>'))
                .filter(|address| !address.is_empty() && address.len() <= RECIPIENT_BYTES_MAX)
                .map(str::to_owned);
            let detail = field("Diagnostic-Code")
                .map(typed_value)
                .filter(|detail| !detail.is_empty())
                .unwrap_or(status);
            Some(Event {
                kind,
                delivery_id: delivery_id.clone(),
                recipient,
                url: None,
                occurred_at_ms,
                detail: Some(detail.chars().take(DETAIL_CHARS_MAX).collect()),
            })
        })
        .take(DSN_RECIPIENTS_MAX)
        .collect()
}

/// The class of an RFC 3463 status code, `class.subject.detail`: `2`, `4`
/// or `5`.
fn status_class(status: &str) -> Option<char> {
    let numbers: Vec<&str> = status.split('.').collect();
    let valid = numbers.len() == 3
        && numbers.iter().all(|number| {
            (1..=3).contains(&number.len()) && number.bytes().all(|byte| byte.is_ascii_digit())
        });
    let class = status.chars().next()?;
    (valid && matches!(class, '2' | '4' | '5')).then_some(class)
}

/// The value of a typed DSN field (`rfc822; bob@example.com`,
/// `smtp; 550 5.1.1 ...`) without its type.
fn typed_value(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, rest)| rest).trim()
}

fn is_type(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|content_type| {
        content_type.ctype().eq_ignore_ascii_case(ctype)
            && content_type
                .subtype()
                .is_some_and(|subtype| subtypes.iter().any(|s| subtype.eq_ignore_ascii_case(s)))
    })
}

/// The text of a `message/delivery-status` part.
fn delivery_status(part: &MessagePart<'_>) -> Option<String> {
    if !is_type(
        part,
        "message",
        &["delivery-status", "global-delivery-status"],
    ) {
        return None;
    }
    match &part.body {
        PartType::Text(text) => Some(text.to_string()),
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
        _ => None,
    }
}

/// The Message-ID of the original message a bounce returns, whole or as
/// its headers.
fn original_message_id(part: &MessagePart<'_>) -> Option<String> {
    let is_original = is_type(part, "message", &["rfc822", "global", "global-headers"])
        || is_type(part, "text", &["rfc822-headers"]);
    if !is_original {
        return None;
    }
    let headers_only = |bytes: &[u8]| {
        MessageParser::default()
            .parse_headers(bytes)
            .and_then(|message| message.message_id().map(str::to_owned))
    };
    match &part.body {
        PartType::Message(message) => message.message_id().map(str::to_owned),
        PartType::Text(text) => headers_only(text.as_bytes()),
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => headers_only(bytes),
        _ => None,
    }
}

/// The blocks of a delivery-status report (RFC 3464): header-like fields
/// in blocks parted by blank lines, the first for the message and one for
/// each recipient. Folded lines are unfolded; everything is bounded.
fn dsn_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        let Some(block) = blocks.last_mut() else {
            break;
        };
        if line.trim().is_empty() {
            if !block.is_empty() {
                if blocks.len() > DSN_RECIPIENTS_MAX {
                    break;
                }
                blocks.push(Vec::new());
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut()
                && value.len() + line.len() < DSN_VALUE_BYTES_MAX
            {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if block.len() >= DSN_FIELDS_MAX {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            let value = &value[..value.floor_char_boundary(DSN_VALUE_BYTES_MAX)];
            block.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    blocks
}
