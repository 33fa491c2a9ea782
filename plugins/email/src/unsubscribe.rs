//! Unsubscribe links: the tenant's https URL template, the signature that
//! makes a link unforgeable, the mailto link, and the RFC 8058 one-click
//! POST that comes back through the host. Inbound unsubscribe emails are
//! `inbound`'s.

use hmac::{Hmac, Mac};
use mail_parser::{MessageParser, MimeHeaders};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;
use tollgate_plugin_sdk::{Callback, ErrorKind, Event, EventKind, PluginError, host};

use crate::outgoing::check_address;
use crate::{header, misconfigured, optional_setting};

/// Everything but RFC 3986's unreserved characters is escaped, so a value
/// never contains `&`, `/`, `?`, `=` or `{`.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL template: longer than any real unsubscribe URL.
const TEMPLATE_BYTES_MAX: usize = 2000;

/// The URL the host received: the template plus three encoded values.
const CALLBACK_URL_BYTES_MAX: usize = 8 << 10;

/// The signature's length in hex digits: 128 bits.
const SIG_HEX_LEN: usize = 32;

/// A secret shorter than this would let links be guessed.
const SECRET_BYTES_MIN: usize = 16;

/// Form fields read from a one-click POST, which has one.
const FORM_FIELDS_MAX: usize = 16;

/// The header in which the host passes the URL it received.
pub(crate) const CALLBACK_URL_HEADER: &str = "x-tollgate-callback-url";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    DeliveryId,
    Recipient,
    Sig,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::DeliveryId, Slot::Recipient, Slot::Sig];

    fn name(self) -> &'static str {
        match self {
            Slot::DeliveryId => "delivery_id",
            Slot::Recipient => "recipient",
            Slot::Sig => "sig",
        }
    }
}

#[derive(Debug)]
enum Piece {
    Literal(String),
    Slot(Slot),
}

/// `unsubscribe_url`, split into its origin (`https://host`) and the
/// pieces of its path and query.
#[derive(Debug)]
struct Template {
    origin: String,
    pieces: Vec<Piece>,
}

/// Why a template is refused, for the `misconfigured` message.
fn template_error(reason: impl std::fmt::Display) -> PluginError {
    misconfigured(format!("setting \"unsubscribe_url\": {reason}"))
}

impl Template {
    fn parse(url: &str) -> Result<Template, PluginError> {
        if url.len() > TEMPLATE_BYTES_MAX {
            return Err(template_error(format!(
                "longer than {TEMPLATE_BYTES_MAX} bytes"
            )));
        }
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(template_error(
                "must be an https URL (mail clients send one-click unsubscribes only to https)",
            ));
        };
        if let Some(byte) = url
            .bytes()
            .find(|byte| !byte.is_ascii_graphic() || b"<>\"\\#".contains(byte))
        {
            return Err(template_error(format!(
                "contains {:?}; write the URL with printable ASCII, percent-encoded, without a #fragment",
                char::from(byte)
            )));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() || authority.contains(['{', '}', '@']) {
            return Err(template_error(
                "needs a plain host name after https://, without placeholders",
            ));
        }
        let path = match path.starts_with('/') {
            true => path.to_owned(),
            false => format!("/{path}"),
        };
        Ok(Template {
            origin: format!("https://{authority}"),
            pieces: pieces(&path)?,
        })
    }

    fn expand(&self, values: [&str; 3]) -> String {
        let mut url = self.origin.clone();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => url.push_str(text),
                Piece::Slot(slot) => {
                    let value = values[*slot as usize];
                    url.extend(utf8_percent_encode(value, VALUE));
                }
            }
        }
        url
    }

    /// The decoded values in `received` (a path and query, or a whole
    /// URL), when it has the template's shape.
    fn read(&self, received: &str) -> Option<[String; 3]> {
        let received = match received.split_once("://") {
            Some((_, rest)) => &rest[rest.find(['/', '?'])?..],
            None => received,
        };
        let mut values: [Option<String>; 3] = [None, None, None];
        let mut rest = received;
        for (index, piece) in self.pieces.iter().enumerate() {
            match piece {
                Piece::Literal(text) => rest = rest.strip_prefix(text.as_str())?,
                Piece::Slot(slot) => {
                    // The next literal starts with a character that an
                    // encoded value never holds, so the value ends there.
                    let end = match self.pieces.get(index + 1) {
                        Some(Piece::Literal(text)) => rest.find(text.chars().next()?)?,
                        _ => rest.len(),
                    };
                    let (value, tail) = rest.split_at(end);
                    let encoded = value
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"-._~%".contains(&byte));
                    if !encoded {
                        return None;
                    }
                    let value = percent_decode_str(value).decode_utf8().ok()?;
                    values[*slot as usize] = Some(value.into_owned());
                    rest = tail;
                }
            }
        }
        match (rest.is_empty(), values) {
            (true, [Some(delivery_id), Some(recipient), Some(sig)]) => {
                Some([delivery_id, recipient, sig])
            }
            _ => None,
        }
    }
}

/// The path and query, as literals and placeholders: each placeholder once,
/// each followed by the end or by a character that encoding escapes.
fn pieces(path: &str) -> Result<Vec<Piece>, PluginError> {
    let mut pieces = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let Some(open) = rest.find(['{', '}']) else {
            pieces.push(Piece::Literal(rest.to_owned()));
            break;
        };
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .filter(|_| rest[open..].starts_with('{'))
            .ok_or_else(|| template_error("has an unmatched { or }"))?;
        let name = &rest[open + 1..open + close];
        let slot = Slot::ALL
            .into_iter()
            .find(|slot| slot.name() == name)
            .ok_or_else(|| {
                template_error(format!(
                    "has the unknown placeholder {{{name}}}; use {{delivery_id}}, {{recipient}} and {{sig}}"
                ))
            })?;
        pieces.push(Piece::Slot(slot));
        rest = &rest[open + close + 1..];
        let next = rest.bytes().next();
        if next.is_some_and(|byte| byte.is_ascii_alphanumeric() || b"-._~%{".contains(&byte)) {
            return Err(template_error(format!(
                "{{{name}}} must be followed by the end of the URL or by a character such as & / ? = ; that encoded values never contain"
            )));
        }
    }
    for slot in Slot::ALL {
        let count = pieces
            .iter()
            .filter(|piece| matches!(piece, Piece::Slot(found) if *found == slot))
            .count();
        if count != 1 {
            return Err(template_error(format!(
                "must contain {{{}}} exactly once",
                slot.name()
            )));
        }
    }
    Ok(pieces)
}

/// The tenant's signed https unsubscribe link.
#[derive(Debug)]
pub(crate) struct Link {
    template: Template,
    secret: String,
}

impl Link {
    /// `unsubscribe_url` and `unsubscribe_secret`, when the tenant set the
    /// URL.
    pub(crate) fn load() -> Result<Option<Link>, PluginError> {
        let Some(url) = optional_setting("unsubscribe_url") else {
            return Ok(None);
        };
        let template = Template::parse(&url)?;
        let secret = optional_setting("unsubscribe_secret").ok_or_else(|| {
            misconfigured(
                "setting \"unsubscribe_secret\" is not set; unsubscribe_url needs it to sign its links",
            )
        })?;
        if secret.len() < SECRET_BYTES_MIN {
            return Err(misconfigured(format!(
                "setting \"unsubscribe_secret\" is shorter than {SECRET_BYTES_MIN} bytes; use a long random string"
            )));
        }
        Ok(Some(Link { template, secret }))
    }

    /// The link for one delivery to one recipient.
    pub(crate) fn url(&self, delivery_id: &str, recipient: &str) -> String {
        let sig = self.sig(delivery_id, recipient);
        self.template.expand([delivery_id, recipient, &sig])
    }

    fn mac(&self, delivery_id: &str, recipient: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key length");
        mac.update(delivery_id.as_bytes());
        mac.update(b"\n");
        mac.update(recipient.as_bytes());
        mac
    }

    /// The first 32 hex digits of HMAC-SHA256(secret, "<delivery_id>\n<recipient>").
    fn sig(&self, delivery_id: &str, recipient: &str) -> String {
        let tag = self.mac(delivery_id, recipient).finalize().into_bytes();
        hex::encode(&tag[..SIG_HEX_LEN / 2])
    }

    fn verify(&self, delivery_id: &str, recipient: &str, sig: &str) -> bool {
        if sig.len() != SIG_HEX_LEN {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(delivery_id, recipient)
            .verify_truncated_left(&sig)
            .is_ok()
    }
}

/// `unsubscribe_mailto`, checked, when set.
pub(crate) fn mailto_setting() -> Result<Option<String>, PluginError> {
    let Some(address) = optional_setting("unsubscribe_mailto") else {
        return Ok(None);
    };
    check_address(&address)
        .map_err(|reason| misconfigured(format!("setting \"unsubscribe_mailto\": {reason}")))?;
    Ok(Some(address))
}

/// `mailto:ADDRESS?subject=unsubscribe`, the local part percent-encoded
/// (an address may hold `?`, `&`, `%` or `#`).
pub(crate) fn mailto_link(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    format!(
        "mailto:{}@{domain}?subject=unsubscribe",
        utf8_percent_encode(local, VALUE)
    )
}

fn unauthorized(message: &str) -> PluginError {
    PluginError::new(ErrorKind::Unauthorized, message)
}

/// A one-click unsubscribe POST: its URL's signature checked, one
/// `unsubscribed` event. A form that is not a one-click unsubscribe is not
/// for this channel and yields nothing.
pub(crate) fn one_click(callback: &Callback) -> Result<Vec<Event>, PluginError> {
    if !is_one_click(callback) {
        return Ok(Vec::new());
    }
    let link = Link::load()?.ok_or_else(|| {
        unauthorized(
            "a one-click unsubscribe arrived, but setting unsubscribe_url is not set, so it cannot be verified",
        )
    })?;
    let url = header(callback, CALLBACK_URL_HEADER).ok_or_else(|| {
        unauthorized("the one-click unsubscribe has no x-tollgate-callback-url header to verify")
    })?;
    if url.len() > CALLBACK_URL_BYTES_MAX {
        return Err(PluginError::invalid_input(format!(
            "{CALLBACK_URL_HEADER}: longer than {CALLBACK_URL_BYTES_MAX} bytes"
        )));
    }
    let [delivery_id, recipient, sig] = link.template.read(url).ok_or_else(|| {
        unauthorized(
            "the one-click unsubscribe URL does not have the shape of setting unsubscribe_url",
        )
    })?;
    if !link.verify(&delivery_id, &recipient, &sig) {
        return Err(unauthorized(
            "the one-click unsubscribe URL's sig does not match its delivery id and recipient",
        ));
    }
    Ok(vec![Event {
        kind: EventKind::Unsubscribed,
        delivery_id: Some(delivery_id),
        recipient: Some(recipient),
        url: None,
        occurred_at_ms: Some(host::now_ms()),
        detail: Some("one-click unsubscribe (RFC 8058)".to_owned()),
    }])
}

/// Whether the form holds `List-Unsubscribe=One-Click`, urlencoded or as
/// multipart/form-data (RFC 8058 allows both).
fn is_one_click(callback: &Callback) -> bool {
    let content_type = header(callback, "content-type").unwrap_or_default();
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        // A multipart body is a MIME entity once its Content-Type leads it.
        let mut entity = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
        entity.extend_from_slice(&callback.body);
        let Some(form) = MessageParser::default().parse(&entity) else {
            return false;
        };
        return form.parts.iter().take(FORM_FIELDS_MAX).any(|part| {
            part.content_disposition()
                .and_then(|disposition| disposition.attribute("name"))
                .is_some_and(|name| name == "List-Unsubscribe")
                && part
                    .text_contents()
                    .is_some_and(|value| value.trim() == "One-Click")
        });
    }
    let Ok(body) = std::str::from_utf8(&callback.body) else {
        return false;
    };
    body.split('&').take(FORM_FIELDS_MAX).any(|pair| {
        let decode = |text: &str| {
            percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        pair.split_once('=').is_some_and(|(name, value)| {
            decode(name) == "List-Unsubscribe" && decode(value.trim()) == "One-Click"
        })
    })
}
