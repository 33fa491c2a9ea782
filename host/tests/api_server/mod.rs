//! The API test server: a host on loopback with real plugins and the real
//! ledger (SQLite, or PostgreSQL with TEST_DATABASE_URL), two tenants and
//! their keys, shared by the API test files.

#![allow(dead_code)]

pub use std::collections::BTreeMap;
pub use std::sync::Arc;
pub use std::time::Duration;

pub use tollgate::api::{self, AppState};
pub use tollgate::auth::{self, Role};
pub use tollgate::billing::invoices;
pub use tollgate::db::testing::TestDatabase;
pub use tollgate::ids::TenantId;
pub use tollgate::ledger::{
    Command, GrantSource, Ledger, PlatformAccount, TransferId, WriterOptions, queries,
};
pub use tollgate::metering::Meter;
pub use tollgate::plugins::{self, Registry};
pub use tollgate::pricing::{ChargeModel, Price, PriceBook};
pub use tollgate::runtime::{HttpPolicy, Runtime, RuntimeConfig};
pub use tollgate::secrets::SecretBox;
pub use tollgate::tenants;
pub use tollgate::units::{Credits, SystemClock, Timestamp};

pub const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

pub struct Server {
    pub base: String,
    pub database: tollgate::db::Database,
    pub ledger: Ledger,
    pub globex: TenantId,
    pub acme: TenantId,
    pub acme_key: String,
    pub globex_key: String,
    pub operator_key: String,
    /// Acme's paid invoice and the credit note against it.
    pub acme_invoice: i64,
    pub acme_credit_note: i64,
    /// Acme's saved payment method (a bank transfer).
    pub acme_method: i64,
    /// Acme's lead, Ada (ada@acme-lead.example), in its lead book.
    pub acme_lead: i64,
    /// Acme's sequence (Ada enrolled) and a task of Acme's.
    pub acme_sequence: i64,
    pub acme_enrollment: i64,
    pub acme_task: i64,
    /// Acme's pipeline and its deal ("Acme secret deal", for Ada).
    pub acme_pipeline: i64,
    pub acme_deal: i64,
    pub http: ureq::Agent,
    pub _runtime: tokio::runtime::Runtime,
    pub _db: TestDatabase,
}

/// Acme holds 100 credits with csv-leads enabled over 1,000 leads; Globex
/// holds nothing. Searches cost 1 credit per lead.
pub fn start() -> Server {
    start_with_rate_limits(governor::Quota::per_second(
        std::num::NonZeroU32::new(10_000).unwrap(),
    ))
}

pub fn issuer() -> invoices::Issuer {
    invoices::Issuer {
        name: "Tollgate".into(),
        address: "1 Main Street\nSpringfield".into(),
        tax_rate: "0.2".parse().unwrap(),
        tax_name: "VAT".into(),
    }
}

/// Acme's invoice for November ($49.00 plus 20% VAT, paid) and a credit
/// note giving $10.00 of it back.
pub fn acme_documents(conn: &mut tollgate::db::DbConnection, acme: TenantId) -> (i64, i64) {
    let usd = tollgate::units::Currency::parse("USD").unwrap();
    let line = |description: &str, unit_price_minor| invoices::NewLine {
        description: description.into(),
        quantity: 1,
        unit_price_minor,
    };
    let invoice = invoices::create(
        conn,
        &issuer(),
        &invoices::NewDocument {
            tenant: acme,
            kind: invoices::Kind::Invoice,
            currency: usd,
            lines: vec![line("Starter plan, November", 4_900)],
            credits_invoice: None,
        },
        NOW,
    )
    .unwrap()
    .id;
    invoices::finalize(conn, acme, invoice, NOW).unwrap();
    invoices::mark_paid(conn, acme, invoice, NOW).unwrap();
    let note = invoices::create(
        conn,
        &issuer(),
        &invoices::NewDocument {
            tenant: acme,
            kind: invoices::Kind::CreditNote,
            currency: usd,
            lines: vec![line("Goodwill refund", 1_000)],
            credits_invoice: Some(invoice),
        },
        NOW,
    )
    .unwrap()
    .id;
    invoices::finalize(conn, acme, note, NOW).unwrap();
    (invoice, note)
}

/// Acme's mailbox, a sequence with Ada enrolled, and a task.
fn acme_engagement(
    conn: &mut tollgate::db::DbConnection,
    acme: TenantId,
    lead: i64,
) -> (i64, i64, i64) {
    use tollgate::engagement::{schedule, sequences, tasks};
    let mailbox = sequences::create_mailbox(
        conn,
        acme,
        &sequences::NewMailbox {
            plugin: "email".into(),
            address: "sales@acme.example".into(),
            name: None,
            daily_cap: None,
            hourly_cap: None,
        },
        NOW,
    )
    .unwrap();
    let definition = sequences::Definition {
        name: "Acme intro".into(),
        time_zone: "UTC".into(),
        window: schedule::Window::OFFICE_HOURS,
        tracking: true,
        steps: vec![sequences::StepSpec::Email {
            mailbox: mailbox.id,
            variants: vec![sequences::Content {
                subject: Some("Acme secret subject".into()),
                body: "Hello".into(),
                html: None,
                weight: 1,
            }],
        }],
    };
    let sequence = sequences::create(conn, acme, &definition, NOW).unwrap();
    let enrolled = sequences::enroll(conn, acme, sequence.id, &[lead], NOW).unwrap();
    let sequences::Enrolled::Enrolled(enrollment) = enrolled[0].1 else {
        panic!("{enrolled:?}")
    };
    let task = tasks::NewTask {
        title: "Call Ada about Acme".into(),
        kind: "call".into(),
        lead: Some(lead),
        ..Default::default()
    };
    let task = tasks::create(conn, acme, &task, NOW).unwrap();
    (sequence.id, enrollment, task.id)
}

/// Acme's pipeline with a deal for Ada.
fn acme_pipeline(conn: &mut tollgate::db::DbConnection, acme: TenantId, lead: i64) -> (i64, i64) {
    use tollgate::engagement::pipeline;
    let stage = |name: &str| pipeline::StageSpec {
        name: name.into(),
        outcome: None,
        rules: Vec::new(),
    };
    let created = pipeline::create_pipeline(
        conn,
        acme,
        "Acme sales",
        &[stage("Lead"), stage("Proposal")],
        NOW,
    )
    .unwrap();
    let fields = pipeline::DealFields {
        title: "Acme secret deal".into(),
        value: pipeline::money("5000", "USD").unwrap(),
        owner: None,
        lead: Some(lead),
    };
    let moved = pipeline::create_deal(conn, acme, created.id, None, &fields, NOW).unwrap();
    (created.id, moved.deal.id)
}

/// A server with a rate limit per tenant.
pub fn start_with_rate_limits(quota: governor::Quota) -> Server {
    start_with(quota, None)
}

/// As [`start`], with the card provider installed against the card gateway
/// at `gateway` (a fake one) and configured for payments.
#[allow(dead_code)]
pub fn start_with_card_gateway(gateway: &str) -> Server {
    start_with(
        governor::Quota::per_second(std::num::NonZeroU32::new(10_000).unwrap()),
        Some(gateway),
    )
}

fn start_with(quota: governor::Quota, card_gateway: Option<&str>) -> Server {
    let db = TestDatabase::new();
    let database = db.open();
    let ledger = Ledger::start(
        database.clone(),
        Arc::new(SystemClock),
        WriterOptions::default(),
    )
    .unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let secrets = Arc::new(SecretBox::new([9; 32]));
    let mut conn = database.get().unwrap();
    for (name, manifest, wasm) in tollgate::runtime::artifacts::FIRST_PARTY {
        if ["csv-leads", "http-leads", "bank-transfer"].contains(name) {
            let hosts = plugins::Manifest::parse(manifest).unwrap().http_hosts;
            plugins::install(&mut conn, &runtime, manifest, wasm, &hosts, NOW).unwrap();
        }
        if let (true, Some(gateway)) = (*name == "card", card_gateway) {
            // The gateway is the fake one, approved for the plugin.
            let host = gateway.trim_start_matches("http://").to_owned();
            let manifest = manifest.replace("api.stripe.com", &host);
            plugins::install(&mut conn, &runtime, &manifest, wasm, &[host], NOW).unwrap();
        }
    }
    let (acme, wallet) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
    let (globex, _) = tenants::create(&mut conn, "Globex", None, Credits::ZERO, NOW).unwrap();
    ledger
        .submit_blocking(Command::Grant {
            id: TransferId::new("grant-acme").unwrap(),
            account: wallet,
            source: GrantSource::Purchase,
            amount: Credits::from_whole(100).unwrap(),
            expires_at: None,
            priority: None,
            memo: String::new(),
        })
        .unwrap();
    for tenant in [acme.id, globex.id] {
        plugins::enable(
            &mut conn,
            &secrets,
            tenant,
            "csv-leads",
            &BTreeMap::new(),
            NOW,
        )
        .unwrap();
    }
    let mut csv = String::from("First Name,Email,City\n");
    for n in 0..1_000 {
        csv.push_str(&format!("Lead{n},lead{n}@example.com,Paris\n"));
    }
    plugins::kv::put_file(
        &mut conn,
        acme.id,
        "csv-leads",
        "leads.csv",
        csv.as_bytes(),
        NOW,
    )
    .unwrap();
    let (_, acme_key) =
        auth::create_key(&mut conn, Some(acme.id), Role::Member, "test", NOW).unwrap();
    let (_, globex_key) =
        auth::create_key(&mut conn, Some(globex.id), Role::Admin, "test", NOW).unwrap();
    let (_, operator_key) = auth::create_key(&mut conn, None, Role::Operator, "ops", NOW).unwrap();
    let (acme_invoice, acme_credit_note) = acme_documents(&mut conn, acme.id);
    let acme_lead = {
        let ada = tollgate::engagement::leads::Fields {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            email: Some("ada@acme-lead.example".into()),
            ..Default::default()
        };
        tollgate::engagement::leads::save(&mut conn, acme.id, &Default::default(), &ada, "api", NOW)
            .unwrap()
            .id
    };
    let (acme_sequence, acme_enrollment, acme_task) =
        acme_engagement(&mut conn, acme.id, acme_lead);
    let (acme_pipeline, acme_deal) = acme_pipeline(&mut conn, acme.id, acme_lead);
    let search = Price {
        plugin: "csv-leads".into(),
        function: "search".into(),
        tenant: None,
        effective_from: Timestamp::from_micros(0),
        per_call: Default::default(),
        units: ChargeModel::Standard {
            per_unit: "1".parse().unwrap(),
        },
        free_units: BTreeMap::new(),
        per_million_fuel: Default::default(),
        charge_failed: false,
    };
    // The shipped pricing: its credit packages, and its (free) prices of
    // the bank-transfer provider.
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
        Arc::new(PriceBook {
            // Payments are metered at the configured price (none).
            prices: std::iter::once(search)
                .chain(
                    pricing
                        .book
                        .prices
                        .iter()
                        .filter(|price| ["bank-transfer", "card"].contains(&price.plugin.as_str()))
                        .cloned(),
                )
                .collect(),
            rules: Vec::new(),
            reseller_plugins: pricing.book.reseller_plugins.clone(),
        }),
        Arc::new(SystemClock),
        HttpPolicy::default(),
        Duration::from_secs(300),
    ));
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
        issuer: Arc::new(issuer()),
        clock: Arc::new(SystemClock),
    });
    let payments = Arc::new(tollgate::billing::payments::Payments::new(
        meter.clone(),
        subscriptions.clone(),
        &tollgate::config::PaymentSettings {
            providers: [(
                "bank-transfer".to_owned(),
                [
                    ("account_name", "Tollgate Ltd"),
                    ("iban", "GB33BUKB20201555555555"),
                    ("bic", "BUKBGB22"),
                    ("callback_secret", "bank-secret"),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            )]
            .into_iter()
            .chain(card_gateway.map(|gateway| {
                (
                    "card".to_owned(),
                    [
                        ("secret_key", "sk_test_1"),
                        ("webhook_secret", "whsec_1"),
                        ("api_base_url", gateway),
                    ]
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
                )
            }))
            .collect(),
            ..Default::default()
        },
    ));
    let acme_method = payments
        .add_method(
            acme.id,
            &tollgate::billing::payments::NewMethod {
                provider: "bank-transfer".into(),
                method: tollgate::billing::payments::MethodKind::BankTransfer,
                token: String::new(),
                label: None,
                make_default: true,
            },
        )
        .unwrap()
        .id;
    let state = AppState::new(api::Services {
        database: database.clone(),
        ledger: ledger.clone(),
        meter: meter.clone(),
        secrets,
        keys: Default::default(),
        issuer: Arc::new(issuer()),
        subscriptions: subscriptions.clone(),
        payments: payments.clone(),
        packages: Arc::new(pricing.packages.clone()),
        analytics: Default::default(),
        engagement: Default::default(),
        rate_limits: Arc::new(api::rate_limits_with(quota)),
        body_bytes_max: 64 << 10,
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
    tokio.spawn(async move { axum::serve(listener, api::router(state)).await });
    Server {
        base,
        database,
        ledger,
        globex: globex.id,
        acme: acme.id,
        acme_key,
        globex_key,
        operator_key,
        acme_invoice,
        acme_credit_note,
        acme_method,
        acme_lead,
        acme_sequence,
        acme_enrollment,
        acme_task,
        acme_pipeline,
        acme_deal,
        http: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
        _runtime: tokio,
        _db: db,
    }
}

impl Server {
    pub fn post(&self, key: Option<&str>, path: &str, body: &str) -> (u16, serde_json::Value) {
        // Connection: close, as in `call`: refusals may come before the
        // server reads the body.
        let mut request = self
            .http
            .post(&format!("{}{path}", self.base))
            .header("connection", "close");
        if let Some(key) = key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let mut response = request.content_type("application/json").send(body).unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap(),
        )
    }

    /// Any request; the body is JSON or empty.
    pub fn call(
        &self,
        method: &str,
        key: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        // A server that answers before reading a request's body (a 403,
        // say) closes the connection after it; a new one each time keeps
        // the client from reusing a closed one.
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("connection", "close");
        let request = headers.iter().fold(request, |request, (name, value)| {
            request.header(*name, *value)
        });
        let request = request.body(body.unwrap_or("").to_owned()).unwrap();
        let mut response = self.http.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = match text.is_empty() {
            true => serde_json::Value::Null,
            false => serde_json::from_str(&text).unwrap(),
        };
        (status, body)
    }

    pub fn search_once(&self, idempotency_key: &str, body: &str) -> (u16, serde_json::Value, bool) {
        let mut response = self
            .http
            .post(&format!("{}/plugins/csv-leads/invoke/search", self.base))
            .header("authorization", &format!("Bearer {}", self.acme_key))
            .header("idempotency-key", idempotency_key)
            .header("connection", "close")
            .content_type("application/json")
            .send(body)
            .unwrap();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let status = response.status().as_u16();
        let body = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body, replayed)
    }

    pub fn get(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let mut response = self
            .http
            .get(&format!("{}{path}", self.base))
            .header("authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap(),
        )
    }

    /// An operation's path with its parameters filled in: `tenant`'s id,
    /// csv-leads, and Acme's invoice and credit note.
    /// A new key of `tenant`'s with `role`.
    pub fn tenant_key(&self, tenant: TenantId, role: Role) -> String {
        let mut conn = self.database.get().unwrap();
        auth::create_key(&mut conn, Some(tenant), role, "test", NOW)
            .unwrap()
            .1
    }

    pub fn concrete(&self, path: &str, tenant: TenantId) -> String {
        path.replace("{tenant}", &tenant.0.to_string())
            .replace("{plugin}", "csv-leads")
            .replace("invoices/{id}", &format!("invoices/{}", self.acme_invoice))
            .replace(
                "credit-notes/{id}",
                &format!("credit-notes/{}", self.acme_credit_note),
            )
            // Acme has paid nothing through a provider: no receipt.
            .replace("receipts/{id}", "receipts/1")
            .replace("leads/{id}", &format!("leads/{}", self.acme_lead))
            .replace(
                "sequences/{id}",
                &format!("sequences/{}", self.acme_sequence),
            )
            .replace(
                "pipelines/{id}",
                &format!("pipelines/{}", self.acme_pipeline),
            )
            .replace("deals/{id}", &format!("deals/{}", self.acme_deal))
    }

    /// A GET's status, content type and body bytes.
    pub fn raw(&self, key: &str, path: &str) -> (u16, String, Vec<u8>) {
        let mut response = self
            .http
            .get(&format!("{}{path}", self.base))
            .header("authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.body_mut().read_to_vec().unwrap();
        (response.status().as_u16(), content_type, body)
    }

    pub fn search(&self, key: &str, body: &str) -> (u16, serde_json::Value) {
        self.post(Some(key), "/plugins/csv-leads/invoke/search", body)
    }

    /// Acme's wallet as the ledger has it, and the platform's revenue.
    pub fn ledger(&self) -> (Credits, Credits, Credits) {
        let mut conn = self.database.get().unwrap();
        let wallet = queries::wallet_of(&mut conn, self.acme).unwrap();
        let balance = queries::balance(&mut conn, wallet).unwrap();
        let revenue = queries::balance(&mut conn, PlatformAccount::Revenue.id()).unwrap();
        (balance.posted, balance.pending, revenue.posted)
    }
}

/// The text `pdftotext` extracts from `pdf`, its runs of spaces squeezed.
pub fn pdftotext(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("document.pdf");
    std::fs::write(&path, pdf).unwrap();
    let output = std::process::Command::new("pdftotext")
        .args(["-layout".as_ref(), path.as_os_str(), "-".as_ref()])
        .output()
        .expect("pdftotext runs; install poppler-utils (scripts/test does)");
    assert!(output.status.success(), "pdftotext refused the file");
    let text = String::from_utf8(output.stdout).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
