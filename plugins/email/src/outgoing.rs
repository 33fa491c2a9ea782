//! An outgoing message: the caller's input checked field by field, the
//! tenant's sending settings, and the RFC 5322 bytes built with
//! `mail-builder`. Sending and idempotency are the caller's (`lib.rs`).

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::mime::MimePart;
use sha2::{Digest, Sha256};
use tollgate_plugin_sdk::{ErrorKind, Message, PluginError};

use crate::{misconfigured, optional_setting, unsubscribe};

/// Each body, text and HTML: far above any sales email, small enough that
/// a whole message stays well under common SMTP size limits.
const BODY_BYTES_MAX: usize = 1 << 20;

/// Extra headers on one message; real messages carry a handful.
const HEADERS_MAX: usize = 50;

/// Earlier messages one message may follow up: a thread of a hundred
/// messages is far past any sequence.
const REFERENCES_MAX: usize = 100;

/// A header name fits on one line with its colon and a space (RFC 5322's
/// 78-character recommendation).
const HEADER_NAME_BYTES_MAX: usize = 76;

/// A header value may be as long as a line may be (RFC 5322's 998 bytes);
/// longer ones are folded, but no caller's header needs more.
const HEADER_VALUE_BYTES_MAX: usize = 998;

/// The subject, in characters; it is folded and encoded as needed.
const SUBJECT_CHARS_MAX: usize = 998;

/// A display name, in characters.
const NAME_CHARS_MAX: usize = 256;

/// A Message-ID in `references`, without its angle brackets.
const MESSAGE_ID_BYTES_MAX: usize = 250;

/// RFC 5321's limits on an address and its parts.
const ADDRESS_BYTES_MAX: usize = 254;
const LOCAL_PART_BYTES_MAX: usize = 64;
const DOMAIN_BYTES_MAX: usize = 253;
const LABEL_BYTES_MAX: usize = 63;

/// Headers the channel writes itself; an extra header may not replace
/// them. Cc and Bcc are refused because the message goes to one envelope
/// recipient only; Return-Path is the receiving server's to add.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "return-path",
];

/// Header name prefixes the channel owns: the MIME structure and the
/// unsubscribe headers.
const RESERVED_PREFIXES: &[&str] = &["content-", "list-unsubscribe"];

/// A message ready for the SMTP client.
#[derive(Debug)]
pub(crate) struct Built {
    /// The Message-ID without angle brackets.
    pub delivery_id: String,
    /// The return path.
    pub envelope_from: String,
    /// The RFC 5322 message.
    pub bytes: Vec<u8>,
}

/// The tenant's settings for building messages.
struct Settings {
    message_id_domain: Option<String>,
    return_path: Option<String>,
    unsubscribe: Option<unsubscribe::Link>,
    unsubscribe_mailto: Option<String>,
}

impl Settings {
    fn load() -> Result<Settings, PluginError> {
        let message_id_domain = optional_setting("message_id_domain");
        if let Some(domain) = &message_id_domain {
            check_domain(domain).map_err(|reason| {
                misconfigured(format!("setting \"message_id_domain\": {reason}"))
            })?;
        }
        let return_path = optional_setting("return_path");
        if let Some(address) = &return_path {
            check_address(address)
                .map_err(|reason| misconfigured(format!("setting \"return_path\": {reason}")))?;
        }
        Ok(Settings {
            message_id_domain,
            return_path,
            unsubscribe: unsubscribe::Link::load()?,
            unsubscribe_mailto: unsubscribe::mailto_setting()?,
        })
    }
}

/// Checks the message, reads the settings and builds the bytes.
pub(crate) fn build(message: &Message, now_ms: u64) -> Result<Built, PluginError> {
    check_message(message)?;
    let settings = Settings::load()?;
    let sender_domain = domain_of(&message.sender.address);
    let domain = settings
        .message_id_domain
        .clone()
        .unwrap_or_else(|| sender_domain.to_owned())
        .to_ascii_lowercase();
    let hash = hex::encode(Sha256::digest(message.idempotency_key.as_bytes()));
    let delivery_id = format!("{}@{domain}", &hash[..32]);

    let mut builder = MessageBuilder::new()
        .from(Address::new_address(
            display_name(message.sender.name.as_deref()),
            message.sender.address.as_str(),
        ))
        .to(Address::new_address(
            display_name(message.recipient_name.as_deref()),
            message.recipient.as_str(),
        ));
    if let Some(subject) = &message.subject {
        builder = builder.subject(subject.as_str());
    }
    let seconds = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    builder = builder
        .date(Date::new(seconds))
        .message_id(delivery_id.as_str());
    let references: Vec<&str> = message.references.iter().map(|id| bare_id(id)).collect();
    if let Some(last) = references.last() {
        builder = builder
            .in_reply_to(*last)
            .references(MessageId::new_list(references.iter().copied()));
    }
    for field in &message.headers {
        builder = builder.header(field.name.as_str(), Text::new(field.value.as_str()));
    }
    let mut links = Vec::new();
    if let Some(link) = &settings.unsubscribe {
        links.push(link.url(&delivery_id, &message.recipient));
    }
    if let Some(address) = &settings.unsubscribe_mailto {
        links.push(unsubscribe::mailto_link(address));
    }
    if !links.is_empty() {
        builder = builder.header("List-Unsubscribe", URL::new_list(links.into_iter()));
    }
    if settings.unsubscribe.is_some() {
        builder = builder.header(
            "List-Unsubscribe-Post",
            Raw::new("List-Unsubscribe=One-Click"),
        );
    }
    let bytes = builder
        .body(body(message))
        .write_to_vec()
        .map_err(|error| {
            PluginError::new(
                ErrorKind::Internal,
                format!("could not build the message: {error}"),
            )
        })?;
    Ok(Built {
        delivery_id,
        envelope_from: settings
            .return_path
            .unwrap_or_else(|| message.sender.address.clone()),
        bytes,
    })
}

/// `text/plain`, or text and HTML as `multipart/alternative`. The boundary
/// is a hash of the bodies, so no body can contain it and the same message
/// builds to the same bytes.
fn body(message: &Message) -> MimePart<'_> {
    let text = MimePart::new("text/plain", message.text_body.as_str());
    let Some(html) = &message.html_body else {
        return text;
    };
    let mut hash = Sha256::new();
    hash.update(message.text_body.as_bytes());
    hash.update([0]);
    hash.update(html.as_bytes());
    let boundary = format!("tg_{}", &hex::encode(hash.finalize())[..32]);
    MimePart::new(
        ContentType::new("multipart/alternative").attribute("boundary", boundary),
        vec![text, MimePart::new("text/html", html.as_str())],
    )
}

fn display_name(name: Option<&str>) -> Option<&str> {
    name.map(str::trim).filter(|name| !name.is_empty())
}

/// A Message-ID without the angle brackets a caller may have kept.
fn bare_id(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|id| id.strip_suffix('>'))
        .unwrap_or(id)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("{field}: {reason}"))
}

/// Every check on the caller's input; each refusal names the field.
fn check_message(message: &Message) -> Result<(), PluginError> {
    check_address(&message.recipient).map_err(|reason| invalid("recipient", reason))?;
    check_address(&message.sender.address).map_err(|reason| invalid("sender.address", reason))?;
    check_text(
        "recipient_name",
        message.recipient_name.as_deref(),
        NAME_CHARS_MAX,
    )?;
    check_text(
        "sender.name",
        message.sender.name.as_deref(),
        NAME_CHARS_MAX,
    )?;
    check_text("subject", message.subject.as_deref(), SUBJECT_CHARS_MAX)?;
    if message.text_body.len() > BODY_BYTES_MAX {
        return Err(invalid(
            "text_body",
            format!("longer than {BODY_BYTES_MAX} bytes"),
        ));
    }
    if message
        .html_body
        .as_ref()
        .is_some_and(|html| html.len() > BODY_BYTES_MAX)
    {
        return Err(invalid(
            "html_body",
            format!("longer than {BODY_BYTES_MAX} bytes"),
        ));
    }
    check_headers(message)?;
    check_references(message)
}

/// A one-line text field: no line breaks or other control characters.
fn check_text(field: &str, value: Option<&str>, chars_max: usize) -> Result<(), PluginError> {
    let Some(value) = value else {
        return Ok(());
    };
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(
            field,
            "contains a line break or another control character",
        ));
    }
    if value.chars().count() > chars_max {
        return Err(invalid(
            field,
            format!("longer than {chars_max} characters"),
        ));
    }
    Ok(())
}

fn check_headers(message: &Message) -> Result<(), PluginError> {
    if message.headers.len() > HEADERS_MAX {
        return Err(invalid("headers", format!("more than {HEADERS_MAX}")));
    }
    for (index, field) in message.headers.iter().enumerate() {
        let name = &field.name;
        let at = format!("headers[{index}]");
        let valid_name = !name.is_empty()
            && name.len() <= HEADER_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b':');
        if !valid_name {
            return Err(invalid(
                &format!("{at}.name"),
                format!(
                    "{name:?} is not a header name: use 1 to {HEADER_NAME_BYTES_MAX} printable ASCII characters without ':'"
                ),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str())
            || RESERVED_PREFIXES
                .iter()
                .any(|prefix| lower.starts_with(prefix))
        {
            return Err(invalid(
                &format!("{at}.name"),
                format!("{name} is written by the email channel and cannot be set"),
            ));
        }
        if field.value.len() > HEADER_VALUE_BYTES_MAX {
            return Err(invalid(
                &format!("{at}.value"),
                format!("longer than {HEADER_VALUE_BYTES_MAX} bytes"),
            ));
        }
        check_text(
            &format!("{at}.value"),
            Some(&field.value),
            HEADER_VALUE_BYTES_MAX,
        )?;
    }
    Ok(())
}

fn check_references(message: &Message) -> Result<(), PluginError> {
    if message.references.len() > REFERENCES_MAX {
        return Err(invalid("references", format!("more than {REFERENCES_MAX}")));
    }
    for (index, id) in message.references.iter().enumerate() {
        let bare = bare_id(id);
        let valid = bare.len() <= MESSAGE_ID_BYTES_MAX
            && bare
                .split_once('@')
                .is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
            && bare
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'<' | b'>'));
        if !valid {
            return Err(invalid(
                &format!("references[{index}]"),
                format!(
                    "{id:?} is not a Message-ID (left@right, at most {MESSAGE_ID_BYTES_MAX} printable ASCII characters)"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `byte` may appear in an unquoted local part (RFC 5322 atext).
fn is_atext(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&byte)
}

/// A plain ASCII address, `local@domain.tld`: the local part a dot-atom
/// (no quoted strings), the domain a host name. Returns why not.
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    if address.len() > ADDRESS_BYTES_MAX {
        return Err(format!("longer than {ADDRESS_BYTES_MAX} bytes"));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{address:?} is not an email address (no @)"));
    };
    let local_valid = !local.is_empty()
        && local.len() <= LOCAL_PART_BYTES_MAX
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext));
    if !local_valid {
        return Err(format!(
            "{address:?} is not an email address: the part before @ must be 1 to {LOCAL_PART_BYTES_MAX} of letters, digits, dots (not leading, trailing or doubled) and !#$%&'*+-/=?^_`{{|}}~"
        ));
    }
    check_domain(domain).map_err(|reason| format!("{address:?} is not an email address: {reason}"))
}

/// A host name with at least two labels of letters, digits and hyphens.
pub(crate) fn check_domain(domain: &str) -> Result<(), String> {
    let valid = domain.len() <= DOMAIN_BYTES_MAX
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= LABEL_BYTES_MAX
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{domain:?} is not a domain name (labels of letters, digits and hyphens, at least two, at most {DOMAIN_BYTES_MAX} bytes)"
        )),
    }
}
