use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_plugin_sdk::Sender;
use tollgate_plugin_sdk::host::{HttpError, HttpRequest};
use tollgate_plugin_sdk::testing::Harness;

use super::*;

const URN: &str = "urn:li:person:abc123";
const PROFILE: &str = "https://www.linkedin.com/in/ada-lovelace/";
const SECRET: &str = "whsec-1";

fn message(recipient: &str, action: Option<&str>, text: &str) -> Message {
    Message {
        recipient: recipient.into(),
        recipient_name: Some("Ada Lovelace".into()),
        sender: Sender {
            address: "me".into(),
            name: None,
        },
        subject: None,
        text_body: text.into(),
        html_body: Some("<p>ignored</p>".into()),
        headers: action
            .map(|action| field("linkedin-action", action))
            .into_iter()
            .collect(),
        references: Vec::new(),
        idempotency_key: "step-1".into(),
    }
}

fn settings() -> Harness {
    Harness::new()
        .setting("access_token", "tok-1")
        .setting("webhook_secret", SECRET)
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}

fn body(request: &HttpRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The delivery id remembered for `message()`'s key.
fn recalled(harness: &mut Harness) -> Option<String> {
    harness.run(|| idempotency::recall("step-1"))
}

fn assert_authenticated(request: &HttpRequest) {
    assert_eq!(header(request, "Authorization"), Some("Bearer tok-1"));
    assert_eq!(header(request, "X-Restli-Protocol-Version"), Some("2.0.0"));
    assert_eq!(header(request, "LinkedIn-Version"), Some("202401"));
}

// Sending.

#[test]
fn connect_resolves_the_profile_and_sends_the_invitation() {
    let mut harness = settings()
        .respond(200, r#"{"id": "abc123", "localizedFirstName": "Ada"}"#)
        .respond(201, r#"{"id": "inv-1"}"#);
    let sent = harness
        .run(|| LinkedIn::send(message(PROFILE, Some("connect"), "Hi Ada")))
        .unwrap();
    assert_eq!(
        (sent.delivery_id.as_str(), sent.units),
        ("invitation:inv-1", 1)
    );
    let [lookup, invite] = harness.requests() else {
        panic!(
            "expected a lookup and an invitation: {:?}",
            harness.requests()
        );
    };
    assert_eq!(lookup.method, "GET");
    assert_eq!(
        lookup.url,
        "https://api.linkedin.com/v2/people/(vanityName:ada-lovelace)"
    );
    assert_authenticated(lookup);
    assert!(lookup.body.is_empty());
    assert_eq!(header(lookup, "Content-Type"), None);
    assert_eq!(invite.method, "POST");
    assert_eq!(invite.url, "https://api.linkedin.com/v2/invitations");
    assert_authenticated(invite);
    assert_eq!(header(invite, "Content-Type"), Some("application/json"));
    assert_eq!(body(invite), json!({"invitee": URN, "message": "Hi Ada"}));
    assert_eq!(harness.stored("urn/ada-lovelace"), Some(URN.as_bytes()));
    assert_eq!(recalled(&mut harness).as_deref(), Some("invitation:inv-1"));
}

#[test]
fn an_invitation_without_a_note_has_no_message_field() {
    let mut harness = settings().respond(201, r#"{"id": 42}"#);
    let sent = harness
        .run(|| LinkedIn::send(message(URN, Some("connect"), "")))
        .unwrap();
    assert_eq!(sent.delivery_id, "invitation:42", "numeric ids are kept");
    assert_eq!(body(&harness.requests()[0]), json!({"invitee": URN}));
}

#[test]
fn message_is_the_default_and_a_urn_needs_no_lookup() {
    let mut harness = settings().respond(201, r#"{"id": "msg-9"}"#);
    let sent = harness
        .run(|| LinkedIn::send(message(URN, None, "Hello")))
        .unwrap();
    assert_eq!(
        (sent.delivery_id.as_str(), sent.units),
        ("message:msg-9", 1)
    );
    let [post] = harness.requests() else {
        panic!("expected one request: {:?}", harness.requests());
    };
    assert_eq!(
        (post.method.as_str(), post.url.as_str()),
        ("POST", "https://api.linkedin.com/v2/messages")
    );
    assert_authenticated(post);
    assert_eq!(
        body(post),
        json!({"recipients": [URN], "body": "Hello"}),
        "no subject and no thread when there are none"
    );
}

#[test]
fn a_message_carries_its_subject_and_continues_the_latest_message_thread() {
    let mut harness = settings().respond(201, r#"{"id": "msg-10"}"#);
    let mut follow_up = message(URN, Some(" MESSAGE "), "Following up");
    follow_up.headers[0].name = "LinkedIn-Action".into();
    follow_up.subject = Some("Our chat".into());
    follow_up.references = vec![
        "message:m-1".into(),
        "message:m-2".into(),
        "invitation:i-3".into(),
    ];
    harness.run(|| LinkedIn::send(follow_up)).unwrap();
    assert_eq!(
        body(&harness.requests()[0]),
        json!({"recipients": [URN], "subject": "Our chat", "body": "Following up", "thread": "m-2"})
    );
}

#[test]
fn a_message_after_an_invitation_only_starts_no_thread() {
    let mut harness = settings().respond(201, r#"{"id": "msg-11"}"#);
    let mut first = message(URN, None, "Thanks for connecting");
    first.references = vec!["invitation:i-3".into()];
    first.subject = Some(String::new());
    harness.run(|| LinkedIn::send(first)).unwrap();
    assert_eq!(
        body(&harness.requests()[0]),
        json!({"recipients": [URN], "body": "Thanks for connecting"})
    );
}

#[test]
fn a_cached_urn_is_used_without_a_lookup() {
    let mut harness = settings()
        .respond(200, r#"{"id": "abc123"}"#)
        .respond(201, r#"{"id": "msg-1"}"#)
        .respond(201, r#"{"id": "msg-2"}"#);
    harness
        .run(|| LinkedIn::send(message(PROFILE, None, "One")))
        .unwrap();
    let mut second = message("linkedin.com/in/Ada-Lovelace?trk=x", None, "Two");
    second.idempotency_key = "step-2".into();
    let sent = harness.run(|| LinkedIn::send(second)).unwrap();
    assert_eq!(sent.delivery_id, "message:msg-2");
    let urls: Vec<&str> = harness.requests().iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.linkedin.com/v2/people/(vanityName:ada-lovelace)",
            "https://api.linkedin.com/v2/messages",
            "https://api.linkedin.com/v2/messages",
        ],
        "the second send to the same profile makes no lookup"
    );
    assert_eq!(body(&harness.requests()[2])["recipients"], json!([URN]));
}

#[test]
fn a_cache_entry_from_the_store_is_trusted_and_a_broken_one_is_not() {
    let mut harness = settings()
        .kv("urn/ada-lovelace", b"urn:li:person:cached7")
        .respond(201, r#"{"id": "msg-1"}"#);
    harness
        .run(|| LinkedIn::send(message(PROFILE, None, "Hi")))
        .unwrap();
    assert_eq!(harness.requests().len(), 1);
    assert_eq!(
        body(&harness.requests()[0])["recipients"],
        json!(["urn:li:person:cached7"])
    );

    let mut harness = settings()
        .kv("urn/ada-lovelace", b"garbage")
        .respond(200, r#"{"id": "abc123"}"#)
        .respond(201, r#"{"id": "msg-1"}"#);
    harness
        .run(|| LinkedIn::send(message(PROFILE, None, "Hi")))
        .unwrap();
    assert_eq!(
        harness.requests().len(),
        2,
        "a broken entry is looked up again"
    );
    assert_eq!(harness.stored("urn/ada-lovelace"), Some(URN.as_bytes()));
}

#[test]
fn a_replay_returns_the_stored_delivery_and_sends_nothing() {
    let mut harness = settings().respond(201, r#"{"id": "inv-1"}"#);
    let first = harness
        .run(|| LinkedIn::send(message(URN, Some("connect"), "Hi")))
        .unwrap();
    let again = harness
        .run(|| LinkedIn::send(message(URN, Some("connect"), "Hi")))
        .unwrap();
    assert_eq!(
        (first.delivery_id.as_str(), first.units),
        ("invitation:inv-1", 1)
    );
    assert_eq!(
        (again.delivery_id.as_str(), again.units),
        ("invitation:inv-1", 0)
    );
    assert_eq!(harness.requests().len(), 1, "the retry sent nothing");

    // A key recorded earlier needs neither settings nor the network.
    let mut harness = Harness::new();
    harness.run(|| idempotency::remember("step-1", "message:old").unwrap());
    let sent = harness
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap();
    assert_eq!((sent.delivery_id.as_str(), sent.units), ("message:old", 0));
    assert!(harness.requests().is_empty());
}

#[test]
fn a_failed_send_is_not_recorded_and_a_retry_sends_again() {
    let mut harness = settings()
        .respond(503, "")
        .respond(201, r#"{"id": "msg-1"}"#);
    let error = harness
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Upstream);
    assert_eq!(recalled(&mut harness), None);
    let sent = harness
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap();
    assert_eq!(
        (sent.delivery_id.as_str(), sent.units),
        ("message:msg-1", 1)
    );
    assert_eq!(harness.requests().len(), 2);
}

#[test]
fn invitation_notes_are_capped_at_300_characters() {
    // Characters, not bytes: 300 two-byte characters are allowed.
    let note = "é".repeat(300);
    let mut harness = settings().respond(201, r#"{"id": "inv-1"}"#);
    harness
        .run(|| LinkedIn::send(message(URN, Some("connect"), &note)))
        .unwrap();
    assert_eq!(body(&harness.requests()[0])["message"], json!(note));

    let mut harness = settings();
    let error = harness
        .run(|| LinkedIn::send(message(PROFILE, Some("connect"), &"a".repeat(301))))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("has 301 characters; LinkedIn allows at most 300"),
        "{}",
        error.message
    );
    assert!(
        harness.requests().is_empty(),
        "nothing is looked up or sent"
    );
}

#[test]
fn a_message_is_checked_before_anything_goes_out() {
    /// Sends `draft` and checks that it is refused, unsent, for `phrase`.
    fn refused(draft: Message, phrase: &str) {
        let mut harness = settings();
        let error = harness.run(|| LinkedIn::send(draft)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{phrase}");
        assert!(error.message.contains(phrase), "{}", error.message);
        assert!(harness.requests().is_empty(), "{phrase}");
    }
    refused(message(PROFILE, None, " \n"), "the message has no text");
    refused(
        message(PROFILE, None, &"a".repeat(8_001)),
        "the message has 8001 characters; LinkedIn allows at most 8000",
    );
    let mut long_subject = message(PROFILE, None, "Hi");
    long_subject.subject = Some("s".repeat(201));
    refused(long_subject, "the subject is longer");
    let mut long_thread = message(PROFILE, None, "Hi");
    long_thread.references = vec![format!("message:{}", "x".repeat(201))];
    refused(long_thread, "is not a LinkedIn message id");
    refused(
        message(PROFILE, Some("invite"), "Hi"),
        "header linkedin-action is \"invite\"",
    );
}

#[test]
fn the_idempotency_key_must_be_one_the_helper_remembers() {
    let cases = [
        (String::new(), "has 0 bytes; it must have 1 to 512"),
        ("k".repeat(513), "has 513 bytes; it must have 1 to 512"),
        ("step\t1".into(), "contains a tab or a line break"),
        ("step-1\r\n".into(), "contains a tab or a line break"),
    ];
    for (key, phrase) in cases {
        let mut draft = message(URN, None, "Hi");
        draft.idempotency_key = key;
        let mut harness = settings().respond(201, r#"{"id": "m"}"#);
        let error = harness.run(|| LinkedIn::send(draft)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput);
        assert!(
            error.message.contains("idempotency_key") && error.message.contains(phrase),
            "{}",
            error.message
        );
        assert!(harness.requests().is_empty(), "{phrase}");
    }
    let key = "k".repeat(512);
    let mut draft = message(URN, None, "Hi");
    draft.idempotency_key = key.clone();
    let mut harness = settings().respond(201, r#"{"id": "m"}"#);
    harness.run(|| LinkedIn::send(draft)).unwrap();
    assert_eq!(
        harness.run(|| idempotency::recall(&key)).as_deref(),
        Some("message:m")
    );
}

#[test]
fn many_sends_keep_the_store_bounded() {
    const SENDS: usize = 300;
    let mut harness = settings()
        .respond(200, r#"{"id": "abc123"}"#)
        .respond(201, r#"{"id": "msg-0"}"#);
    harness = (1..SENDS).fold(harness, |harness, n| {
        harness.respond(201, &format!(r#"{{"id": "msg-{n}"}}"#))
    });
    for n in 0..SENDS {
        let mut draft = message(PROFILE, None, "Hi");
        draft.idempotency_key = format!("step-{n}");
        let sent = harness.run(|| LinkedIn::send(draft)).unwrap();
        assert_eq!(
            (sent.delivery_id, sent.units),
            (format!("message:msg-{n}"), 1)
        );
    }
    assert_eq!(
        harness.requests().len(),
        SENDS + 1,
        "one lookup, then sends"
    );
    // The records share at most 256 bucket keys; none has a key of its own,
    // and the URN cache still works.
    let buckets = (0..idempotency::BUCKETS)
        .filter(|n| harness.stored(&format!("idempotency/{n:02x}")).is_some())
        .count();
    assert!(buckets > 0 && buckets < SENDS, "{buckets} buckets");
    for n in 0..SENDS {
        assert_eq!(harness.stored(&format!("sent/step-{n}")), None);
    }
    assert_eq!(harness.stored("urn/ada-lovelace"), Some(URN.as_bytes()));
    // And every message is still recognised.
    for n in [0, SENDS - 1] {
        let mut draft = message(PROFILE, None, "Hi");
        draft.idempotency_key = format!("step-{n}");
        let sent = harness.run(|| LinkedIn::send(draft)).unwrap();
        assert_eq!(
            (sent.delivery_id, sent.units),
            (format!("message:msg-{n}"), 0)
        );
    }
    assert_eq!(harness.requests().len(), SENDS + 1);
}

// Recipients.

#[test]
fn profile_urls_and_urns_are_recognized_and_normalized() {
    let profile = |vanity: &str| Ok(Recipient::Profile(vanity.to_owned()));
    let cases = [
        (PROFILE, profile("ada-lovelace")),
        (
            "https://www.linkedin.com/in/ada-lovelace",
            profile("ada-lovelace"),
        ),
        (
            "HTTP://LinkedIn.com/in/Ada_Lovelace/",
            profile("ada_lovelace"),
        ),
        (
            "  https://uk.linkedin.com/in/ada?originalSubdomain=uk#top ",
            profile("ada"),
        ),
        ("www.linkedin.com/in/ada/", profile("ada")),
        (
            "https://www.linkedin.com/in/jos%c3%a9-garc%C3%ADa/",
            profile("jos%C3%A9-garc%C3%ADa"),
        ),
        (
            "https://www.linkedin.com/in/José-García/",
            profile("jos%C3%A9-garc%C3%ADa"),
        ),
        (URN, Ok(Recipient::Member(URN.to_owned()))),
        (
            " urn:li:person:A-b_9 ",
            Ok(Recipient::Member("urn:li:person:A-b_9".to_owned())),
        ),
    ];
    for (recipient, expected) in cases {
        let parsed = parse_recipient(recipient).map_err(|error| error.message);
        assert_eq!(parsed, expected, "{recipient}");
    }
}

#[test]
fn anything_else_is_invalid_input() {
    let long_vanity = format!("https://www.linkedin.com/in/{}/", "a".repeat(101));
    let wide_vanity = format!("https://www.linkedin.com/in/{}/", "é".repeat(40));
    for recipient in [
        "",
        "ada@example.com",
        "https://twitter.com/in/ada",
        "https://linkedin.com.evil.example/in/ada",
        "https://evil-linkedin.com/in/ada",
        "https://www.linkedin.com/company/acme/",
        "https://www.linkedin.com/in/",
        "https://www.linkedin.com/in/ada/details",
        "https://www.linkedin.com/in/ada%2Fx/",
        "https://www.linkedin.com/in/ada%zz/",
        "https://www.linkedin.com/in/ada%c3/",
        "https://www.linkedin.com/in/(vanityName:x)/",
        "https://www.linkedin.com:8080/in/ada/",
        "urn:li:person:",
        "urn:li:person:abc/../x",
        "urn:li:organization:123",
        &long_vanity,
        &wide_vanity,
        &format!("urn:li:person:{}", "a".repeat(101)),
    ] {
        let mut harness = settings();
        let error = harness
            .run(|| LinkedIn::send(message(recipient, None, "Hi")))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{recipient}");
        assert!(
            error.message.contains("is neither a LinkedIn profile URL"),
            "{}",
            error.message
        );
        assert!(harness.requests().is_empty());
    }
}

// Settings.

#[test]
fn settings_are_checked_and_the_base_url_is_used() {
    let error = Harness::new()
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    assert!(error.message.contains("access_token"), "{}", error.message);

    for base_url in ["api.linkedin.com", "ftp://x", "https://"] {
        let error = settings()
            .setting("api_base_url", base_url)
            .run(|| LinkedIn::send(message(URN, None, "Hi")))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured, "{base_url}");
        assert!(error.message.contains("api_base_url"), "{}", error.message);
    }

    let mut harness = settings()
        .setting("access_token", " tok-1\n")
        .setting("api_base_url", "http://127.0.0.1:8080/")
        .respond(200, r#"{"id": "abc123"}"#)
        .respond(201, r#"{"id": "m"}"#);
    harness
        .run(|| LinkedIn::send(message(PROFILE, None, "Hi")))
        .unwrap();
    assert_eq!(
        harness.requests()[0].url,
        "http://127.0.0.1:8080/v2/people/(vanityName:ada-lovelace)"
    );
    assert_eq!(
        harness.requests()[1].url,
        "http://127.0.0.1:8080/v2/messages"
    );
    assert_authenticated(&harness.requests()[1]);
}

#[test]
fn a_host_that_is_not_approved_is_a_misconfiguration() {
    let error = settings()
        .fail_http(HttpError::Denied("host not approved".into()))
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    let error = settings()
        .fail_http(HttpError::Timeout)
        .run(|| LinkedIn::send(message(URN, None, "Hi")))
        .unwrap_err();
    assert_eq!((error.kind, error.retryable), (ErrorKind::Upstream, true));
}

// How LinkedIn's answers map to errors.

/// Sends to `recipient` with LinkedIn answering `answers`, and checks the
/// error's kind, retryability and a phrase of its message.
fn check_refusal(
    action: Option<&str>,
    recipient: &str,
    answers: &[(u16, &str)],
    kind: ErrorKind,
    retryable: bool,
    phrase: &str,
) -> PluginError {
    let mut harness = answers.iter().fold(settings(), |harness, (status, body)| {
        harness.respond(*status, body)
    });
    let error = harness
        .run(|| LinkedIn::send(message(recipient, action, "Hi")))
        .unwrap_err();
    let context = format!("{answers:?}: {}", error.message);
    assert_eq!(error.kind, kind, "{context}");
    assert_eq!(error.retryable, retryable, "{context}");
    assert!(error.message.contains(phrase), "{context}");
    assert_eq!(harness.requests().len(), answers.len(), "{context}");
    assert_eq!(recalled(&mut harness), None, "{context}");
    error
}

#[test]
fn an_expired_token_says_to_reconnect() {
    let expired = r#"{"status": 401, "message": "Expired access token"}"#;
    let error = check_refusal(
        None,
        URN,
        &[(401, expired)],
        ErrorKind::Unauthorized,
        false,
        "reconnect the LinkedIn account",
    );
    assert!(error.message.contains("Expired access token"));
    check_refusal(
        None,
        PROFILE,
        &[(401, "")],
        ErrorKind::Unauthorized,
        false,
        "(401: no reason given)",
    );
}

#[test]
fn messaging_someone_not_connected_says_to_connect_first() {
    let error = check_refusal(
        None,
        URN,
        &[(403, r#"{"message": "Not enough permissions"}"#)],
        ErrorKind::InvalidInput,
        false,
        "send a connection request first (header linkedin-action: connect)",
    );
    assert!(error.message.contains("Not enough permissions"));
    let error = check_refusal(
        Some("connect"),
        URN,
        &[(403, "Forbidden")],
        ErrorKind::InvalidInput,
        false,
        "LinkedIn refused the connection request (403: Forbidden)",
    );
    assert!(!error.message.contains("connection request first"));
}

#[test]
fn an_unknown_profile_is_not_found() {
    check_refusal(
        None,
        PROFILE,
        &[(404, "")],
        ErrorKind::NotFound,
        false,
        "LinkedIn has no profile named \"ada-lovelace\" (404)",
    );
    check_refusal(
        Some("connect"),
        URN,
        &[(404, r#"{"message": "Member not found"}"#)],
        ErrorKind::NotFound,
        false,
        "LinkedIn has no member urn:li:person:abc123 (404: Member not found)",
    );
}

#[test]
fn a_cached_urn_is_forgotten_when_linkedin_no_longer_knows_it() {
    let mut harness = settings()
        .kv("urn/ada-lovelace", b"urn:li:person:gone1")
        .respond(404, "")
        .respond(200, r#"{"id": "abc123"}"#)
        .respond(201, r#"{"id": "m"}"#);
    let error = harness
        .run(|| LinkedIn::send(message(PROFILE, None, "Hi")))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert_eq!(harness.stored("urn/ada-lovelace"), None);
    harness
        .run(|| LinkedIn::send(message(PROFILE, None, "Hi")))
        .unwrap();
    assert_eq!(harness.requests()[1].method, "GET", "looked up afresh");
    assert_eq!(harness.stored("urn/ada-lovelace"), Some(URN.as_bytes()));
}

#[test]
fn refused_content_is_invalid_input() {
    for status in [400, 422, 409] {
        check_refusal(
            None,
            URN,
            &[(status, r#"{"message": "body: too long"}"#)],
            ErrorKind::InvalidInput,
            false,
            &format!("LinkedIn refused the message ({status}: body: too long)"),
        );
    }
    // A long reason is quoted in part.
    let error = check_refusal(
        None,
        URN,
        &[(422, &"x".repeat(5_000))],
        ErrorKind::InvalidInput,
        false,
        "…",
    );
    assert!(error.message.len() < 500, "{}", error.message.len());
}

#[test]
fn the_weekly_invitation_limit_is_a_rate_limit() {
    check_refusal(
        Some("connect"),
        URN,
        &[(429, "")],
        ErrorKind::RateLimited,
        true,
        "LinkedIn's weekly invitation limit is reached",
    );
    let error = check_refusal(
        None,
        URN,
        &[(429, "")],
        ErrorKind::RateLimited,
        true,
        "LinkedIn asks to slow down",
    );
    assert!(!error.message.contains("weekly"));
}

#[test]
fn server_errors_are_retryable() {
    for status in [500, 502, 503] {
        check_refusal(
            None,
            URN,
            &[(status, "<html>oops</html>")],
            ErrorKind::Upstream,
            true,
            &format!("LinkedIn failed during the message ({status}: <html>oops</html>)"),
        );
    }
    check_refusal(
        None,
        PROFILE,
        &[(502, "")],
        ErrorKind::Upstream,
        true,
        "during the profile lookup",
    );
}

#[test]
fn a_lookup_without_a_member_id_is_an_upstream_failure() {
    for answer in ["not json", r#"{"id": "has space"}"#, r#"{"id": ""}"#, "{}"] {
        check_refusal(
            None,
            PROFILE,
            &[(200, answer)],
            ErrorKind::Upstream,
            true,
            "carries no member id",
        );
    }
}

#[test]
fn an_accepted_send_without_an_id_must_not_be_retried() {
    for answer in ["", "{}", r#"{"id": null}"#, r#"{"id": "a\nb"}"#] {
        check_refusal(
            Some("connect"),
            URN,
            &[(201, answer)],
            ErrorKind::Upstream,
            false,
            "LinkedIn accepted the connection request to urn:li:person:abc123 but its answer \
             carries no id",
        );
    }
}

// Callbacks.

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn signed(body: &str) -> Callback {
    Callback {
        headers: vec![
            field("content-type", "application/json"),
            field("X-LI-Signature", sign(body.as_bytes(), SECRET)),
        ],
        body: body.as_bytes().to_vec(),
    }
}

type Summary = (
    EventKind,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<String>,
);

fn summary(event: &Event) -> Summary {
    assert_eq!(event.url, None);
    (
        event.kind,
        event.delivery_id.clone(),
        event.recipient.clone(),
        event.occurred_at_ms,
        event.detail.clone(),
    )
}

fn parse(callback: Callback) -> Result<Vec<Summary>, PluginError> {
    let events = settings().run(|| LinkedIn::parse_callback(callback))?;
    assert_eq!(events.units, 0);
    Ok(events.events.iter().map(summary).collect())
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[test]
fn each_event_type_maps_to_its_delivery_event() {
    let body = json!({"events": [
        {"type": "MESSAGE_RECEIVED", "id": "e1", "inReplyTo": "message:m-1", "from": URN, "text": "Sure, let's talk", "createdAt": 1_700_000_000_001u64},
        {"type": "MESSAGE_READ", "id": "e2", "inReplyTo": "message:m-1", "from": URN, "createdAt": 1_700_000_000_002u64},
        {"type": "INVITATION_ACCEPTED", "id": "e3", "inReplyTo": "invitation:i-1", "from": URN, "createdAt": 1_700_000_000_003u64},
        {"type": "CONVERSATION_ARCHIVED", "id": "e4", "from": {"not": "a string"}},
        {"type": "INVITATION_IGNORED", "id": "e5", "inReplyTo": "invitation:i-2", "from": URN, "createdAt": 1_700_000_000_005u64},
        {"type": "INVITATION_WITHDRAWN", "id": "e6", "inReplyTo": "invitation:i-3", "from": URN},
    ]});
    let events = parse(signed(&body.to_string())).unwrap();
    let recipient = some(URN);
    assert_eq!(
        events,
        [
            (
                EventKind::Replied,
                some("message:m-1"),
                recipient.clone(),
                Some(1_700_000_000_001),
                some("Sure, let's talk"),
            ),
            (
                EventKind::Opened,
                some("message:m-1"),
                recipient.clone(),
                Some(1_700_000_000_002),
                None,
            ),
            (
                EventKind::Delivered,
                some("invitation:i-1"),
                recipient.clone(),
                Some(1_700_000_000_003),
                some("invitation accepted"),
            ),
            (
                EventKind::BouncedHard,
                some("invitation:i-2"),
                recipient.clone(),
                Some(1_700_000_000_005),
                some("invitation ignored; do not invite this member again"),
            ),
            (
                EventKind::BouncedHard,
                some("invitation:i-3"),
                recipient,
                None,
                some("invitation withdrawn; do not invite this member again"),
            ),
        ],
        "the unknown CONVERSATION_ARCHIVED is skipped"
    );
}

#[test]
fn bare_ids_get_the_prefix_of_their_family_and_fields_are_optional() {
    let body = json!({"events": [
        {"type": "MESSAGE_READ", "inReplyTo": "m-7"},
        {"type": "INVITATION_ACCEPTED", "inReplyTo": "i-7"},
        {"type": "MESSAGE_RECEIVED", "from": URN, "text": "Hello out of the blue"},
        {"type": "MESSAGE_RECEIVED", "inReplyTo": "", "from": null},
    ]});
    let events = parse(signed(&body.to_string())).unwrap();
    assert_eq!(
        events,
        [
            (EventKind::Opened, some("message:m-7"), None, None, None),
            (
                EventKind::Delivered,
                some("invitation:i-7"),
                None,
                None,
                some("invitation accepted"),
            ),
            (
                EventKind::Replied,
                None,
                some(URN),
                None,
                some("Hello out of the blue"),
            ),
            (EventKind::Replied, None, None, None, None),
        ]
    );
}

#[test]
fn a_reply_keeps_the_first_500_characters() {
    let text = format!("{}{}", "ü".repeat(500), "cut");
    let body =
        json!({"events": [{"type": "MESSAGE_RECEIVED", "inReplyTo": "message:m", "text": text}]});
    let events = parse(signed(&body.to_string())).unwrap();
    assert_eq!(events[0].4, Some("ü".repeat(500)));
}

#[test]
fn callbacks_need_a_good_signature() {
    let body = r#"{"events": [{"type": "MESSAGE_READ", "inReplyTo": "message:m"}]}"#;
    let good = sign(body.as_bytes(), SECRET);
    let cases = [
        (None, "it has no X-LI-Signature"),
        (Some("zz".to_owned()), "is not hex"),
        (
            Some(sign(body.as_bytes(), "other-secret")),
            "does not match",
        ),
        (Some(good[..62].to_owned()), "does not match"),
        (Some(sign(b"{\"events\": []}", SECRET)), "does not match"),
    ];
    for (signature, phrase) in cases {
        let callback = Callback {
            headers: signature
                .map(|signature| field("X-LI-Signature", signature))
                .into_iter()
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        let error = parse(callback).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unauthorized, "{phrase}");
        assert!(!error.retryable);
        assert!(error.message.contains(phrase), "{}", error.message);
    }
    // The header's name is case-insensitive, and so is the hex.
    let callback = Callback {
        headers: vec![field(
            "x-li-signature",
            format!(" {} ", good.to_uppercase()),
        )],
        body: body.as_bytes().to_vec(),
    };
    assert_eq!(parse(callback).unwrap().len(), 1);
    // A tampered body fails the signature of the original.
    let mut tampered = signed(body);
    tampered.body = body.replace("message:m", "message:n").into_bytes();
    assert_eq!(parse(tampered).unwrap_err().kind, ErrorKind::Unauthorized);
}

#[test]
fn callbacks_without_a_webhook_secret_are_misconfigured() {
    let body = r#"{"events": []}"#;
    for harness in [
        Harness::new().setting("access_token", "tok-1"),
        Harness::new().setting("webhook_secret", ""),
    ] {
        let error = harness
            .clone()
            .run(|| LinkedIn::parse_callback(signed(body)))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert!(
            error.message.contains("webhook_secret"),
            "{}",
            error.message
        );
    }
}

#[test]
fn garbage_is_invalid_input() {
    let cases = [
        ("not json", "is not a LinkedIn webhook"),
        ("", "is not a LinkedIn webhook"),
        (
            r#"{"events": {"type": "MESSAGE_READ"}}"#,
            "is not a LinkedIn webhook",
        ),
        (r#"[1, 2]"#, "is not a LinkedIn webhook"),
        (r#"{"events": [42]}"#, "event 0 has no \"type\""),
        (r#"{"events": [{"type": 7}]}"#, "event 0 has no \"type\""),
        (
            r#"{"events": [{"type": "MESSAGE_READ", "createdAt": "yesterday"}]}"#,
            "event 0 (MESSAGE_READ) is malformed",
        ),
        (
            r#"{"events": [{"type": "MESSAGE_READ", "createdAt": -1}]}"#,
            "event 0 (MESSAGE_READ) is malformed",
        ),
        (
            r#"{"events": [{"type": "UNKNOWN"}, {"type": "MESSAGE_RECEIVED", "text": 5}]}"#,
            "event 1 (MESSAGE_RECEIVED) is malformed",
        ),
    ];
    for (body, phrase) in cases {
        let error = parse(signed(body)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{body}");
        assert!(error.message.contains(phrase), "{body}: {}", error.message);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        parse(signed(&deep)).unwrap_err().kind,
        ErrorKind::InvalidInput,
        "deep nesting is refused, not a stack overflow"
    );
}

#[test]
fn the_callback_size_and_event_count_are_capped() {
    let padding = " ".repeat(CALLBACK_BYTES_MAX + 1 - r#"{"events": []}"#.len());
    let largest = format!(r#"{{"events": []{}}}"#, &padding[1..]);
    assert_eq!(largest.len(), CALLBACK_BYTES_MAX);
    assert_eq!(parse(signed(&largest)).unwrap(), []);
    let too_large = format!(r#"{{"events": []{padding}}}"#);
    let error = parse(signed(&too_large)).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error.message.contains("at most 262144"),
        "{}",
        error.message
    );

    let events = |n: usize| {
        let event = json!({"type": "MESSAGE_READ", "inReplyTo": "message:m"});
        json!({ "events": vec![event; n] }).to_string()
    };
    assert_eq!(parse(signed(&events(100))).unwrap().len(), 100);
    let error = parse(signed(&events(101))).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error.message.contains("carries 101 events; at most 100"),
        "{}",
        error.message
    );
}

#[test]
fn ids_in_callbacks_are_capped() {
    for (name, value) in [
        ("inReplyTo", "m".repeat(201)),
        ("from", "a\u{7}b".to_owned()),
    ] {
        let body = json!({"events": [{"type": "MESSAGE_READ", name: value}]});
        let error = parse(signed(&body.to_string())).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput);
        assert!(
            error
                .message
                .contains(&format!("event 0: {name} is not an id")),
            "{}",
            error.message
        );
    }
    let body = json!({"events": [{"type": "MESSAGE_READ", "inReplyTo": "m".repeat(200)}]});
    assert_eq!(
        parse(signed(&body.to_string())).unwrap()[0].1,
        Some(format!("message:{}", "m".repeat(200)))
    );
}
