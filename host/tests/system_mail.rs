//! System emails through a real SMTP server (aiosmtpd on loopback): a
//! tenant's invoices and payments reach its contact address as emails with
//! the PDF attached; a reseller's tenant gets them in the reseller's brand
//! and never sees the platform's name; an email waits while no server is
//! set, is retried while the server refuses it for now, and is given up
//! when it refuses it for good. SQLite or PostgreSQL (TEST_DATABASE_URL).

use std::process::Command;
use std::sync::Arc;

use diesel::prelude::*;
use mail_parser::{MessageParser, MimeHeaders as _};
use rust_decimal::Decimal;
use tollgate::billing::invoices::Issuer;
use tollgate::billing::subscriptions::Subscriptions;
use tollgate::branding::{self, Brand};
use tollgate::config::MailSettings;
use tollgate::db::schema::mail_outbox;
use tollgate::db::testing::TestDatabase;
use tollgate::ids::TenantId;
use tollgate::ledger::{Ledger, WriterOptions};
use tollgate::mail::{self, Mailer, Outgoing, Sent};
use tollgate::resale::{self, PricingDocument};
use tollgate::tenants;
use tollgate::units::{Clock as _, Credits, ManualClock, Timestamp};

#[path = "support/smtp.rs"]
mod smtp;

use smtp::{Received, SmtpSpool};

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

struct World {
    clock: Arc<ManualClock>,
    database: tollgate::db::Database,
    subscriptions: Subscriptions,
    platform: Arc<Issuer>,
    _ledger: Ledger,
    _db: TestDatabase,
}

impl World {
    fn new() -> World {
        let db = TestDatabase::new();
        let database = db.open();
        let clock = Arc::new(ManualClock::new(at("2027-03-01T09:00:00Z")));
        let ledger =
            Ledger::start(database.clone(), clock.clone(), WriterOptions::default()).unwrap();
        let platform = Arc::new(Issuer {
            name: "Tollgate".into(),
            address: "1 Main Street".into(),
            tax_rate: Decimal::new(2, 1),
            tax_name: "VAT".into(),
        });
        let subscriptions = Subscriptions {
            database: database.clone(),
            ledger: ledger.clone(),
            plans: Arc::new(
                tollgate::config::parse_plans(
                    std::path::Path::new("plans.toml"),
                    include_str!("../../config/plans.toml"),
                )
                .unwrap(),
            ),
            issuer: platform.clone(),
            clock: clock.clone(),
        };
        World {
            clock,
            database,
            subscriptions,
            platform,
            _ledger: ledger,
            _db: db,
        }
    }

    fn mailer(&self, server: Option<&SmtpSpool>) -> Mailer {
        Mailer {
            database: self.database.clone(),
            settings: MailSettings {
                smtp_host: server.map_or(String::new(), |_| "127.0.0.1".into()),
                smtp_port: server.map_or(0, |server| server.port),
                smtp_security: "none".into(),
                from_address: "billing@platform.example".into(),
                ..MailSettings::default()
            },
            platform: self.platform.clone(),
            public_url: "https://platform.example".into(),
            clock: self.clock.clone(),
        }
    }

    /// North Agency, selling at 30% over the platform's prices under its
    /// own brand.
    fn reseller(&self) -> TenantId {
        let mut conn = self.database.get().unwrap();
        let now = self.clock.now();
        let (reseller, _) =
            tenants::create_reseller(&mut conn, "North Agency", Credits::ZERO, now).unwrap();
        let settings = resale::Settings {
            pricing: PricingDocument {
                markup_percent: Decimal::new(30, 0),
                ..Default::default()
            },
            thresholds: Vec::new(),
            updated_at: None,
        };
        resale::store(&mut conn, reseller.id, &settings, now).unwrap();
        let brand: Brand = serde_json::from_value(serde_json::json!({
            "name": "North Agency",
            "address": "2 Harbour Road\nPortsmouth",
            "tax_id": "GB123456789",
            "support_email": "help@north.example",
            "domain": "app.north.example",
        }))
        .unwrap();
        branding::put(&mut conn, reseller.id, brand, now).unwrap();
        reseller.id
    }

    /// A tenant (of `reseller`, or the platform's) whose system emails go
    /// to `email`.
    fn tenant(&self, name: &str, reseller: Option<TenantId>, email: Option<&str>) -> TenantId {
        let mut conn = self.database.get().unwrap();
        let now = self.clock.now();
        let (tenant, _) = match reseller {
            Some(reseller) => {
                tenants::create_for_reseller(&mut conn, reseller, name, Credits::ZERO, now)
            }
            None => tenants::create(&mut conn, name, None, Credits::ZERO, now),
        }
        .unwrap();
        tenants::set_email(&mut conn, tenant.id, email).unwrap();
        tenant.id
    }

    fn outbox(&self) -> Vec<Outgoing> {
        mail_outbox::table
            .order(mail_outbox::id)
            .select(Outgoing::as_select())
            .load(&mut self.database.get().unwrap())
            .unwrap()
    }
}

/// The text of a PDF, read by pdftotext.
fn pdf_text(pdf: &[u8]) -> String {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("attached.pdf");
    std::fs::write(&path, pdf).unwrap();
    let output = Command::new("pdftotext")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) reads the attached PDF");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// One received email, parsed: its headers, its text and its one PDF.
struct Email {
    raw: Received,
    from: (String, String),
    reply_to: Option<String>,
    subject: String,
    text: String,
    pdf: Option<(String, Vec<u8>)>,
}

fn parse(raw: Received) -> Email {
    let message = MessageParser::default().parse(raw.data.as_bytes()).unwrap();
    let from = message.from().unwrap().first().unwrap();
    let from = (
        from.name().unwrap_or_default().to_owned(),
        from.address().unwrap().to_owned(),
    );
    let reply_to = message
        .reply_to()
        .and_then(|reply_to| reply_to.first())
        .and_then(|address| address.address())
        .map(str::to_owned);
    let pdf = message.attachments().next().map(|attachment| {
        assert_eq!(
            attachment.content_type().map(|kind| kind.subtype()),
            Some(Some("pdf"))
        );
        (
            attachment.attachment_name().unwrap().to_owned(),
            attachment.contents().to_vec(),
        )
    });
    Email {
        from,
        reply_to,
        subject: message.subject().unwrap().to_owned(),
        text: message.body_text(0).unwrap().into_owned(),
        pdf,
        raw,
    }
}

#[test]
fn invoices_and_payments_reach_each_tenant_by_email_in_its_sellers_brand() {
    let world = World::new();
    let north = world.reseller();
    let alpha = world.tenant("Alpha Ltd", Some(north), Some("billing@alpha.example"));
    let direct = world.tenant("Direct Co", None, Some("accounts@direct.example"));
    let quiet = world.tenant("Quiet Co", Some(north), None);

    // Each subscribes; its first invoice is issued at once.
    let mut invoices = Vec::new();
    for tenant in [alpha, direct, quiet] {
        let (_, invoice) = world.subscriptions.subscribe(tenant, "starter").unwrap();
        invoices.push(invoice);
    }
    // Without a server the emails wait: nothing is sent, nothing lost.
    assert_eq!(world.mailer(None).send_due().unwrap(), Sent::default());
    let waiting = world.outbox();
    assert_eq!(
        waiting
            .iter()
            .map(|email| (email.tenant_id, email.topic.as_str(), email.state.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (alpha.0, "invoice", "pending"),
            (direct.0, "invoice", "pending")
        ],
        "a tenant without a contact address gets no email"
    );

    let server = SmtpSpool::start();
    let mailer = world.mailer(Some(&server));
    assert_eq!(
        mailer.send_due().unwrap(),
        Sent {
            sent: 2,
            ..Sent::default()
        }
    );
    // Sent once: another round sends nothing more.
    assert_eq!(mailer.send_due().unwrap(), Sent::default());
    let received: Vec<Email> = server.received().into_iter().map(parse).collect();
    assert_eq!(received.len(), 2);

    // Alpha's comes from North Agency, about North's invoice at retail,
    // and names the platform nowhere.
    let email = &received[0];
    assert_eq!(email.raw.rcpt_tos, vec!["billing@alpha.example"]);
    assert_eq!(email.raw.mail_from, "billing@platform.example");
    assert_eq!(
        email.from,
        ("North Agency".to_owned(), "help@north.example".to_owned())
    );
    assert_eq!(email.reply_to.as_deref(), Some("help@north.example"));
    assert_eq!(
        email.subject,
        "Invoice INV-000001 from North Agency: 76.44 USD"
    );
    assert!(email.text.starts_with("Hello Alpha Ltd,"), "{}", email.text);
    for expected in [
        "North Agency has issued invoice INV-000001",
        "Starter",
        "63.70",
        "Total: 76.44 USD",
        "https://app.north.example/app/invoices",
        "Questions? Write to help@north.example.",
    ] {
        assert!(email.text.contains(expected), "{expected}: {}", email.text);
    }
    let (name, pdf) = email.pdf.as_ref().unwrap();
    assert_eq!(name, "INV-000001.pdf");
    let printed = pdf_text(pdf);
    for expected in [
        "North Agency",
        "2 Harbour Road",
        "GB123456789",
        "Alpha Ltd",
        "63.70",
        "INV-000001",
    ] {
        assert!(printed.contains(expected), "{expected}: {printed}");
    }
    for text in [email.raw.data.to_lowercase(), printed.to_lowercase()] {
        for platform in ["tollgate", "platform.example", "49.00"] {
            assert!(!text.contains(platform), "{platform} in {text}");
        }
    }

    // The platform's own tenant hears from the platform.
    let email = &received[1];
    assert_eq!(email.raw.rcpt_tos, vec!["accounts@direct.example"]);
    assert_eq!(
        email.from,
        ("Tollgate".to_owned(), "billing@platform.example".to_owned())
    );
    assert_eq!(email.reply_to, None);
    assert_eq!(email.subject, "Invoice INV-000001 from Tollgate: 58.80 USD");
    assert!(
        email.text.contains("https://platform.example/app/invoices"),
        "{}",
        email.text
    );
    assert!(pdf_text(&email.pdf.as_ref().unwrap().1).contains("Tollgate"));

    // Alpha pays: a payment email, with the paid invoice.
    world
        .subscriptions
        .invoice_paid(alpha, invoices[0].id)
        .unwrap();
    assert_eq!(mailer.send_due().unwrap().sent, 1);
    let paid = parse(server.received().remove(2));
    assert_eq!(paid.subject, "Payment received for invoice INV-000001");
    assert_eq!(paid.from.0, "North Agency");
    assert!(
        paid.text
            .contains("invoice INV-000001, for 76.44 USD, is paid"),
        "{}",
        paid.text
    );
    assert!(pdf_text(&paid.pdf.unwrap().1).contains("Paid"));

    let outbox = world.outbox();
    assert_eq!(outbox.len(), 3);
    for email in &outbox {
        assert_eq!(
            (email.state.as_str(), email.attempts),
            ("sent", 1),
            "{email:?}"
        );
        assert!(
            email.response.as_deref().unwrap().starts_with("250"),
            "{email:?}"
        );
    }
    assert_eq!(
        mail::list(&mut world.database.get().unwrap(), alpha, 10)
            .unwrap()
            .iter()
            .map(|email| email.topic.as_str())
            .collect::<Vec<_>>(),
        vec!["invoice_paid", "invoice"]
    );
}

#[test]
fn an_email_refused_for_now_is_retried_with_backoff_and_one_refused_for_good_fails() {
    let world = World::new();
    let later = world.tenant("Later Co", None, Some("later@slow.example"));
    let refused = world.tenant("Refused Co", None, Some("refused@gone.example"));
    let moved = world.tenant("Moved Co", None, Some("refused@moved.example"));
    let left = world.tenant("Left Co", None, Some("billing@left.example"));
    for tenant in [later, refused, moved, left] {
        world.subscriptions.subscribe(tenant, "starter").unwrap();
    }
    // An email not sent yet follows its tenant's new address; one whose
    // tenant has none now is given up.
    let mut conn = world.database.get().unwrap();
    tenants::set_email(&mut conn, moved, Some("billing@moved.example")).unwrap();
    tenants::set_email(&mut conn, left, None).unwrap();
    drop(conn);
    let server = SmtpSpool::start();
    let mailer = world.mailer(Some(&server));
    // later@ is refused for now (451), refused@ for good (550).
    assert_eq!(
        mailer.send_due().unwrap(),
        Sent {
            sent: 1,
            retrying: 1,
            failed: 1
        }
    );
    assert_eq!(server.received()[0].rcpt_tos, vec!["billing@moved.example"]);
    let outbox = world.outbox();
    assert_eq!(
        outbox
            .iter()
            .map(|email| (email.tenant_id, email.state.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (later.0, "pending"),
            (refused.0, "failed"),
            (moved.0, "sent"),
            (left.0, "failed"),
        ]
    );
    assert!(
        outbox[3].last_error.as_deref().unwrap().contains("removed"),
        "{:?}",
        outbox[3]
    );
    let (waiting, gone) = (&outbox[0], &outbox[1]);
    assert_eq!((waiting.state.as_str(), waiting.attempts), ("pending", 1));
    assert!(
        waiting.last_error.as_deref().unwrap().contains("451"),
        "{waiting:?}"
    );
    let now = world.clock.now().micros();
    assert_eq!(waiting.next_attempt_at, now + 60_000_000);
    assert_eq!((gone.state.as_str(), gone.attempts), ("failed", 1));
    assert!(
        gone.last_error.as_deref().unwrap().contains("550"),
        "{gone:?}"
    );

    // Not due again before its minute is up; then twice as long each time,
    // until it is given up.
    assert_eq!(mailer.send_due().unwrap(), Sent::default());
    let mut waits = Vec::new();
    loop {
        let email = &world.outbox()[0];
        if email.state != "pending" {
            assert_eq!(
                (email.state.as_str(), email.attempts),
                ("failed", mail::ATTEMPTS_MAX)
            );
            break;
        }
        waits.push((email.next_attempt_at - world.clock.now().micros()) / 60_000_000);
        world
            .clock
            .set(Timestamp::from_micros(email.next_attempt_at));
        mailer.send_due().unwrap();
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    assert_eq!(server.received().len(), 1);
}

#[test]
fn while_the_server_cannot_be_reached_one_email_is_tried_and_the_rest_wait() {
    let world = World::new();
    let tenants: Vec<TenantId> = ["One", "Two", "Three"]
        .iter()
        .map(|name| world.tenant(name, None, Some("billing@customer.example")))
        .collect();
    for &tenant in &tenants {
        world.subscriptions.subscribe(tenant, "starter").unwrap();
    }
    // A port nothing listens on: the server is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut mailer = world.mailer(None);
    mailer.settings.smtp_host = "127.0.0.1".into();
    mailer.settings.smtp_port = port;
    // However long it is down, no email is given up: an attempt that never
    // reached the server does not count.
    for _ in 0..20 {
        assert_eq!(
            mailer.send_due().unwrap(),
            Sent {
                retrying: 1,
                ..Sent::default()
            }
        );
        let outbox = world.outbox();
        assert_eq!(
            outbox
                .iter()
                .map(|email| (email.state.as_str(), email.attempts))
                .collect::<Vec<_>>(),
            vec![("pending", 0), ("pending", 0), ("pending", 0)]
        );
        assert!(outbox.iter().any(|email| email.last_error.is_some()));
        world.clock.set(Timestamp::from_micros(
            outbox
                .iter()
                .map(|email| email.next_attempt_at)
                .max()
                .unwrap(),
        ));
    }
    // The server is back: everything goes.
    let server = SmtpSpool::start();
    let mailer = world.mailer(Some(&server));
    assert_eq!(mailer.send_due().unwrap().sent, 3);
    assert_eq!(server.received().len(), 3);
}

#[test]
fn a_refused_login_holds_the_outbox_without_giving_any_email_up() {
    let world = World::new();
    // The spool answers 530 (authentication required) for locked@, as a
    // server answers every email when the platform's login is wrong.
    let locked = world.tenant("Locked Co", None, Some("locked@login.example"));
    let other = world.tenant("Other Co", None, Some("locked@other.example"));
    for tenant in [locked, other] {
        world.subscriptions.subscribe(tenant, "starter").unwrap();
    }
    let server = SmtpSpool::start();
    let mailer = world.mailer(Some(&server));
    for _ in 0..20 {
        assert_eq!(
            mailer.send_due().unwrap(),
            Sent {
                retrying: 1,
                ..Sent::default()
            },
            "the first refusal stops the batch"
        );
        let outbox = world.outbox();
        assert!(
            outbox
                .iter()
                .all(|email| email.state == "pending" && email.attempts == 0)
        );
        let waiting = outbox
            .iter()
            .find(|email| email.last_error.is_some())
            .unwrap();
        assert!(
            waiting.last_error.as_deref().unwrap().contains("530"),
            "{waiting:?}"
        );
        world.clock.set(Timestamp::from_micros(
            outbox
                .iter()
                .map(|email| email.next_attempt_at)
                .max()
                .unwrap(),
        ));
    }
    assert!(server.received().is_empty());
}
