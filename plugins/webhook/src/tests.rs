use hmac::{Hmac, Mac};
use serde_json::json;
use tollgate_plugin_sdk::testing::Harness;
use tollgate_plugin_sdk::{
    Callback, Channel, ErrorKind, Field, Message, PluginError, Sender, host,
};

use super::*;

const URL: &str = "https://gateway.example.com/tollgate/messages?account=7";
const SECRET: &str = "whsec-0123456789abcdef";
const CALLBACK_SECRET: &str = "cbsec-fedcba9876543210";
/// 2023-11-14T22:13:20.123Z.
const NOW_MS: u64 = 1_700_000_000_123;
const NOW_SECONDS: u64 = 1_700_000_000;
/// `printf msg-42 | sha256sum`, first 32 hex digits.
const OUR_ID: &str = "wh_22ca0cc9586a0c8e0644939617f12c52";

fn configured() -> Harness {
    Harness::new()
        .setting("url", URL)
        .setting("signing_secret", SECRET)
        .now_ms(NOW_MS)
}

fn message() -> Message {
    Message {
        recipient: "+33612345678".into(),
        recipient_name: Some("Ada Lovelace".into()),
        sender: Sender {
            address: "+33700000000".into(),
            name: Some("Tollgate".into()),
        },
        subject: Some("Your demo".into()),
        text_body: "Hello Ada, see you at 10:00.".into(),
        html_body: Some("<p>Hello Ada</p>".into()),
        headers: vec![
            Field {
                name: "campaign".into(),
                value: "spring".into(),
            },
            Field {
                name: "X-Priority".into(),
                value: "1".into(),
            },
        ],
        references: vec!["wh_earlier1".into(), "gw-earlier2".into()],
        idempotency_key: "msg-42".into(),
    }
}

/// HMAC-SHA256 in hex, computed here rather than by the plugin.
fn hmac_hex(secret: &str, signed: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed);
    hex::encode(mac.finalize().into_bytes())
}

fn header_value<'a>(headers: &'a [Field], name: &str) -> &'a str {
    let found: Vec<&Field> = headers.iter().filter(|h| h.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} header in {headers:?}");
    &found[0].value
}

fn send(harness: &mut Harness, message: Message) -> Result<Sent, PluginError> {
    harness.run(|| Webhook::send(message))
}

/// The delivery id remembered for `message()`'s key.
fn recalled(harness: &mut Harness) -> Option<String> {
    harness.run(|| idempotency::recall("msg-42"))
}

fn assert_error(result: Result<impl std::fmt::Debug, PluginError>, kind: ErrorKind, needle: &str) {
    let error = result.expect_err("an error");
    assert_eq!(error.kind, kind, "{error:?}");
    assert!(
        error.message.contains(needle),
        "{:?} does not contain {needle:?}",
        error.message
    );
}

#[test]
fn the_hmac_used_in_these_tests_matches_openssl() {
    // printf '1700000000.{"events":[]}' | openssl dgst -sha256 -hmac whsec-0123456789abcdef
    let expected = "08b7acdf8dee9adfe8cd59eeb2cf50f938fe1dc5286f7111c84acae5e8c25374";
    assert_eq!(hmac_hex(SECRET, br#"1700000000.{"events":[]}"#), expected);
    let ours = sign(SECRET, "1700000000", br#"{"events":[]}"#).finalize();
    assert_eq!(hex::encode(ours.into_bytes()), expected);
}

#[test]
fn send_posts_the_signed_message() {
    let mut harness = configured().respond(202, "");
    let sent = send(&mut harness, message()).unwrap();
    assert_eq!(sent.delivery_id, OUR_ID);
    assert_eq!(sent.units, 1);

    let [request] = harness.requests() else {
        panic!("one request, not {:?}", harness.requests());
    };
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, URL);
    let names: Vec<&str> = request.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "idempotency-key",
            "x-tollgate-delivery",
            "x-tollgate-timestamp",
            "x-tollgate-signature"
        ]
    );
    assert_eq!(
        header_value(&request.headers, "content-type"),
        "application/json"
    );
    assert_eq!(header_value(&request.headers, "idempotency-key"), "msg-42");
    assert_eq!(
        header_value(&request.headers, "x-tollgate-delivery"),
        OUR_ID
    );
    assert_eq!(
        header_value(&request.headers, "x-tollgate-timestamp"),
        "1700000000"
    );

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "id": OUR_ID,
            "idempotency_key": "msg-42",
            "recipient": "+33612345678",
            "recipient_name": "Ada Lovelace",
            "sender": {"address": "+33700000000", "name": "Tollgate"},
            "subject": "Your demo",
            "text": "Hello Ada, see you at 10:00.",
            "html": "<p>Hello Ada</p>",
            "headers": {"campaign": "spring", "X-Priority": "1"},
            "references": ["wh_earlier1", "gw-earlier2"],
            "sent_at_ms": NOW_MS,
        })
    );

    let mut signed = b"1700000000.".to_vec();
    signed.extend_from_slice(&request.body);
    assert_eq!(
        header_value(&request.headers, "x-tollgate-signature"),
        format!("v1={}", hmac_hex(SECRET, &signed))
    );
    assert_eq!(recalled(&mut harness).as_deref(), Some(OUR_ID));
}

#[test]
fn absent_optional_fields_are_null_and_empty_lists_stay_lists() {
    let mut harness = configured().respond(200, "ok");
    let message = Message {
        recipient_name: None,
        sender: Sender {
            address: "bot".into(),
            name: None,
        },
        subject: None,
        html_body: None,
        headers: Vec::new(),
        references: Vec::new(),
        ..message()
    };
    send(&mut harness, message).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&harness.requests()[0].body).unwrap();
    assert_eq!(body["recipient_name"], serde_json::Value::Null);
    assert_eq!(body["sender"], json!({"address": "bot", "name": null}));
    assert_eq!(body["subject"], serde_json::Value::Null);
    assert_eq!(body["html"], serde_json::Value::Null);
    assert_eq!(body["headers"], json!({}));
    assert_eq!(body["references"], json!([]));
}

#[test]
fn the_gateways_id_wins_and_is_stored() {
    let mut harness = configured().respond(200, r#"{"id": "gw-9f8e7d", "status": "queued"}"#);
    let sent = send(&mut harness, message()).unwrap();
    assert_eq!(sent.delivery_id, "gw-9f8e7d");
    assert_eq!(sent.units, 1);
    assert_eq!(recalled(&mut harness).as_deref(), Some("gw-9f8e7d"));
    // What we sent still carried our own id: the gateway's was not known yet.
    let body: serde_json::Value = serde_json::from_slice(&harness.requests()[0].body).unwrap();
    assert_eq!(body["id"], OUR_ID);
}

#[test]
fn our_id_is_used_when_the_gateway_gives_no_usable_one() {
    let long_id = format!(r#"{{"id": "{}"}}"#, "g".repeat(GATEWAY_ID_BYTES_MAX + 1));
    let answers = [
        "",
        "OK",
        "[1, 2]",
        r#"{"status": "queued"}"#,
        r#"{"id": 12345}"#,
        r#"{"id": null}"#,
        r#"{"id": ""}"#,
        r#"{"id": "line\nbreak"}"#,
        &long_id,
    ];
    for answer in answers {
        let mut harness = configured().respond(201, answer);
        let sent = send(&mut harness, message()).unwrap();
        assert_eq!(sent.delivery_id, OUR_ID, "answer {answer:?}");
        assert_eq!(recalled(&mut harness).as_deref(), Some(OUR_ID));
    }
    // The longest id still accepted.
    let longest = "g".repeat(GATEWAY_ID_BYTES_MAX);
    let mut harness = configured().respond(200, &format!(r#"{{"id": "{longest}"}}"#));
    assert_eq!(send(&mut harness, message()).unwrap().delivery_id, longest);
}

#[test]
fn a_retry_returns_the_stored_id_without_sending_again() {
    let mut harness = configured().respond(200, r#"{"id": "gw-1"}"#);
    let first = send(&mut harness, message()).unwrap();
    let second = send(&mut harness, message()).unwrap();
    assert_eq!(harness.requests().len(), 1);
    assert_eq!((first.delivery_id.as_str(), first.units), ("gw-1", 1));
    assert_eq!((second.delivery_id.as_str(), second.units), ("gw-1", 0));
}

#[test]
fn a_replay_needs_neither_settings_nor_the_network() {
    let mut harness = Harness::new();
    harness.run(|| idempotency::remember("msg-42", "gw-earlier").unwrap());
    let sent = send(&mut harness, message()).unwrap();
    assert_eq!(sent.delivery_id, "gw-earlier");
    assert_eq!(sent.units, 0);
    assert!(harness.requests().is_empty());
}

#[test]
fn another_key_is_another_message() {
    let mut harness = configured().respond(202, "");
    harness.run(|| idempotency::remember("msg-41", "gw-other").unwrap());
    let sent = send(&mut harness, message()).unwrap();
    assert_eq!(sent.delivery_id, OUR_ID);
    assert_eq!(harness.requests().len(), 1);
}

#[test]
fn statuses_map_to_errors_the_caller_can_act_on() {
    let cases = [
        (401, ErrorKind::Unauthorized, false, "signing_secret"),
        (
            403,
            ErrorKind::Unauthorized,
            false,
            "(403: gateway says no)",
        ),
        (408, ErrorKind::RateLimited, true, "slow down (408"),
        (429, ErrorKind::RateLimited, true, "slow down (429"),
        (301, ErrorKind::Misconfigured, false, "redirects (301)"),
        (
            400,
            ErrorKind::InvalidInput,
            false,
            "(400: gateway says no)",
        ),
        (
            404,
            ErrorKind::InvalidInput,
            false,
            "refused the message (404",
        ),
        (
            422,
            ErrorKind::InvalidInput,
            false,
            "(422: gateway says no)",
        ),
        (
            500,
            ErrorKind::Upstream,
            true,
            "failed (500: gateway says no)",
        ),
        (503, ErrorKind::Upstream, true, "failed (503"),
    ];
    for (status, kind, retryable, needle) in cases {
        let mut harness = configured().respond(status, "gateway says no\n");
        let error = send(&mut harness, message()).expect_err("an error");
        assert_eq!(
            (error.kind, error.retryable),
            (kind, retryable),
            "{status}: {error:?}"
        );
        assert!(error.message.contains(needle), "{status}: {error:?}");
        assert_eq!(recalled(&mut harness), None, "{status}");
    }
}

#[test]
fn a_failed_send_is_sent_again_on_retry() {
    let mut harness = configured()
        .respond(503, "")
        .respond(200, r#"{"id": "gw-2"}"#);
    assert!(send(&mut harness, message()).is_err());
    let sent = send(&mut harness, message()).unwrap();
    assert_eq!((sent.delivery_id.as_str(), sent.units), ("gw-2", 1));
    assert_eq!(harness.requests().len(), 2);
    assert_eq!(harness.requests()[0].body, harness.requests()[1].body);
}

#[test]
fn a_refusal_quotes_only_the_start_of_the_answer() {
    let answer = format!("{}{}", "a".repeat(EXCERPT_BYTES_MAX), "b".repeat(700));
    let mut harness = configured().respond(422, &answer);
    let error = send(&mut harness, message()).unwrap_err();
    assert!(
        error
            .message
            .contains(&format!("(422: {}…)", "a".repeat(EXCERPT_BYTES_MAX))),
        "{error:?}"
    );
    assert!(!error.message.contains('b'), "{error:?}");

    // Cut at a character boundary, not inside one; control characters go.
    let answer = format!("{}é\r\nmore", "a".repeat(EXCERPT_BYTES_MAX - 1));
    let mut harness = configured().respond(400, &answer);
    let error = send(&mut harness, message()).unwrap_err();
    assert!(
        error
            .message
            .ends_with(&format!("(400: {}…)", "a".repeat(EXCERPT_BYTES_MAX - 1))),
        "{error:?}"
    );
    let mut harness = configured().respond(400, "bad\r\nrecipient");
    let error = send(&mut harness, message()).unwrap_err();
    assert!(error.message.contains("(400: bad  recipient)"), "{error:?}");
    let mut harness = configured().respond(400, "");
    let error = send(&mut harness, message()).unwrap_err();
    assert!(error.message.contains("(400: empty answer)"), "{error:?}");
}

#[test]
fn transport_failures_are_retryable_and_denials_are_configuration() {
    let mut harness = configured().fail_http(host::HttpError::Timeout);
    let error = send(&mut harness, message()).unwrap_err();
    assert_eq!((error.kind, error.retryable), (ErrorKind::Upstream, true));

    let mut harness = configured().fail_http(host::HttpError::Failed("connection reset".into()));
    let error = send(&mut harness, message()).unwrap_err();
    assert_eq!((error.kind, error.retryable), (ErrorKind::Upstream, true));
    assert_eq!(error.message, "connection reset");

    let mut harness = configured().fail_http(host::HttpError::Denied(
        "host \"10.0.0.1\" is a private address".into(),
    ));
    let error = send(&mut harness, message()).unwrap_err();
    assert_eq!(
        (error.kind, error.retryable),
        (ErrorKind::Misconfigured, false)
    );
    assert_eq!(recalled(&mut harness), None);
}

#[test]
fn a_bad_url_setting_is_misconfigured_and_nothing_is_sent() {
    let long = format!("https://gateway.example.com/{}", "p".repeat(URL_BYTES_MAX));
    let cases = [
        ("ftp://gateway.example.com/in", "must start with https://"),
        ("gateway.example.com/in", "is not a URL such as https://"),
        ("/tollgate/messages", "must start with https://"),
        ("https://gate way.example.com/", "is not a URL"),
        ("", "is not a URL"),
        (
            "https://user:pw@gateway.example.com/",
            "user name or password",
        ),
        (long.as_str(), "longer than 2048 bytes"),
    ];
    for (url, needle) in cases {
        let mut harness = configured().setting("url", url).respond(200, "");
        let result = send(&mut harness, message());
        assert_error(result, ErrorKind::Misconfigured, needle);
        assert!(harness.requests().is_empty(), "{url:?}");
    }
    let mut harness = Harness::new().setting("signing_secret", SECRET);
    assert_error(
        send(&mut harness, message()),
        ErrorKind::Misconfigured,
        "\"url\" is not set",
    );
}

#[test]
fn other_good_urls_are_sent_to_as_written() {
    for url in [
        "http://sms.internal.example:8080/hook",
        "HTTPS://Gateway.Example.com/Hook",
        "https://gateway.example.com",
        "https://[2001:db8::1]:8443/in",
    ] {
        let mut harness = configured().setting("url", url).respond(200, "");
        send(&mut harness, message()).unwrap();
        assert_eq!(harness.requests()[0].url, url);
    }
}

#[test]
fn the_signing_secret_must_be_set_and_long_enough() {
    let mut harness = Harness::new().setting("url", URL).respond(200, "");
    assert_error(
        send(&mut harness, message()),
        ErrorKind::Misconfigured,
        "\"signing_secret\" is not set",
    );
    let short = "s".repeat(SECRET_BYTES_MIN - 1);
    let mut harness = configured()
        .setting("signing_secret", &short)
        .respond(200, "");
    assert_error(
        send(&mut harness, message()),
        ErrorKind::Misconfigured,
        "shorter than 16 bytes",
    );
    assert!(harness.requests().is_empty());
}

/// Sends `message` and expects it refused, unsent, for the reason given.
fn check_refused(message: Message, needle: &str) {
    let mut harness = configured().respond(200, "");
    assert_error(send(&mut harness, message), ErrorKind::InvalidInput, needle);
    assert!(harness.requests().is_empty(), "{needle}");
}

/// Sends `message` and expects it accepted.
fn check_accepted(message: Message) {
    let mut harness = configured().respond(200, "");
    send(&mut harness, message).unwrap();
    assert_eq!(harness.requests().len(), 1);
}

#[test]
fn idempotency_keys_must_suit_the_helper_and_a_header() {
    let key = |key: &str| Message {
        idempotency_key: key.into(),
        ..message()
    };
    check_refused(key(""), "idempotency_key must be 1 to 512 bytes");
    check_refused(
        key(&"k".repeat(513)),
        "idempotency_key must be 1 to 512 bytes",
    );
    check_refused(key("msg 42"), "printable ASCII");
    check_refused(key("msg-42\r\nx-evil: 1"), "printable ASCII");
    check_refused(key("msg\t42"), "printable ASCII");
    check_refused(key("msg-é"), "printable ASCII");
    check_accepted(key(&"k".repeat(512)));
}

#[test]
fn many_sends_keep_the_store_bounded() {
    const SENDS: usize = 300;
    let mut harness = (0..SENDS).fold(configured(), |harness, _| harness.respond(202, ""));
    for n in 0..SENDS {
        let message = Message {
            idempotency_key: format!("msg-{n}"),
            ..message()
        };
        assert_eq!(send(&mut harness, message).unwrap().units, 1);
    }
    assert_eq!(harness.requests().len(), SENDS);
    // The records share at most 256 bucket keys; none has a key of its own.
    let buckets = (0..idempotency::BUCKETS)
        .filter(|n| harness.stored(&format!("idempotency/{n:02x}")).is_some())
        .count();
    assert!(buckets > 0 && buckets < SENDS, "{buckets} buckets");
    for n in 0..SENDS {
        assert_eq!(harness.stored(&format!("sent/msg-{n}")), None);
    }
    // And every message is still recognised.
    for n in [0, SENDS - 1] {
        let message = Message {
            idempotency_key: format!("msg-{n}"),
            ..message()
        };
        assert_eq!(send(&mut harness, message).unwrap().units, 0);
    }
    assert_eq!(harness.requests().len(), SENDS);
}

#[test]
fn every_field_has_a_size_limit_that_names_it() {
    let over = |bytes_max: usize| "x".repeat(bytes_max + 1);
    check_refused(
        Message {
            recipient: String::new(),
            ..message()
        },
        "recipient is empty",
    );
    check_refused(
        Message {
            recipient: over(FIELD_BYTES_MAX),
            ..message()
        },
        "recipient is 1025 bytes, more than 1024",
    );
    check_refused(
        Message {
            recipient_name: Some(over(FIELD_BYTES_MAX)),
            ..message()
        },
        "recipient_name is 1025 bytes",
    );
    check_refused(
        Message {
            sender: Sender {
                address: over(FIELD_BYTES_MAX),
                name: None,
            },
            ..message()
        },
        "sender.address is 1025 bytes",
    );
    check_refused(
        Message {
            sender: Sender {
                address: "a".into(),
                name: Some(over(FIELD_BYTES_MAX)),
            },
            ..message()
        },
        "sender.name is 1025 bytes",
    );
    check_refused(
        Message {
            subject: Some(over(FIELD_BYTES_MAX)),
            ..message()
        },
        "subject is 1025 bytes",
    );
    check_refused(
        Message {
            text_body: over(TEXT_BYTES_MAX),
            ..message()
        },
        "text_body is 65537 bytes, more than 65536",
    );
    check_refused(
        Message {
            html_body: Some(over(HTML_BYTES_MAX)),
            ..message()
        },
        "html_body is 262145 bytes, more than 262144",
    );
}

#[test]
fn fields_at_their_limits_are_sent() {
    let at = |bytes_max: usize| "x".repeat(bytes_max);
    check_accepted(Message {
        recipient: at(FIELD_BYTES_MAX),
        recipient_name: Some(at(FIELD_BYTES_MAX)),
        sender: Sender {
            address: at(FIELD_BYTES_MAX),
            name: Some(at(FIELD_BYTES_MAX)),
        },
        subject: Some(at(FIELD_BYTES_MAX)),
        text_body: at(TEXT_BYTES_MAX),
        html_body: Some(at(HTML_BYTES_MAX)),
        headers: (0..HEADERS_MAX)
            .map(|index| Field {
                name: format!("{index:0>width$}", width = HEADER_NAME_BYTES_MAX),
                value: at(HEADER_VALUE_BYTES_MAX),
            })
            .collect(),
        references: vec![at(FIELD_BYTES_MAX); REFERENCES_MAX],
        ..message()
    });
}

#[test]
fn headers_and_references_are_limited_in_number_and_size() {
    let header = |name: String, value: String| Field { name, value };
    check_refused(
        Message {
            headers: (0..=HEADERS_MAX)
                .map(|index| header(format!("h{index}"), "v".into()))
                .collect(),
            ..message()
        },
        "headers has 65 entries, more than 64",
    );
    check_refused(
        Message {
            headers: vec![header("h".repeat(HEADER_NAME_BYTES_MAX + 1), "v".into())],
            ..message()
        },
        "a header name is 257 bytes, more than 256",
    );
    check_refused(
        Message {
            headers: vec![header(
                "campaign".into(),
                "v".repeat(HEADER_VALUE_BYTES_MAX + 1),
            )],
            ..message()
        },
        "header \"campaign\" is 4097 bytes, more than 4096",
    );
    check_refused(
        Message {
            headers: vec![
                header("campaign".into(), "a".into()),
                header("campaign".into(), "b".into()),
            ],
            ..message()
        },
        "header \"campaign\" appears more than once",
    );
    check_refused(
        Message {
            references: vec!["r".into(); REFERENCES_MAX + 1],
            ..message()
        },
        "references has 101 entries, more than 100",
    );
    check_refused(
        Message {
            references: vec!["r".repeat(FIELD_BYTES_MAX + 1)],
            ..message()
        },
        "a reference is 1025 bytes, more than 1024",
    );
}

// Callbacks.

/// A callback signed as a gateway would, at `timestamp`, with `secret`.
fn signed_callback(secret: &str, timestamp: u64, body: &str) -> Callback {
    let signature = hmac_hex(secret, format!("{timestamp}.{body}").as_bytes());
    Callback {
        headers: vec![
            Field {
                name: "Content-Type".into(),
                value: "application/json".into(),
            },
            Field {
                name: "X-Tollgate-Timestamp".into(),
                value: timestamp.to_string(),
            },
            Field {
                name: "X-Tollgate-Signature".into(),
                value: format!("v1={signature}"),
            },
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn parse(harness: &mut Harness, callback: Callback) -> Result<Events, PluginError> {
    harness.run(|| Webhook::parse_callback(callback))
}

#[test]
fn a_signed_callback_becomes_events() {
    let body = r#"{"events": [
        {"type": "delivered", "delivery_id": "gw-1", "recipient": "+33612345678",
         "occurred_at_ms": 1699999999000},
        {"type": "clicked", "delivery_id": "wh_22ca0cc9586a0c8e0644939617f12c52",
         "url": "https://example.com/demo", "occurred_at_ms": 1699999999500,
         "detail": "from a phone", "extra": "ignored"},
        {"type": "replied", "detail": "Yes, 10:00 works"}
    ]}"#;
    let mut harness = configured();
    let events = parse(&mut harness, signed_callback(SECRET, NOW_SECONDS, body)).unwrap();
    assert_eq!(events.units, 0);
    assert_eq!(
        events.events,
        vec![
            Event {
                kind: EventKind::Delivered,
                delivery_id: Some("gw-1".into()),
                recipient: Some("+33612345678".into()),
                url: None,
                occurred_at_ms: Some(1_699_999_999_000),
                detail: None,
            },
            Event {
                kind: EventKind::Clicked,
                delivery_id: Some(OUR_ID.into()),
                recipient: None,
                url: Some("https://example.com/demo".into()),
                occurred_at_ms: Some(1_699_999_999_500),
                detail: Some("from a phone".into()),
            },
            Event {
                kind: EventKind::Replied,
                delivery_id: None,
                recipient: None,
                url: None,
                occurred_at_ms: None,
                detail: Some("Yes, 10:00 works".into()),
            },
        ]
    );
    assert!(harness.requests().is_empty());
}

#[test]
fn every_event_type_maps_to_its_kind() {
    let cases = [
        ("delivered", EventKind::Delivered),
        ("opened", EventKind::Opened),
        ("clicked", EventKind::Clicked),
        ("replied", EventKind::Replied),
        ("auto_replied", EventKind::AutoReplied),
        ("bounced_hard", EventKind::BouncedHard),
        ("bounced_soft", EventKind::BouncedSoft),
        ("unsubscribed", EventKind::Unsubscribed),
    ];
    for (name, kind) in cases {
        let body = format!(r#"{{"events": [{{"type": "{name}", "delivery_id": "gw-1"}}]}}"#);
        let events = parse(
            &mut configured(),
            signed_callback(SECRET, NOW_SECONDS, &body),
        )
        .unwrap();
        assert_eq!(events.events.len(), 1, "{name}");
        assert_eq!(events.events[0].kind, kind, "{name}");
    }
}

#[test]
fn an_empty_callback_is_no_events() {
    let events = parse(
        &mut configured(),
        signed_callback(SECRET, NOW_SECONDS, r#"{"events": []}"#),
    )
    .unwrap();
    assert!(events.events.is_empty());
}

#[test]
fn an_unknown_event_type_is_refused_by_name() {
    let body = r#"{"events": [{"type": "delivered"}, {"type": "read"}]}"#;
    let result = parse(
        &mut configured(),
        signed_callback(SECRET, NOW_SECONDS, body),
    );
    assert_error(
        result,
        ErrorKind::InvalidInput,
        "event 1 has the unknown type \"read\"",
    );
    // A long one is quoted only in part.
    let body = format!(r#"{{"events": [{{"type": "{}"}}]}}"#, "z".repeat(5000));
    let error = parse(
        &mut configured(),
        signed_callback(SECRET, NOW_SECONDS, &body),
    )
    .unwrap_err();
    assert!(error.message.contains(&format!("\"{}\"", "z".repeat(64))));
    assert!(error.message.len() < 400, "{}", error.message.len());
}

#[test]
fn garbage_is_refused_once_the_signature_holds() {
    let bodies = [
        "",
        "not json",
        "{\"events\": [",
        "[]",
        "{}",
        r#"{"events": {"type": "delivered"}}"#,
        r#"{"events": [{"delivery_id": "gw-1"}]}"#,
        r#"{"events": [{"type": 7}]}"#,
        r#"{"events": [{"type": "opened", "occurred_at_ms": -5}]}"#,
        r#"{"events": [{"type": "opened", "detail": {"nested": true}}]}"#,
    ];
    for body in bodies {
        let result = parse(
            &mut configured(),
            signed_callback(SECRET, NOW_SECONDS, body),
        );
        assert_error(
            result,
            ErrorKind::InvalidInput,
            "is not {\"events\": [...]}",
        );
    }
    // Bytes that are not UTF-8 at all.
    let mut callback = signed_callback(SECRET, NOW_SECONDS, "");
    callback.body = vec![0xff, 0xfe, 0x00];
    let signature = hmac_hex(
        SECRET,
        &[b"1700000000.".as_slice(), &callback.body].concat(),
    );
    callback.headers[2].value = format!("v1={signature}");
    assert_error(
        parse(&mut configured(), callback),
        ErrorKind::InvalidInput,
        "is not {\"events\": [...]}",
    );
}

#[test]
fn a_bad_signature_is_unauthorized() {
    let body = r#"{"events": [{"type": "delivered"}]}"#;
    // Signed with another secret.
    let result = parse(
        &mut configured(),
        signed_callback("another-secret-0123456789", NOW_SECONDS, body),
    );
    assert_error(result, ErrorKind::Unauthorized, "signature does not match");

    // Signed over another body.
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    callback.body = br#"{"events": [{"type": "unsubscribed"}]}"#.to_vec();
    let result = parse(&mut configured(), callback);
    assert_error(result, ErrorKind::Unauthorized, "signature does not match");

    // Signed for another timestamp than the header says.
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    callback.headers[1].value = (NOW_SECONDS + 1).to_string();
    let result = parse(&mut configured(), callback);
    assert_error(result, ErrorKind::Unauthorized, "signature does not match");

    // Not hex, another scheme, truncated, empty.
    for value in [
        "v1=zz",
        "v0=00",
        "sha256=abc",
        "",
        "v1=",
        &signed_callback(SECRET, NOW_SECONDS, body).headers[2].value[..40],
        &signed_callback(SECRET, NOW_SECONDS, body).headers[2].value[3..],
    ] {
        let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
        callback.headers[2].value = value.to_owned();
        let result = parse(&mut configured(), callback);
        assert_error(result, ErrorKind::Unauthorized, "signature does not match");
    }
}

#[test]
fn missing_signature_headers_are_unauthorized() {
    let body = r#"{"events": []}"#;
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    callback.headers.remove(2);
    assert_error(
        parse(&mut configured(), callback),
        ErrorKind::Unauthorized,
        "no x-tollgate-signature header",
    );
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    callback.headers.remove(1);
    assert_error(
        parse(&mut configured(), callback),
        ErrorKind::Unauthorized,
        "no x-tollgate-timestamp header",
    );
    for timestamp in [
        "",
        "soon",
        "+1700000000",
        "1700000000.5",
        "-1",
        &"9".repeat(21),
    ] {
        let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
        callback.headers[1].value = timestamp.to_owned();
        assert_error(
            parse(&mut configured(), callback),
            ErrorKind::Unauthorized,
            "is not unix seconds",
        );
    }
}

#[test]
fn stale_and_future_callbacks_are_refused() {
    let body = r#"{"events": [{"type": "opened"}]}"#;
    let tolerance = CALLBACK_TOLERANCE_SECONDS;
    for timestamp in [NOW_SECONDS - tolerance - 1, NOW_SECONDS + tolerance + 1, 0] {
        let result = parse(&mut configured(), signed_callback(SECRET, timestamp, body));
        assert_error(result, ErrorKind::Unauthorized, "more than 300 s from now");
    }
    // At the edge of the window, either way, they pass.
    for timestamp in [NOW_SECONDS - tolerance, NOW_SECONDS + tolerance] {
        let events = parse(&mut configured(), signed_callback(SECRET, timestamp, body)).unwrap();
        assert_eq!(events.events.len(), 1, "{timestamp}");
    }
}

#[test]
fn callbacks_are_checked_with_the_callback_secret_when_set() {
    let body = r#"{"events": [{"type": "bounced_hard", "detail": "550 no such user"}]}"#;
    let mut harness = configured().setting("callback_secret", CALLBACK_SECRET);
    let events = parse(
        &mut harness,
        signed_callback(CALLBACK_SECRET, NOW_SECONDS, body),
    )
    .unwrap();
    assert_eq!(events.events[0].kind, EventKind::BouncedHard);
    // The signing secret no longer does.
    assert_error(
        parse(&mut harness, signed_callback(SECRET, NOW_SECONDS, body)),
        ErrorKind::Unauthorized,
        "signature does not match",
    );
    // A blank callback_secret means "unset".
    let mut harness = configured().setting("callback_secret", "");
    parse(&mut harness, signed_callback(SECRET, NOW_SECONDS, body)).unwrap();
    // A short one is refused like a short signing secret.
    let mut harness = configured().setting("callback_secret", "short");
    assert_error(
        parse(&mut harness, signed_callback("short", NOW_SECONDS, body)),
        ErrorKind::Misconfigured,
        "\"callback_secret\" is shorter than 16 bytes",
    );
    // With neither secret set, nothing can be checked.
    let mut harness = Harness::new().now_ms(NOW_MS);
    assert_error(
        parse(&mut harness, signed_callback(SECRET, NOW_SECONDS, body)),
        ErrorKind::Misconfigured,
        "\"signing_secret\" is not set",
    );
}

#[test]
fn one_of_several_signatures_may_match() {
    let body = r#"{"events": [{"type": "delivered"}]}"#;
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    let good = callback.headers[2].value.clone();
    callback.headers[2].value = format!("v1={}, {good}", "0".repeat(64));
    assert_eq!(parse(&mut configured(), callback).unwrap().events.len(), 1);
    // Only the first few are tried.
    let mut callback = signed_callback(SECRET, NOW_SECONDS, body);
    let decoys = vec![format!("v1={}", "0".repeat(64)); CALLBACK_SIGNATURES_MAX];
    callback.headers[2].value = format!("{}, {good}", decoys.join(", "));
    assert_error(
        parse(&mut configured(), callback),
        ErrorKind::Unauthorized,
        "signature does not match",
    );
}

#[test]
fn callbacks_are_limited_in_size_and_events() {
    let event = r#"{"type": "opened"}"#;
    let events =
        |n_events: usize| format!(r#"{{"events": [{}]}}"#, vec![event; n_events].join(", "));
    let body = events(CALLBACK_EVENTS_MAX);
    let parsed = parse(
        &mut configured(),
        signed_callback(SECRET, NOW_SECONDS, &body),
    )
    .unwrap();
    assert_eq!(parsed.events.len(), CALLBACK_EVENTS_MAX);

    let body = events(CALLBACK_EVENTS_MAX + 1);
    assert_error(
        parse(
            &mut configured(),
            signed_callback(SECRET, NOW_SECONDS, &body),
        ),
        ErrorKind::InvalidInput,
        "carries 101 events, more than 100",
    );

    // Too large is refused before anything else, even unsigned.
    let padding = " ".repeat(CALLBACK_BYTES_MAX);
    let body = format!(r#"{{"events": []}}{padding}"#);
    let mut callback = signed_callback(SECRET, NOW_SECONDS, &body);
    callback.headers.truncate(1);
    assert_error(
        parse(&mut configured(), callback),
        ErrorKind::InvalidInput,
        "more than 262144",
    );
    // Just under the limit, signed, is fine.
    let padding = " ".repeat(CALLBACK_BYTES_MAX - r#"{"events": []}"#.len());
    let body = format!(r#"{{"events": []}}{padding}"#);
    assert_eq!(body.len(), CALLBACK_BYTES_MAX);
    parse(
        &mut configured(),
        signed_callback(SECRET, NOW_SECONDS, &body),
    )
    .unwrap();
}
