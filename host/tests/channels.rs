//! The first-party channels (email, webhook, linkedin) through the real
//! runtime: email against a real SMTP server (aiosmtpd) on loopback, the
//! HTTP channels against fake servers on loopback.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tollgate::runtime::{
    Call, CallContext, CallError, Callback, ErrorKind, EventKind, Field, LoadedPlugin, Message,
    PluginKind, Reply, Runtime, RuntimeConfig, Sender, Sent, artifacts,
};

mod support;

use support::FakeServer;

const NOW_MS: u64 = 1_767_225_600_000;

fn load(runtime: &Runtime, name: &str) -> LoadedPlugin {
    let wasm = std::fs::read(artifacts::path(name).unwrap()).unwrap();
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../plugins/{name}/plugin.toml")),
    )
    .unwrap();
    let manifest = tollgate::plugins::Manifest::parse(&manifest).unwrap();
    assert_eq!(manifest.kind, PluginKind::Channel);
    runtime
        .load(name, "0.1.0", PluginKind::Channel, &wasm, manifest.limits)
        .unwrap()
}

fn context(settings: &[(&str, &str)], allowed_hosts: &[&str], private: bool) -> CallContext {
    let mut context = CallContext::new("tenant-1");
    for (name, value) in settings {
        context.settings.insert(name.to_string(), value.to_string());
    }
    context.http.allowed_hosts = allowed_hosts.iter().map(|host| host.to_string()).collect();
    context.http.allow_private_networks = private;
    context.now_ms = || NOW_MS;
    context
}

fn message(recipient: &str, key: &str) -> Message {
    Message {
        recipient: recipient.into(),
        recipient_name: Some("Ada Lovelace".into()),
        sender: Sender {
            address: "sales@acme.example".into(),
            name: Some("Acme Sales".into()),
        },
        subject: Some("A demo of the engine".into()),
        text_body: "Hello Ada, shall we meet on Tuesday?".into(),
        html_body: Some("<p>Hello Ada, shall we meet on Tuesday?</p>".into()),
        headers: Vec::new(),
        references: Vec::new(),
        idempotency_key: key.into(),
    }
}

fn sent(result: Result<Reply, CallError>) -> Sent {
    match result {
        Ok(Reply::Sent(sent)) => sent,
        other => panic!("expected a sent message, got {other:?}"),
    }
}

fn plugin_error(result: Result<Reply, CallError>) -> (ErrorKind, String) {
    match result {
        Err(CallError::Plugin { error, .. }) => (error.kind, error.message),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

/// aiosmtpd on a free loopback port, run by the Python that scripts/test
/// installed it into (TOLLGATE_TEST_PYTHON).
struct SmtpSink {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: BufReader<ChildStdout>,
    port: u16,
}

#[derive(Debug, serde::Deserialize)]
struct Received {
    mail_from: String,
    rcpt_tos: Vec<String>,
    data: String,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let python = std::env::var("TOLLGATE_TEST_PYTHON").expect(
            "TOLLGATE_TEST_PYTHON names a Python with aiosmtpd; scripts/test sets it up (python3 -m venv target/smtp-venv && target/smtp-venv/bin/pip install aiosmtpd==1.4.6)",
        );
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the SMTP sink");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        lines.read_line(&mut port).unwrap();
        SmtpSink {
            child,
            stdin,
            lines,
            port: port.trim().parse().expect("the sink prints its port first"),
        }
    }

    /// The next message the server accepted.
    fn next(&mut self) -> Received {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn email_is_delivered_to_a_real_smtp_server_with_one_click_unsubscribe() {
    let mut sink = SmtpSink::start();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let email = load(&runtime, "email");
    let port = sink.port.to_string();
    let settings = [
        ("smtp_host", "127.0.0.1"),
        ("smtp_port", port.as_str()),
        ("smtp_tls", "none"),
        (
            "unsubscribe_url",
            "https://links.acme.example/u/{delivery_id}/{recipient}/{sig}",
        ),
        ("unsubscribe_secret", "a-long-unsubscribe-secret"),
        ("unsubscribe_mailto", "unsubscribe@acme.example"),
    ];
    let tenant = context(&settings, &[], true);

    let first = sent(
        runtime
            .invoke(
                &email,
                tenant.clone(),
                Call::Send(message("ada@analytical.example", "m-1")),
            )
            .result,
    );
    assert_eq!(first.units, 1);
    let received = sink.next();
    assert_eq!(received.mail_from, "sales@acme.example");
    assert_eq!(received.rcpt_tos, ["ada@analytical.example"]);
    let data = received.data.replace("\r\n", "\n");
    // The header block, with folded lines unfolded (RFC 5322 2.2.3).
    let head = data
        .split("\n\n")
        .next()
        .unwrap()
        .replace("\n ", " ")
        .replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    assert_eq!(header("Subject").as_deref(), Some("A demo of the engine"));
    assert_eq!(
        header("Message-ID").as_deref(),
        Some(format!("<{}>", first.delivery_id).as_str())
    );
    assert_eq!(
        header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with(&format!(
            "<https://links.acme.example/u/{}/ada%40analytical.example/",
            first.delivery_id.replace('@', "%40")
        )),
        "{unsubscribe}"
    );
    assert!(
        unsubscribe.ends_with(", <mailto:unsubscribe@acme.example?subject=unsubscribe>"),
        "{unsubscribe}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");

    // A retry with the same key is not sent again (the sink would show it
    // before the next message).
    let replay = sent(
        runtime
            .invoke(
                &email,
                tenant.clone(),
                Call::Send(message("ada@analytical.example", "m-1")),
            )
            .result,
    );
    assert_eq!(
        (replay.delivery_id.as_str(), replay.units),
        (first.delivery_id.as_str(), 0)
    );

    // The server's refusals: permanent is not retryable, temporary is.
    let (kind, reason) = match runtime
        .invoke(
            &email,
            tenant.clone(),
            Call::Send(message("refused@analytical.example", "m-2")),
        )
        .result
    {
        Err(CallError::Plugin { error, .. }) => {
            assert!(!error.retryable, "{error:?}");
            (error.kind, error.message)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(kind, ErrorKind::Upstream);
    assert!(reason.contains("No such user here"), "{reason}");
    match runtime
        .invoke(
            &email,
            tenant.clone(),
            Call::Send(message("later@analytical.example", "m-3")),
        )
        .result
    {
        Err(CallError::Plugin { error, .. }) => assert!(error.retryable, "{error:?}"),
        other => panic!("{other:?}"),
    }

    // The next message goes through; the sink saw nothing in between.
    let second = sent(
        runtime
            .invoke(
                &email,
                tenant.clone(),
                Call::Send(message("grace@navy.example", "m-4")),
            )
            .result,
    );
    assert_eq!(sink.next().rcpt_tos, ["grace@navy.example"]);

    // The one-click POST from the link in the first message unsubscribes Ada.
    let link = unsubscribe
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .trim_start_matches("https://links.acme.example")
        .to_owned();
    let one_click = Callback {
        headers: vec![
            Field {
                name: "content-type".into(),
                value: "application/x-www-form-urlencoded".into(),
            },
            Field {
                name: "x-tollgate-callback-url".into(),
                value: link,
            },
        ],
        body: b"List-Unsubscribe=One-Click".to_vec(),
    };
    match runtime
        .invoke(&email, tenant.clone(), Call::ChannelCallback(one_click))
        .result
    {
        Ok(Reply::Events(events)) => {
            assert_eq!(events.events.len(), 1);
            let event = &events.events[0];
            assert_eq!(event.kind, EventKind::Unsubscribed);
            assert_eq!(event.recipient.as_deref(), Some("ada@analytical.example"));
            assert_eq!(
                event.delivery_id.as_deref(),
                Some(first.delivery_id.as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(second.delivery_id, first.delivery_id);
}

#[test]
fn email_refuses_an_smtp_server_on_a_private_network_unless_the_operator_allows_it() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let email = load(&runtime, "email");
    let tenant = context(
        &[
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", "2525"),
            ("smtp_tls", "none"),
        ],
        &[],
        false,
    );
    let (kind, message) = plugin_error(
        runtime
            .invoke(
                &email,
                tenant,
                Call::Send(message("ada@analytical.example", "m-1")),
            )
            .result,
    );
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert!(
        message.contains("127.0.0.1 is not on the public internet"),
        "{message}"
    );
}

#[test]
fn webhook_posts_signed_json_to_the_tenant_url_and_reads_signed_callbacks() {
    let server = FakeServer::start(vec![(200, r#"{"id": "gw-42"}"#.into())]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let webhook = load(&runtime, "webhook");
    let url = format!("{}/hooks/sms", server.base_url());
    let secret = "a-long-signing-secret";
    let settings = [("url", url.as_str()), ("signing_secret", secret)];
    // The operator approved "*": any host the tenant names, and here
    // private addresses too, since the gateway is on loopback.
    let tenant = context(&settings, &["*"], true);
    let result = sent(
        runtime
            .invoke(
                &webhook,
                tenant.clone(),
                Call::Send(message("+33612345678", "w-1")),
            )
            .result,
    );
    assert_eq!((result.delivery_id.as_str(), result.units), ("gw-42", 1));
    let request = &server.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hooks/sms")
    );
    let timestamp = request.header("x-tollgate-timestamp").unwrap();
    assert_eq!(timestamp, (NOW_MS / 1000).to_string());
    let expected = support::hmac_sha256_hex(
        secret.as_bytes(),
        format!("{timestamp}.{}", request.body).as_bytes(),
    );
    assert_eq!(
        request.header("x-tollgate-signature"),
        Some(format!("v1={expected}").as_str())
    );
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["recipient"], "+33612345678");
    assert_eq!(body["text"], "Hello Ada, shall we meet on Tuesday?");

    // The gateway's callback, signed the same way.
    let events = r#"{"events": [{"type": "delivered", "delivery_id": "gw-42"}, {"type": "replied", "delivery_id": "gw-42", "detail": "Tuesday works"}]}"#;
    let ts = (NOW_MS / 1000).to_string();
    let signature =
        support::hmac_sha256_hex(secret.as_bytes(), format!("{ts}.{events}").as_bytes());
    let callback = |signature: String| {
        Call::ChannelCallback(Callback {
            headers: vec![
                Field {
                    name: "x-tollgate-timestamp".into(),
                    value: ts.clone(),
                },
                Field {
                    name: "x-tollgate-signature".into(),
                    value: format!("v1={signature}"),
                },
            ],
            body: events.as_bytes().to_vec(),
        })
    };
    match runtime
        .invoke(&webhook, tenant.clone(), callback(signature))
        .result
    {
        Ok(Reply::Events(events)) => {
            let kinds: Vec<EventKind> = events.events.iter().map(|event| event.kind).collect();
            assert_eq!(kinds, [EventKind::Delivered, EventKind::Replied]);
            assert_eq!(events.events[1].detail.as_deref(), Some("Tuesday works"));
        }
        other => panic!("{other:?}"),
    }
    let forged = support::hmac_sha256_hex(
        b"not-the-secret-at-all",
        format!("{ts}.{events}").as_bytes(),
    );
    let (kind, _) = plugin_error(runtime.invoke(&webhook, tenant, callback(forged)).result);
    assert_eq!(kind, ErrorKind::Unauthorized);
}

#[test]
fn webhook_urls_on_private_networks_are_denied_by_default() {
    let server = FakeServer::start(vec![(200, "{}".into())]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let webhook = load(&runtime, "webhook");
    let url = format!("{}/hooks/sms", server.base_url());
    let settings = [
        ("url", url.as_str()),
        ("signing_secret", "a-long-signing-secret"),
    ];
    let (kind, reason) = plugin_error(
        runtime
            .invoke(
                &webhook,
                context(&settings, &["*"], false),
                Call::Send(message("+33612345678", "w-1")),
            )
            .result,
    );
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert!(
        reason.contains("127.0.0.1 is not on the public internet"),
        "{reason}"
    );
    // Without "*" approved, the tenant's URL is not among the plugin's hosts.
    let (kind, reason) = plugin_error(
        runtime
            .invoke(
                &webhook,
                context(&settings, &[], true),
                Call::Send(message("+33612345678", "w-1")),
            )
            .result,
    );
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert!(
        reason.contains("is not among the hosts this plugin may reach"),
        "{reason}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn linkedin_resolves_the_profile_once_then_connects_and_messages() {
    let server = FakeServer::start(vec![
        (200, r#"{"id": "abc123"}"#.into()),
        (201, r#"{"id": "inv-1"}"#.into()),
        (201, r#"{"id": "msg-7"}"#.into()),
        (429, r#"{"message": "weekly limit reached"}"#.into()),
    ]);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let linkedin = load(&runtime, "linkedin");
    let base = server.base_url();
    let host = base.trim_start_matches("http://").to_owned();
    // The operator approved this host by name, so it is reached even on
    // loopback with private networks not allowed.
    let tenant = context(
        &[("access_token", "token-1"), ("api_base_url", base.as_str())],
        &[host.as_str()],
        false,
    );
    let profile = "https://www.linkedin.com/in/ada-lovelace/";
    let mut connect = message(profile, "l-1");
    connect.headers.push(Field {
        name: "linkedin-action".into(),
        value: "connect".into(),
    });
    connect.text_body = "Hello Ada, let us connect.".into();
    let invitation = sent(
        runtime
            .invoke(&linkedin, tenant.clone(), Call::Send(connect.clone()))
            .result,
    );
    assert_eq!(invitation.delivery_id, "invitation:inv-1");
    // The same tenant's store caches the URN: the message needs no lookup.
    let chat = sent(
        runtime
            .invoke(
                &linkedin,
                tenant.clone(),
                Call::Send(message(profile, "l-2")),
            )
            .result,
    );
    assert_eq!(chat.delivery_id, "message:msg-7");

    let requests = server.requests();
    let lines: Vec<(String, String)> = requests
        .iter()
        .map(|request| (request.method.clone(), request.path.clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                "GET".to_owned(),
                "/v2/people/(vanityName:ada-lovelace)".to_owned()
            ),
            ("POST".to_owned(), "/v2/invitations".to_owned()),
            ("POST".to_owned(), "/v2/messages".to_owned()),
        ]
    );
    assert_eq!(requests[1].header("authorization"), Some("Bearer token-1"));
    let invite: serde_json::Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(invite["invitee"], "urn:li:person:abc123");
    assert_eq!(invite["message"], "Hello Ada, let us connect.");

    connect.idempotency_key = "l-3".into();
    let (kind, reason) = plugin_error(
        runtime
            .invoke(&linkedin, tenant, Call::Send(connect))
            .result,
    );
    assert_eq!(kind, ErrorKind::RateLimited);
    assert!(reason.contains("weekly"), "{reason}");
}
