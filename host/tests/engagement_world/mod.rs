//! A host for the engagement tests: the real router on loopback with the
//! email and LinkedIn plugins, a real SMTP server (aiosmtpd) and a fake
//! LinkedIn API on loopback, one tenant (Acme) with credits, and a sequence
//! runner on a clock the test moves. SQLite, or PostgreSQL with
//! TEST_DATABASE_URL.

#![allow(dead_code)]

pub use std::collections::BTreeMap;
pub use std::sync::Arc;
pub use std::time::Duration;

use serde_json::Value;
use tollgate::api::{self, AppState};
use tollgate::auth::{self, Role};
use tollgate::db::testing::TestDatabase;
use tollgate::engagement::runner::{Links, Runner, Tick};
pub use tollgate::ids::TenantId;
use tollgate::ledger::{Command, GrantSource, Ledger, TransferId, WriterOptions};
use tollgate::metering::Meter;
use tollgate::plugins::{self, Registry};
use tollgate::runtime::{HttpPolicy, Runtime, RuntimeConfig};
use tollgate::secrets::SecretBox;
use tollgate::tenants;
pub use tollgate::units::{Clock as _, Credits, ManualClock, Timestamp};

#[path = "../support/smtp.rs"]
pub mod smtp;
#[path = "../support/mod.rs"]
pub mod support;

pub use smtp::{Received, SmtpSpool};
pub use support::FakeServer;

/// The origin the host puts in links; tests map it to the loopback server.
pub const PUBLIC_URL: &str = "https://tollgate.test";

pub fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

pub struct World {
    /// `http://127.0.0.1:<port>`: the router's root.
    pub root: String,
    pub database: tollgate::db::Database,
    pub ledger: Ledger,
    pub meter: Arc<Meter>,
    pub clock: Arc<ManualClock>,
    pub runner: Runner,
    pub acme: TenantId,
    /// An admin key of Acme's.
    pub key: String,
    pub smtp: SmtpSpool,
    pub linkedin: FakeServer,
    /// The tenant's webhook endpoint (the webhook channel's `url`).
    pub hooks: FakeServer,
    pub http: ureq::Agent,
    _tokio: tokio::runtime::Runtime,
    _db: TestDatabase,
}

/// What a world starts with.
pub struct Setup {
    pub start: &'static str,
    pub credits: i64,
    /// The fake LinkedIn API's answers, in order.
    pub linkedin: Vec<(u16, String)>,
    /// The webhook endpoint's answers, in order.
    pub hooks: Vec<(u16, String)>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            // A Thursday.
            start: "2026-01-08T10:00:00Z",
            credits: 1_000,
            linkedin: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

impl World {
    pub fn start(setup: Setup) -> World {
        let smtp = SmtpSpool::start();
        let linkedin = FakeServer::start(setup.linkedin);
        let hooks = FakeServer::start(setup.hooks);
        let clock = Arc::new(ManualClock::new(at(setup.start)));
        let now = clock.now();
        let db = TestDatabase::new();
        let database = db.open();
        let ledger =
            Ledger::start(database.clone(), clock.clone(), WriterOptions::default()).unwrap();
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let secrets = Arc::new(SecretBox::new([7; 32]));
        let mut conn = database.get().unwrap();
        let linkedin_host = format!("127.0.0.1:{}", linkedin.addr.port());
        for (name, manifest, wasm) in tollgate::runtime::artifacts::FIRST_PARTY {
            if !["email", "linkedin", "webhook", "csv-leads"].contains(name) {
                continue;
            }
            // The operator approves the fake LinkedIn API's address for
            // the LinkedIn plugin, in place of api.linkedin.com.
            let manifest =
                manifest.replace("\"api.linkedin.com\"", &format!("\"{linkedin_host}\""));
            let hosts = plugins::Manifest::parse(&manifest).unwrap().http_hosts;
            plugins::install(&mut conn, &runtime, &manifest, wasm, &hosts, now).unwrap();
        }
        let (acme, wallet) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, now).unwrap();
        if setup.credits > 0 {
            ledger
                .submit_blocking(Command::Grant {
                    id: TransferId::new("grant-acme").unwrap(),
                    account: wallet,
                    source: GrantSource::Purchase,
                    amount: Credits::from_whole(setup.credits).unwrap(),
                    expires_at: None,
                    priority: None,
                    memo: String::new(),
                })
                .unwrap();
        }
        let port = smtp.port.to_string();
        let email_settings: BTreeMap<String, String> = [
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", port.as_str()),
            ("smtp_tls", "none"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        plugins::enable(&mut conn, &secrets, acme.id, "email", &email_settings, now).unwrap();
        let linkedin_settings: BTreeMap<String, String> = [
            ("access_token", "li-token".to_owned()),
            ("api_base_url", format!("http://{linkedin_host}")),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        plugins::enable(
            &mut conn,
            &secrets,
            acme.id,
            "linkedin",
            &linkedin_settings,
            now,
        )
        .unwrap();
        let webhook_settings: BTreeMap<String, String> = [
            (
                "url",
                format!("http://127.0.0.1:{}/hook", hooks.addr.port()),
            ),
            ("signing_secret", "a-long-webhook-signing-secret".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        plugins::enable(
            &mut conn,
            &secrets,
            acme.id,
            "webhook",
            &webhook_settings,
            now,
        )
        .unwrap();
        let (_, key) =
            auth::create_key(&mut conn, Some(acme.id), Role::Admin, "test", now).unwrap();
        drop(conn);
        let pricing = tollgate::config::parse_pricing(
            std::path::Path::new("pricing.toml"),
            include_str!("../../../config/pricing.toml"),
        )
        .unwrap();
        let meter = Arc::new(Meter::new(
            database.clone(),
            ledger.clone(),
            Arc::new(Registry::new(runtime)),
            secrets.clone(),
            Arc::new(pricing.book.clone()),
            clock.clone(),
            HttpPolicy {
                allow_private_networks: true,
                ..HttpPolicy::default()
            },
            Duration::from_secs(300),
        ));
        let engagement = Arc::new(api::sequences::Engagement {
            public_url: PUBLIC_URL.into(),
            clock: clock.clone(),
        });
        let runner = Runner {
            database: database.clone(),
            meter: meter.clone(),
            clock: clock.clone(),
            links: Links {
                public_url: PUBLIC_URL.into(),
                secrets: secrets.clone(),
            },
            owner: "host-a".into(),
        };
        let subscriptions = Arc::new(tollgate::billing::subscriptions::Subscriptions {
            database: database.clone(),
            ledger: ledger.clone(),
            plans: Arc::new(
                tollgate::config::parse_plans(
                    std::path::Path::new("plans.toml"),
                    include_str!("../../../config/plans.toml"),
                )
                .unwrap(),
            ),
            issuer: Arc::new(tollgate::billing::invoices::Issuer {
                name: "Tollgate".into(),
                address: "1 Main Street".into(),
                tax_rate: "0.2".parse().unwrap(),
                tax_name: "VAT".into(),
            }),
            clock: clock.clone(),
        });
        let payments = Arc::new(tollgate::billing::payments::Payments::new(
            meter.clone(),
            subscriptions.clone(),
            &tollgate::config::PaymentSettings::default(),
        ));
        let state = AppState::new(tollgate::api::Services {
            database: database.clone(),
            ledger: ledger.clone(),
            meter: meter.clone(),
            secrets,
            keys: Default::default(),
            issuer: subscriptions.issuer.clone(),
            subscriptions,
            payments,
            packages: Arc::new(Vec::new()),
            analytics: Default::default(),
            rate_limits: Arc::new(api::rate_limits(10_000, 10_000)),
            body_bytes_max: 1 << 20,
            engagement,
        });
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = tokio
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        tokio.spawn(async move { axum::serve(listener, api::router(state)).await });
        World {
            root,
            database,
            ledger,
            meter,
            clock,
            runner,
            acme: acme.id,
            key,
            smtp,
            linkedin,
            hooks,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            _tokio: tokio,
            _db: db,
        }
    }

    /// An API call as Acme's admin; `path` is under `/api/v1`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/api/v1{path}", self.root))
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(body.unwrap_or("").to_owned())
            .unwrap();
        let mut response = self.http.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request without a key to a link the host handed out (its public
    /// origin replaced by the loopback server's): status, Location, body.
    pub fn follow(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Option<String>, String) {
        let path = url
            .strip_prefix(PUBLIC_URL)
            .unwrap_or_else(|| panic!("{url} is not a link of this host"));
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.root))
            .header("content-type", content_type)
            .body(body.to_owned())
            .unwrap();
        let mut response = self.http.run(request).unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, location, text)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the clock to `until`, running the scheduler's ticks every
    /// `step` on the way (as `serve` does every few seconds).
    pub fn run_until(&self, until: Timestamp, step: Duration) -> Tick {
        let mut total = Tick::default();
        loop {
            let tick = self.runner.tick().unwrap();
            total.enrollments += tick.enrollments;
            total.steps += tick.steps;
            let now = self.clock.now();
            if now >= until {
                return total;
            }
            let next = (now.micros() + step.as_micros() as i64).min(until.micros());
            self.clock.advance_micros(next - now.micros());
        }
    }

    pub fn lead(&self, body: Value) -> i64 {
        let (status, created) = self.call("POST", "/leads", Some(&body.to_string()));
        assert_eq!(status, 201, "{created}");
        created["lead"]["id"].as_i64().unwrap()
    }

    pub fn mailbox(&self, plugin: &str, address: &str, daily_cap: Option<i64>) -> i64 {
        let body = serde_json::json!({
            "plugin": plugin, "address": address, "name": "Sam from Acme", "daily_cap": daily_cap,
        });
        let (status, created) = self.call("POST", "/mailboxes", Some(&body.to_string()));
        assert_eq!(status, 201, "{created}");
        created["mailbox"]["id"].as_i64().unwrap()
    }

    pub fn sequence(&self, body: Value) -> i64 {
        let (status, created) = self.call("POST", "/sequences", Some(&body.to_string()));
        assert_eq!(status, 201, "{created}");
        created["sequence"]["id"].as_i64().unwrap()
    }

    pub fn enroll(&self, sequence: i64, leads: &[i64]) {
        let body = serde_json::json!({ "leads": leads });
        let (status, answer) = self.call(
            "POST",
            &format!("/sequences/{sequence}/enrollments"),
            Some(&body.to_string()),
        );
        assert_eq!(
            (status, answer["enrolled"].as_u64()),
            (200, Some(leads.len() as u64)),
            "{answer}"
        );
    }

    /// The enrollments of a sequence: lead → (status, reason).
    pub fn enrollments(&self, sequence: i64) -> BTreeMap<i64, (String, Option<String>)> {
        let (status, page) = self.call(
            "GET",
            &format!("/sequences/{sequence}/enrollments?limit=500"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        page["enrollments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|enrollment| {
                (
                    enrollment["lead"].as_i64().unwrap(),
                    (
                        enrollment["status"].as_str().unwrap().to_owned(),
                        enrollment["reason"].as_str().map(str::to_owned),
                    ),
                )
            })
            .collect()
    }

    pub fn balance(&self) -> String {
        let (_, credits) = self.call("GET", "/billing/credits", None);
        credits["balance"]["available"].as_str().unwrap().to_owned()
    }
}

/// A received message, parsed.
pub struct Mail {
    pub to: Vec<String>,
    pub from: String,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub html: Option<String>,
    pub headers: BTreeMap<String, String>,
}

pub fn parse(received: &Received) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(received.data.as_bytes())
        .expect("an RFC 5322 message");
    let headers = message
        .headers()
        .iter()
        .map(|header| {
            let raw = &received.data[header.offset_start as usize..header.offset_end as usize];
            (
                header.name.as_str().to_lowercase(),
                raw.trim().replace("\r\n", "").replace('\n', ""),
            )
        })
        .collect();
    let from = message
        .from()
        .and_then(|from| from.first())
        .map(|address| {
            format!(
                "{} <{}>",
                address.name().unwrap_or_default(),
                address.address().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    Mail {
        to: received.rcpt_tos.clone(),
        from,
        subject: message.subject().unwrap_or_default().to_owned(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|text| text.replace("\r\n", "\n"))
            .unwrap_or_default(),
        html: message.body_html(0).map(|html| html.replace("\r\n", "\n")),
        headers,
    }
}

/// The first URL in `text` that starts with `prefix`.
pub fn link(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    text[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}
