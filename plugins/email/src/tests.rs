//! Native tests through the SDK's harness: the built message is parsed back
//! with `mail-parser`, and realistic inbound mail is classified.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use tollgate_plugin_sdk::testing::Harness;
use tollgate_plugin_sdk::{Event, EventKind, Field, Sender};

use super::*;

/// SHA-256("key-1"), first 32 hex digits, at the sender's domain.
const DELIVERY_ID: &str = "be2974546978e3739e6d6da85c4be9f3@sales.example";

/// HMAC-SHA256(SECRET, DELIVERY_ID + "\n" + "bob@example.com"), first 32
/// hex digits, computed outside this crate.
const SIG: &str = "79d8ef13dc1486f4ca788fdaa4e90712";
const SECRET: &str = "0123456789abcdef-secret";
const TEMPLATE: &str = "https://t.example/u?d={delivery_id}&r={recipient}&sig={sig}";

/// 2023-11-14 22:13:20 UTC.
const NOW_MS: u64 = 1_700_000_000_000;

fn message() -> Message {
    Message {
        recipient: "bob@example.com".into(),
        recipient_name: Some("Bob Example".into()),
        sender: Sender {
            address: "ada@sales.example".into(),
            name: Some("Ada Lovelace".into()),
        },
        subject: Some("Quick question".into()),
        text_body: "Hello Bob,\nhow are you?\n".into(),
        html_body: None,
        headers: Vec::new(),
        references: Vec::new(),
        idempotency_key: "key-1".into(),
    }
}

fn harness() -> Harness {
    Harness::new().now_ms(NOW_MS)
}

fn with_links(harness: Harness) -> Harness {
    harness
        .setting("unsubscribe_url", TEMPLATE)
        .setting("unsubscribe_secret", SECRET)
        .setting("unsubscribe_mailto", "unsubscribe@sales.example")
}

fn parse(bytes: &[u8]) -> mail_parser::Message<'static> {
    MessageParser::default()
        .parse(bytes)
        .expect("the built message parses")
        .into_owned()
}

/// A header's raw value, unfolded and trimmed.
fn raw(mail: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    mail.header_raw(name)
        .map(|value| value.replace("\r\n", "").trim().to_owned())
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn builds_every_header_and_a_multipart_alternative_body() {
    let mut harness = with_links(harness());
    let mut message = message();
    message.subject = Some("Quick question – café?".into());
    message.html_body = Some("<p>Hello Bob,</p><p>how are you?</p>".into());
    message.headers = vec![
        Field {
            name: "X-Campaign".into(),
            value: "spring".into(),
        },
        Field {
            name: "Reply-To".into(),
            value: "ada@reply.example".into(),
        },
    ];
    message.references = vec!["<old1@sales.example>".into(), "old2@sales.example".into()];
    let sent = harness.run(|| Email::send(message)).unwrap();
    assert_eq!(sent.delivery_id, DELIVERY_ID);
    assert_eq!(sent.units, 1);
    assert_eq!(
        harness.run(|| idempotency::recall("key-1")).as_deref(),
        Some(DELIVERY_ID)
    );

    let [mail] = harness.mails() else {
        panic!("one mail expected, got {:?}", harness.mails());
    };
    assert_eq!(mail.envelope_from, "ada@sales.example");
    assert_eq!(mail.recipients, vec!["bob@example.com".to_owned()]);
    assert!(
        !mail
            .message
            .windows(2)
            .any(|pair| pair[1] == b'\n' && pair[0] != b'\r'),
        "every line ends in CRLF"
    );
    let parsed = parse(&mail.message);
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("Ada Lovelace"), Some("ada@sales.example"))
    );
    let to = parsed.to().unwrap().first().unwrap();
    assert_eq!(
        (to.name(), to.address()),
        (Some("Bob Example"), Some("bob@example.com"))
    );
    assert_eq!(parsed.subject(), Some("Quick question – café?"));
    assert_eq!(
        raw(&parsed, "Date").as_deref(),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    assert_eq!(parsed.message_id(), Some(DELIVERY_ID));
    assert_eq!(raw(&parsed, "Message-ID"), Some(format!("<{DELIVERY_ID}>")));
    assert_eq!(ids(parsed.in_reply_to()), vec!["old2@sales.example"]);
    assert_eq!(
        ids(parsed.references()),
        vec!["old1@sales.example", "old2@sales.example"]
    );
    assert_eq!(raw(&parsed, "X-Campaign").as_deref(), Some("spring"));
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("ada@reply.example")
    );
    assert_eq!(
        raw(&parsed, "List-Unsubscribe"),
        Some(format!(
            "<https://t.example/u?d=be2974546978e3739e6d6da85c4be9f3%40sales.example&r=bob%40example.com&sig={SIG}>, <mailto:unsubscribe@sales.example?subject=unsubscribe>"
        ))
    );
    assert_eq!(
        raw(&parsed, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(raw(&parsed, "MIME-Version").as_deref(), Some("1.0"));

    let root = parsed.content_type().unwrap();
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    assert_eq!(parsed.parts.len(), 3, "the container, text and HTML");
    assert!(parsed.parts[1].is_content_type("text", "plain"));
    assert!(parsed.parts[2].is_content_type("text", "html"));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Hello Bob,\r\nhow are you?\r\n")
    );
    assert_eq!(
        parsed.body_html(0).as_deref(),
        Some("<p>Hello Bob,</p><p>how are you?</p>")
    );
    let names: Vec<&str> = parsed
        .headers()
        .iter()
        .map(|header| header.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "X-Campaign",
            "Reply-To",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "MIME-Version",
            "Content-Type",
        ]
    );
}

#[test]
fn a_text_message_carries_no_optional_headers() {
    let mut harness = harness();
    let mut message = message();
    message.subject = None;
    message.recipient_name = None;
    message.sender.name = Some("  ".into());
    harness.run(|| Email::send(message)).unwrap();
    let parsed = parse(&harness.mails()[0].message);
    let root = parsed.content_type().unwrap();
    assert_eq!((root.ctype(), root.subtype()), ("text", Some("plain")));
    assert_eq!(root.attribute("charset"), Some("utf-8"));
    assert_eq!(parsed.parts.len(), 1);
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Hello Bob,\r\nhow are you?\r\n")
    );
    assert_eq!(raw(&parsed, "To").as_deref(), Some("<bob@example.com>"));
    assert_eq!(raw(&parsed, "From").as_deref(), Some("<ada@sales.example>"));
    for absent in [
        "Subject",
        "In-Reply-To",
        "References",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ] {
        assert_eq!(raw(&parsed, absent), None, "{absent}");
    }
}

#[test]
fn the_one_click_header_needs_an_https_link() {
    let mut mailto_only = harness().setting("unsubscribe_mailto", "un+sub&x@sales.example");
    mailto_only.run(|| Email::send(message())).unwrap();
    let parsed = parse(&mailto_only.mails()[0].message);
    assert_eq!(
        raw(&parsed, "List-Unsubscribe").as_deref(),
        Some("<mailto:un%2Bsub%26x@sales.example?subject=unsubscribe>")
    );
    assert_eq!(raw(&parsed, "List-Unsubscribe-Post"), None);

    let mut url_only = harness()
        .setting("unsubscribe_url", TEMPLATE)
        .setting("unsubscribe_secret", SECRET);
    url_only.run(|| Email::send(message())).unwrap();
    let parsed = parse(&url_only.mails()[0].message);
    assert_eq!(
        raw(&parsed, "List-Unsubscribe"),
        Some(format!(
            "<https://t.example/u?d=be2974546978e3739e6d6da85c4be9f3%40sales.example&r=bob%40example.com&sig={SIG}>"
        ))
    );
    assert_eq!(
        raw(&parsed, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
}

#[test]
fn return_path_and_message_id_domain_come_from_the_settings() {
    let mut harness = harness()
        .setting("return_path", "bounces@bounce.example")
        .setting("message_id_domain", "Mid.Example");
    let sent = harness.run(|| Email::send(message())).unwrap();
    assert_eq!(
        sent.delivery_id,
        "be2974546978e3739e6d6da85c4be9f3@mid.example"
    );
    let mail = &harness.mails()[0];
    assert_eq!(mail.envelope_from, "bounces@bounce.example");
    assert_eq!(
        parse(&mail.message).message_id(),
        Some("be2974546978e3739e6d6da85c4be9f3@mid.example")
    );
}

#[test]
fn a_retry_with_the_same_key_sends_nothing() {
    let mut harness = harness();
    let first = harness.run(|| Email::send(message())).unwrap();
    let again = harness.run(|| Email::send(message())).unwrap();
    assert_eq!((again.delivery_id.as_str(), again.units), (DELIVERY_ID, 0));
    assert_eq!(first.delivery_id, again.delivery_id);
    assert_eq!(harness.mails().len(), 1);

    let mut other = message();
    other.idempotency_key = "key-2".into();
    let sent = harness.run(|| Email::send(other)).unwrap();
    assert_eq!(sent.units, 1);
    assert_ne!(sent.delivery_id, DELIVERY_ID);
    assert_eq!(harness.mails().len(), 2);
}

#[test]
fn a_key_remembered_earlier_is_replayed_without_sending() {
    let mut harness = harness();
    harness.run(|| idempotency::remember("key-1", "old@sales.example").unwrap());
    let sent = harness.run(|| Email::send(message())).unwrap();
    assert_eq!(
        (sent.delivery_id.as_str(), sent.units),
        ("old@sales.example", 0)
    );
    assert!(harness.mails().is_empty());
}

#[test]
fn many_sends_keep_the_store_bounded() {
    const SENDS: usize = 300;
    let mut harness = harness();
    for n in 0..SENDS {
        let mut message = message();
        message.idempotency_key = format!("key-{n}");
        let sent = harness.run(|| Email::send(message)).unwrap();
        assert_eq!(sent.units, 1);
    }
    assert_eq!(harness.mails().len(), SENDS);
    // The records share at most 256 bucket keys; none has a key of its own.
    let buckets = (0..idempotency::BUCKETS)
        .filter(|n| harness.stored(&format!("idempotency/{n:02x}")).is_some())
        .count();
    assert!(buckets > 0 && buckets < SENDS, "{buckets} buckets");
    for n in 0..SENDS {
        assert_eq!(harness.stored(&format!("sent/key-{n}")), None);
    }
    // And every message is still recognised.
    for n in [0, SENDS - 1] {
        let mut again = message();
        again.idempotency_key = format!("key-{n}");
        assert_eq!(harness.run(|| Email::send(again)).unwrap().units, 0);
    }
    assert_eq!(harness.mails().len(), SENDS);
}

#[test]
fn a_failed_send_is_not_recorded_and_its_retry_sends() {
    let mut harness =
        harness().smtp_answer(Err(SmtpError::Transient("421 4.7.0 try later".into())));
    let error = harness.run(|| Email::send(message())).unwrap_err();
    assert!(error.retryable);
    assert_eq!(harness.run(|| idempotency::recall("key-1")), None);
    let sent = harness.run(|| Email::send(message())).unwrap();
    assert_eq!(sent.units, 1);
    assert_eq!(harness.mails().len(), 2);
    assert_eq!(
        harness.mails()[0],
        harness.mails()[1],
        "the same bytes again"
    );
}

#[test]
fn maps_the_smtp_errors() {
    let cases = [
        (
            SmtpError::Misconfigured("smtp_host is not set".into()),
            ErrorKind::Misconfigured,
            false,
            "the SMTP settings (smtp_host, smtp_port, smtp_username, smtp_password, smtp_tls) do not work: smtp_host is not set",
        ),
        (
            SmtpError::Rejected("550 5.1.1 <bob@example.com>: no such user".into()),
            ErrorKind::Upstream,
            false,
            "the SMTP server refused the message for good: 550 5.1.1 <bob@example.com>: no such user",
        ),
        (
            SmtpError::Transient("421 4.7.0 try later".into()),
            ErrorKind::Upstream,
            true,
            "the SMTP server deferred the message or could not be reached: 421 4.7.0 try later; retry with the same idempotency key",
        ),
    ];
    for (answer, kind, retryable, text) in cases {
        let mut harness = harness().smtp_answer(Err(answer));
        let error = harness.run(|| Email::send(message())).unwrap_err();
        assert_eq!(
            (error.kind, error.retryable, error.message.as_str()),
            (kind, retryable, text)
        );
        assert_eq!(harness.run(|| idempotency::recall("key-1")), None);
    }
}

fn header(name: &str, value: &str) -> Field {
    Field {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn refuses_bad_input_naming_the_field() {
    type Change = Box<dyn Fn(&mut Message)>;
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_address = format!("bob@{}.example.com", "a".repeat(250));
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|m| m.recipient = "bob".into()),
            "recipient: \"bob\" is not an email address (no @)",
        ),
        (
            Box::new(|m| m.recipient = "bob@localhost".into()),
            "recipient: \"bob@localhost\" is not an email address: \"localhost\" is not a domain name",
        ),
        (
            Box::new(|m| m.recipient = "bob..x@example.com".into()),
            "recipient: \"bob..x@example.com\" is not an email address: the part before @",
        ),
        (
            Box::new(|m| m.recipient = "bob@example.com\r\nBcc: eve@evil.example".into()),
            "recipient: \"bob@example.com\\r\\nBcc: eve@evil.example\" is not an email address",
        ),
        (
            Box::new(|m| m.recipient = "bob@-example.com".into()),
            "recipient: \"bob@-example.com\" is not an email address: \"-example.com\"",
        ),
        (
            Box::new(move |m| m.recipient = long_local.clone()),
            "recipient: \"aaaa",
        ),
        (
            Box::new(move |m| m.recipient = long_address.clone()),
            "recipient: longer than 254 bytes",
        ),
        (
            Box::new(|m| m.sender.address = "nobody".into()),
            "sender.address: \"nobody\" is not an email address (no @)",
        ),
        (
            Box::new(|m| m.sender.name = Some("Ada\r\nBcc: eve@evil.example".into())),
            "sender.name: contains a line break or another control character",
        ),
        (
            Box::new(|m| m.recipient_name = Some("Bob\nX".into())),
            "recipient_name: contains a line break or another control character",
        ),
        (
            Box::new(|m| m.recipient_name = Some("b".repeat(257))),
            "recipient_name: longer than 256 characters",
        ),
        (
            Box::new(|m| m.subject = Some("Hi\r\nBcc: eve@evil.example".into())),
            "subject: contains a line break or another control character",
        ),
        (
            Box::new(|m| m.subject = Some("é".repeat(999))),
            "subject: longer than 998 characters",
        ),
        (
            Box::new(|m| m.text_body = "x".repeat((1 << 20) + 1)),
            "text_body: longer than 1048576 bytes",
        ),
        (
            Box::new(|m| m.html_body = Some("x".repeat((1 << 20) + 1))),
            "html_body: longer than 1048576 bytes",
        ),
        (
            Box::new(|m| m.headers = (0..51).map(|i| header(&format!("X-{i}"), "v")).collect()),
            "headers: more than 50",
        ),
        (
            Box::new(|m| m.headers = vec![header("X-Ok", "1"), header("subject", "x")]),
            "headers[1].name: subject is written by the email channel and cannot be set",
        ),
        (
            Box::new(|m| m.headers = vec![header("Content-Type", "text/html")]),
            "headers[0].name: Content-Type is written by the email channel and cannot be set",
        ),
        (
            Box::new(|m| m.headers = vec![header("List-Unsubscribe-Post", "x")]),
            "headers[0].name: List-Unsubscribe-Post is written by the email channel and cannot be set",
        ),
        (
            Box::new(|m| m.headers = vec![header("BCC", "eve@evil.example")]),
            "headers[0].name: BCC is written by the email channel and cannot be set",
        ),
        (
            Box::new(|m| m.headers = vec![header("X Bad", "x")]),
            "headers[0].name: \"X Bad\" is not a header name",
        ),
        (
            Box::new(|m| m.headers = vec![header("", "x")]),
            "headers[0].name: \"\" is not a header name",
        ),
        (
            Box::new(|m| m.headers = vec![header("X-A", "1\r\nBcc: eve@evil.example")]),
            "headers[0].value: contains a line break or another control character",
        ),
        (
            Box::new(|m| m.headers = vec![header("X-A", &"v".repeat(999))]),
            "headers[0].value: longer than 998 bytes",
        ),
        (
            Box::new(|m| m.references = (0..101).map(|i| format!("{i}@x.example")).collect()),
            "references: more than 100",
        ),
        (
            Box::new(|m| m.references = vec!["a@b".into(), "no-at-sign".into()]),
            "references[1]: \"no-at-sign\" is not a Message-ID",
        ),
        (
            Box::new(|m| m.references = vec!["<a b@c>".into()]),
            "references[0]: \"<a b@c>\" is not a Message-ID",
        ),
        (
            Box::new(|m| m.idempotency_key = String::new()),
            "idempotency_key: must be 1 to 512 bytes",
        ),
        (
            Box::new(|m| m.idempotency_key = "k".repeat(513)),
            "idempotency_key: must be 1 to 512 bytes",
        ),
        (
            Box::new(|m| m.idempotency_key = "key\t1".into()),
            "idempotency_key: must not contain a tab or a line break",
        ),
        (
            Box::new(|m| m.idempotency_key = "key-1\r\n".into()),
            "idempotency_key: must not contain a tab or a line break",
        ),
    ];
    for (change, expected) in cases {
        let mut message = message();
        change(&mut message);
        let mut harness = harness();
        let error = harness.run(|| Email::send(message)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{}", error.message);
        assert!(!error.retryable);
        assert!(
            error.message.starts_with(expected),
            "{:?} does not start with {expected:?}",
            error.message
        );
        assert!(harness.mails().is_empty());
    }
}

#[test]
fn accepts_what_the_checks_allow() {
    let mut message = message();
    message.recipient = "o'brien+tag@mail.example-domain.co.uk".into();
    message.recipient_name = Some("O'Brien, \"Pat\" Ünal".into());
    message.subject = Some("é".repeat(998));
    message.text_body = "x".repeat(1 << 20);
    message.headers = (0..50).map(|i| header(&format!("X-{i}"), "v")).collect();
    message.references = (0..100).map(|i| format!("<{i}@x.example>")).collect();
    message.idempotency_key = "k".repeat(512);
    let mut harness = harness();
    harness.run(|| Email::send(message)).unwrap();
    let parsed = parse(&harness.mails()[0].message);
    let to = parsed.to().unwrap().first().unwrap();
    assert_eq!(
        (to.name(), to.address()),
        (
            Some("O'Brien, \"Pat\" Ünal"),
            Some("o'brien+tag@mail.example-domain.co.uk")
        )
    );
    assert_eq!(ids(parsed.references()).len(), 100);
    assert_eq!(ids(parsed.in_reply_to()), vec!["99@x.example"]);
    assert_eq!(parsed.subject(), Some("é".repeat(998).as_str()));
}

#[test]
fn refuses_bad_settings_as_misconfigured() {
    let cases = [
        (
            vec![("unsubscribe_url", TEMPLATE)],
            "setting \"unsubscribe_secret\" is not set; unsubscribe_url needs it to sign its links",
        ),
        (
            vec![
                ("unsubscribe_url", TEMPLATE),
                ("unsubscribe_secret", "short"),
            ],
            "setting \"unsubscribe_secret\" is shorter than 16 bytes",
        ),
        (
            vec![(
                "unsubscribe_url",
                "http://t.example/u?d={delivery_id}&r={recipient}&sig={sig}",
            )],
            "setting \"unsubscribe_url\": must be an https URL",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u?d={delivery_id}&r={recipient}",
            )],
            "setting \"unsubscribe_url\": must contain {sig} exactly once",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/{recipient}/u?d={delivery_id}&r={recipient}&sig={sig}",
            )],
            "setting \"unsubscribe_url\": must contain {recipient} exactly once",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u?d={delivery_id}&r={recipient}&sig={sig}&x={tenant}",
            )],
            "setting \"unsubscribe_url\": has the unknown placeholder {tenant}",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u/{delivery_id}-{recipient}?s={sig}",
            )],
            "setting \"unsubscribe_url\": {delivery_id} must be followed by the end of the URL",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u/{delivery_id}{recipient}?s={sig}",
            )],
            "setting \"unsubscribe_url\": {delivery_id} must be followed",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u?d={delivery_id}%20&r={recipient}&s={sig}",
            )],
            "setting \"unsubscribe_url\": {delivery_id} must be followed",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://{sig}.t.example/u?d={delivery_id}&r={recipient}",
            )],
            "setting \"unsubscribe_url\": needs a plain host name after https://",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u#d={delivery_id}&r={recipient}&sig={sig}",
            )],
            "setting \"unsubscribe_url\": contains '#'",
        ),
        (
            vec![(
                "unsubscribe_url",
                "https://t.example/u?d={delivery_id&r={recipient}&sig={sig}",
            )],
            "setting \"unsubscribe_url\": has the unknown placeholder {delivery_id&r={recipient}",
        ),
        (
            vec![("unsubscribe_mailto", "not-an-address")],
            "setting \"unsubscribe_mailto\": \"not-an-address\" is not an email address (no @)",
        ),
        (
            vec![("message_id_domain", "bad_domain.example")],
            "setting \"message_id_domain\": \"bad_domain.example\" is not a domain name",
        ),
        (
            vec![("return_path", "bounces")],
            "setting \"return_path\": \"bounces\" is not an email address (no @)",
        ),
    ];
    for (settings, expected) in cases {
        let mut harness = settings.iter().fold(harness(), |harness, (name, value)| {
            harness.setting(name, value)
        });
        let error = harness.run(|| Email::send(message())).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured, "{}", error.message);
        assert!(!error.retryable);
        assert!(
            error.message.starts_with(expected),
            "{:?} does not start with {expected:?}",
            error.message
        );
        assert!(harness.mails().is_empty());
    }
}

// Callbacks.

fn mail_callback(raw: &str) -> Callback {
    Callback {
        headers: vec![header("Content-Type", "message/rfc822")],
        body: raw.as_bytes().to_vec(),
    }
}

fn events(harness: &mut Harness, callback: Callback) -> Vec<Event> {
    let events = harness
        .run(|| Email::parse_callback(callback))
        .expect("the callback is accepted");
    assert_eq!(events.units, 0);
    events.events
}

fn event(
    kind: EventKind,
    delivery_id: Option<&str>,
    recipient: Option<&str>,
    occurred_at_ms: Option<u64>,
    detail: Option<&str>,
) -> Event {
    Event {
        kind,
        delivery_id: delivery_id.map(str::to_owned),
        recipient: recipient.map(str::to_owned),
        url: None,
        occurred_at_ms,
        detail: detail.map(str::to_owned),
    }
}

/// A Postfix bounce: a hard failure, the whole original returned.
const HARD_BOUNCE: &str = r#"Return-Path: <>
Received: by mx.sales.example (Postfix) id 3F1A2B; Tue, 14 Nov 2023 22:15:01 +0000 (UTC)
Date: Tue, 14 Nov 2023 22:15:01 +0000 (UTC)
From: MAILER-DAEMON@mx.sales.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: ada@sales.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="3F1A2B.1700000101/mx.sales.example"
Content-Transfer-Encoding: 7bit
Message-Id: <20231114221501.3F1A2B@mx.sales.example>

This is a MIME-encapsulated message.

--3F1A2B.1700000101/mx.sales.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.sales.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<bob@example.com>: host mx.example.com[203.0.113.5] said: 550 5.1.1
    <bob@example.com>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--3F1A2B.1700000101/mx.sales.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sales.example
X-Postfix-Queue-ID: 3F1A2B
X-Postfix-Sender: rfc822; ada@sales.example
Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000 (UTC)

Final-Recipient: rfc822; bob@mail.example.com
Original-Recipient: rfc822;bob@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected:
    User unknown

--3F1A2B.1700000101/mx.sales.example
Content-Description: Undelivered Message
Content-Type: message/rfc822

From: Ada Lovelace <ada@sales.example>
To: Bob Example <bob@example.com>
Subject: Quick question
Date: Tue, 14 Nov 2023 22:13:20 +0000
Message-ID: <be2974546978e3739e6d6da85c4be9f3@sales.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello Bob

--3F1A2B.1700000101/mx.sales.example--
"#;

/// A delay notice for one recipient and a success for another, with only
/// the original's headers returned.
const SOFT_BOUNCE: &str = r#"Date: Wed, 15 Nov 2023 02:13:20 +0000
From: Mail Delivery Subsystem <mailer-daemon@mx.sales.example>
To: ada@sales.example
Subject: Delayed Mail (still being retried)
Auto-Submitted: auto-generated (warning)
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status"; boundary="b1"

--b1
Content-Type: text/plain

Your message has not been delivered yet. It will be retried.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sales.example

Final-Recipient: rfc822; carol@example.org
Action: delayed
Status: 4.4.7
Will-Retry-Until: Sat, 18 Nov 2023 22:13:20 +0000

Final-Recipient: rfc822; dave@example.org
Action: relayed
Status: 2.0.0

--b1
Content-Type: text/rfc822-headers

From: Ada Lovelace <ada@sales.example>
To: carol@example.org
Subject: Quick question
Message-ID: <0123456789abcdef0123456789abcdef@sales.example>

--b1--
"#;

#[test]
fn a_hard_bounce() {
    let mut harness = harness();
    let crlf = HARD_BOUNCE.replace('\n', "\r\n");
    assert_eq!(
        events(&mut harness, mail_callback(&crlf)),
        vec![event(
            EventKind::BouncedHard,
            Some(DELIVERY_ID),
            Some("bob@example.com"),
            Some(1_700_000_101_000),
            Some("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown"),
        )]
    );
}

#[test]
fn a_soft_bounce_with_only_the_original_headers() {
    let mut harness = harness();
    assert_eq!(
        events(&mut harness, mail_callback(SOFT_BOUNCE)),
        vec![event(
            EventKind::BouncedSoft,
            Some("0123456789abcdef0123456789abcdef@sales.example"),
            Some("carol@example.org"),
            Some(1_700_014_400_000),
            Some("4.4.7"),
        )]
    );
}

#[test]
fn a_bounce_of_someone_elses_message_has_no_delivery_id() {
    let mut harness = harness();
    let foreign = HARD_BOUNCE.replace(
        "<be2974546978e3739e6d6da85c4be9f3@sales.example>",
        "<CAF=x1y2z3@mail.gmail.com>",
    );
    let events = events(&mut harness, mail_callback(&foreign));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::BouncedHard);
    assert_eq!(events[0].delivery_id, None);
    assert_eq!(events[0].recipient.as_deref(), Some("bob@example.com"));
}

#[test]
fn other_reports_are_not_replies() {
    let receipt = SOFT_BOUNCE
        .replace(
            "report-type=\"delivery-status\"",
            "report-type=disposition-notification",
        )
        .replace(
            "From: Mail Delivery Subsystem <mailer-daemon@mx.sales.example>",
            "From: carol@example.org",
        )
        .replace(
            "Subject: Delayed",
            "In-Reply-To: <0123456789abcdef0123456789abcdef@sales.example>\nSubject: Read:",
        );
    assert_eq!(events(&mut harness(), mail_callback(&receipt)), vec![]);
}

fn inbound(headers: &str, body: &str) -> String {
    format!(
        "From: Bob Example <bob@example.com>\nTo: Ada Lovelace <ada@sales.example>\nDate: Wed, 15 Nov 2023 09:00:00 +0100\nMessage-ID: <reply-1@example.com>\n{headers}\n\n{body}"
    )
}

/// 2023-11-15 08:00:00 UTC.
const INBOUND_MS: u64 = 1_700_035_200_000;

#[test]
fn an_out_of_office() {
    let raw = inbound(
        "Subject: Out of office: Quick question\nAuto-Submitted: auto-replied; owner-email=\"bob@example.com\"\nIn-Reply-To: <be2974546978e3739e6d6da85c4be9f3@sales.example>",
        "I am out of the office until Monday.\n",
    );
    assert_eq!(
        events(&mut harness(), mail_callback(&raw)),
        vec![event(
            EventKind::AutoReplied,
            Some(DELIVERY_ID),
            Some("bob@example.com"),
            Some(INBOUND_MS),
            Some("I am out of the office until Monday."),
        )]
    );
    for marker in [
        "X-Autoreply: yes",
        "X-Autorespond: Vacation",
        "Precedence: auto_reply",
        "Auto-Submitted: auto-generated",
    ] {
        let raw = inbound(&format!("Subject: Away\n{marker}"), "Away.\n");
        let events = events(&mut harness(), mail_callback(&raw));
        assert_eq!(events.len(), 1, "{marker}");
        assert_eq!(events[0].kind, EventKind::AutoReplied, "{marker}");
        assert_eq!(events[0].delivery_id, None, "{marker}");
    }
}

#[test]
fn a_reply() {
    let text = format!("Sounds good, let's talk. {}", "x".repeat(600));
    let raw = inbound(
        "Subject: Re: Quick question\nAuto-Submitted: no\nPrecedence: bulk\nIn-Reply-To: <be2974546978e3739e6d6da85c4be9f3@sales.example>\nReferences: <be2974546978e3739e6d6da85c4be9f3@sales.example>\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"r\"",
        &format!(
            "--r\nContent-Type: text/plain; charset=utf-8\n\n{text}\n\n> Hello Bob\n--r\nContent-Type: text/html\n\n<p>Sounds good</p>\n--r--\n"
        ),
    );
    let events = events(&mut harness(), mail_callback(&raw));
    let detail: String = text.chars().take(500).collect();
    assert_eq!(
        events,
        vec![event(
            EventKind::Replied,
            Some(DELIVERY_ID),
            Some("bob@example.com"),
            Some(INBOUND_MS),
            Some(&detail),
        )]
    );
}

#[test]
fn a_reply_found_by_its_references() {
    let raw = inbound(
        "Subject: Re: Quick question\nIn-Reply-To: <CAF=x1@mail.gmail.com>\nReferences: <0123456789abcdef0123456789abcdef@sales.example> <be2974546978e3739e6d6da85c4be9f3@sales.example> <CAF=x1@mail.gmail.com>",
        "Yes.\n",
    );
    let events = events(&mut harness(), mail_callback(&raw));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Replied);
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some(DELIVERY_ID),
        "the newest of ours"
    );

    let foreign = inbound(
        "Subject: Re: lunch\nIn-Reply-To: <CAF=x1@mail.gmail.com>\nReferences: <BE2974546978E3739E6D6DA85C4BE9F3@sales.example>",
        "Yes.\n",
    );
    assert_eq!(events_of(&foreign), vec![]);
}

fn events_of(raw: &str) -> Vec<Event> {
    events(&mut harness(), mail_callback(raw))
}

#[test]
fn an_unsubscribe_email() {
    let raw = "From: Bob <Bob@Example.com>\nTo: unsubscribe@sales.example\nSubject: please remove me\nDate: Wed, 15 Nov 2023 09:00:00 +0100\n\nremove\n";
    let mut harness = harness().setting("unsubscribe_mailto", "Unsubscribe@Sales.Example");
    assert_eq!(
        events(&mut harness, mail_callback(raw)),
        vec![event(
            EventKind::Unsubscribed,
            None,
            Some("Bob@Example.com"),
            Some(INBOUND_MS),
            Some("unsubscribe email"),
        )]
    );
    // Without the setting, only the subject tells.
    assert_eq!(events_of(raw), vec![]);
    let by_subject = inbound(
        "Subject:  Unsubscribe \nIn-Reply-To: <be2974546978e3739e6d6da85c4be9f3@sales.example>",
        "",
    );
    assert_eq!(
        events_of(&by_subject),
        vec![event(
            EventKind::Unsubscribed,
            Some(DELIVERY_ID),
            Some("bob@example.com"),
            Some(INBOUND_MS),
            Some("unsubscribe email"),
        )]
    );
}

/// The callback the host makes for a one-click unsubscribe at `url`.
fn one_click(url: &str) -> Callback {
    Callback {
        headers: vec![
            header("Content-Type", "application/x-www-form-urlencoded"),
            header("X-Tollgate-Callback-Url", url),
        ],
        body: b"List-Unsubscribe=One-Click".to_vec(),
    }
}

#[test]
fn a_one_click_unsubscribe_from_a_sent_link() {
    let mut harness = with_links(harness());
    harness.run(|| Email::send(message())).unwrap();
    let parsed = parse(&harness.mails()[0].message);
    let header = raw(&parsed, "List-Unsubscribe").unwrap();
    let url = header
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let path = url.strip_prefix("https://t.example").unwrap();
    let expected = vec![event(
        EventKind::Unsubscribed,
        Some(DELIVERY_ID),
        Some("bob@example.com"),
        Some(NOW_MS),
        Some("one-click unsubscribe (RFC 8058)"),
    )];
    assert_eq!(events(&mut harness, one_click(path)), expected);
    assert_eq!(
        events(&mut harness, one_click(&url)),
        expected,
        "a whole URL"
    );

    let multipart = Callback {
        headers: vec![
            self::header("content-type", "multipart/form-data; boundary=----x"),
            self::header("x-tollgate-callback-url", path),
        ],
        body: b"------x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n------x--\r\n".to_vec(),
    };
    assert_eq!(events(&mut harness, multipart), expected);
}

#[test]
fn a_forged_one_click_unsubscribe_is_unauthorized() {
    let good = format!(
        "/u?d=be2974546978e3739e6d6da85c4be9f3%40sales.example&r=bob%40example.com&sig={SIG}"
    );
    assert_eq!(
        events(&mut with_links(harness()), one_click(&good)).len(),
        1
    );
    let flipped = format!("{}0", &good[..good.len() - 1]);
    let cases = [
        (
            flipped,
            "the one-click unsubscribe URL's sig does not match its delivery id and recipient",
        ),
        (
            good.replace("r=bob%40", "r=eve%40"),
            "the one-click unsubscribe URL's sig does not match its delivery id and recipient",
        ),
        (
            good.replace(SIG, &SIG.to_uppercase()[..30]),
            "the one-click unsubscribe URL's sig does not match its delivery id and recipient",
        ),
        (
            good.replace(&format!("&sig={SIG}"), ""),
            "the one-click unsubscribe URL does not have the shape of setting unsubscribe_url",
        ),
        (
            format!("{good}&x=1"),
            "the one-click unsubscribe URL does not have the shape of setting unsubscribe_url",
        ),
        (
            good.replace("/u?", "/v?"),
            "the one-click unsubscribe URL does not have the shape of setting unsubscribe_url",
        ),
    ];
    for (url, expected) in cases {
        let error = with_links(harness())
            .run(|| Email::parse_callback(one_click(&url)))
            .unwrap_err();
        assert_eq!(
            (error.kind, error.message.as_str()),
            (ErrorKind::Unauthorized, expected),
            "{url}"
        );
    }

    let mut unsigned = one_click(&good);
    unsigned.headers.truncate(1);
    let error = with_links(harness())
        .run(|| Email::parse_callback(unsigned))
        .unwrap_err();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (
            ErrorKind::Unauthorized,
            "the one-click unsubscribe has no x-tollgate-callback-url header to verify"
        )
    );
    let error = harness()
        .run(|| Email::parse_callback(one_click(&good)))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized, "no link configured");
}

#[test]
fn a_form_that_is_not_a_one_click_unsubscribe_yields_nothing() {
    let mut callback = one_click("/u?d=x&r=y&sig=z");
    callback.body = b"List-Unsubscribe=Later&a=b".to_vec();
    assert_eq!(events(&mut with_links(harness()), callback), vec![]);
}

#[test]
fn garbage_yields_no_events() {
    let newsletter = "From: news@shop.example\nTo: ada@sales.example\nSubject: Deals\n\nBuy now\n";
    let nonstandard_bounce = "From: MAILER-DAEMON@mx.example.com\nTo: ada@sales.example\nSubject: failure notice\nAuto-Submitted: auto-replied\nIn-Reply-To: <be2974546978e3739e6d6da85c4be9f3@sales.example>\n\nSorry, I could not deliver your message to <bob@example.com>.\n";
    let broken_report = "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\nContent-Type: message/delivery-status\n\nStatus: 5.\n\nStatus: 9.9.9\nFinal-Recipient: rfc822;\n--x";
    let mut bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\0\0\0\xff\xfe".to_vec(),
        b"not an email at all".to_vec(),
        b"\n\n\n".to_vec(),
        newsletter.as_bytes().to_vec(),
        nonstandard_bounce.as_bytes().to_vec(),
        broken_report.as_bytes().to_vec(),
        "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=a\n\n--a\n".repeat(200).into_bytes(),
    ];
    let mut seed: u32 = 7;
    bodies.push(
        (0..64 << 10)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect(),
    );
    for body in bodies {
        let callback = Callback {
            headers: vec![header("content-type", "message/rfc822")],
            body: body.clone(),
        };
        assert_eq!(
            events(&mut with_links(harness()), callback),
            vec![],
            "{:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    let json = Callback {
        headers: vec![header("Content-Type", "application/json")],
        body: br#"{"event": "bounce"}"#.to_vec(),
    };
    assert_eq!(events(&mut harness(), json), vec![]);
}

#[test]
fn an_unparseable_date_is_left_out() {
    let raw = "From: bob@example.com\nDate: sometime soon\nSubject: Re: hi\nIn-Reply-To: <be2974546978e3739e6d6da85c4be9f3@sales.example>\n\nok\n";
    let events = events_of(raw);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].occurred_at_ms, None);
}

#[test]
fn refuses_an_oversized_callback() {
    let mut callback = mail_callback("");
    callback.body = vec![b'a'; (10 << 20) + 1];
    let error = harness()
        .run(|| Email::parse_callback(callback))
        .unwrap_err();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (
            ErrorKind::InvalidInput,
            "callback body: 10485761 bytes, more than the 10485760 this channel reads"
        )
    );
    let mut callback = mail_callback("");
    callback.body = vec![b'a'; 10 << 20];
    assert_eq!(events(&mut harness(), callback), vec![]);
}
