//! System emails: what the platform tells a tenant (an invoice or a credit
//! note issued, an invoice paid) and a reseller (its wallet fell below an
//! alert threshold), sent to the contact address the tenant gave
//! (`tenants.email`; a tenant without one gets none).
//!
//! An email is written to the outbox (`mail_outbox`) in the transaction of
//! what it tells, so none is lost and none is sent for something rolled
//! back; `(topic, subject)` makes each one once. [`Mailer::send_due`]
//! composes each due email and hands it to the SMTP server, once: a server's
//! temporary refusal (4xx, a dropped connection) is retried with backoff,
//! a permanent one (5xx) ends it as `failed`, with the server's words.
//! Several hosts may run it at once: each email is claimed before it is
//! sent.
//!
//! A reseller's tenant gets its emails in its reseller's brand: from the
//! brand's name and support address, about documents the reseller issued,
//! linking to the brand's domain. Nothing in them names the platform; the
//! platform's address is only the envelope sender, where bounces go.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use diesel::prelude::*;
use lettre::Transport as _;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, Message, SmtpTransport};
use minijinja::{Environment, context};

use crate::billing::invoices::{self, Document, Issuer, Kind};
use crate::billing::render;
use crate::branding::{self, Brand};
use crate::config::MailSettings;
use crate::db::schema::{mail_outbox, reseller_alerts, tenants};
use crate::db::{Database, DbConnection};
use crate::ids::TenantId;
use crate::units::{Clock, Credits, Timestamp};

/// What an email tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// An invoice was issued; its PDF is attached.
    Invoice,
    /// A credit note was issued; its PDF is attached.
    CreditNote,
    /// An invoice was paid; the paid invoice is attached.
    InvoicePaid,
    /// A reseller's wallet fell below one of its alert thresholds.
    WalletAlert,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Invoice => "invoice",
            Topic::CreditNote => "credit_note",
            Topic::InvoicePaid => "invoice_paid",
            Topic::WalletAlert => "wallet_alert",
        }
    }

    fn parse(text: &str) -> Option<Topic> {
        Some(match text {
            "invoice" => Topic::Invoice,
            "credit_note" => Topic::CreditNote,
            "invoice_paid" => Topic::InvoicePaid,
            "wallet_alert" => Topic::WalletAlert,
            _ => return None,
        })
    }
}

pub const STATE_PENDING: &str = "pending";
pub const STATE_SENT: &str = "sent";
pub const STATE_FAILED: &str = "failed";

/// Sends of one email before it is given up as `failed`.
pub const ATTEMPTS_MAX: i32 = 12;

/// How long a host that claimed an email has to send it before another
/// may.
/// A send is about a dozen exchanges of up to `SMTP_TIMEOUT` each.
const CLAIM_US: i64 = 15 * 60 * 1_000_000;

/// How long the outbox waits after the server could not be reached or
/// refused the platform's login.
const HELD_US: i64 = 60 * 1_000_000;

/// Emails sent in one [`Mailer::send_due`].
const BATCH_MAX: i64 = 100;

const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the email about `subject` (a document's or an alert's id) to the
/// tenant's contact address, in the caller's transaction. Returns whether
/// one was written: not when the tenant gave no address, nor twice for one
/// subject.
pub fn enqueue(
    conn: &mut DbConnection,
    tenant: TenantId,
    topic: Topic,
    subject: i64,
    now: Timestamp,
) -> QueryResult<bool> {
    let email: Option<Option<String>> = tenants::table
        .find(tenant.0)
        .select(tenants::email)
        .first(conn)
        .optional()?;
    let Some(Some(recipient)) = email else {
        return Ok(false);
    };
    let row = (
        mail_outbox::tenant_id.eq(tenant.0),
        mail_outbox::topic.eq(topic.as_str()),
        mail_outbox::subject_id.eq(subject),
        mail_outbox::recipient.eq(recipient),
        mail_outbox::state.eq(STATE_PENDING),
        mail_outbox::next_attempt_at.eq(now.micros()),
        mail_outbox::created_at.eq(now.micros()),
    );
    let written = match conn {
        DbConnection::Sqlite(conn) => diesel::insert_into(mail_outbox::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(conn)?,
        DbConnection::Postgres(conn) => diesel::insert_into(mail_outbox::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(conn)?,
    };
    Ok(written == 1)
}

/// The email for a document just issued (called by its finalization).
pub(crate) fn document_issued(
    conn: &mut DbConnection,
    document: &Document,
    now: Timestamp,
) -> QueryResult<bool> {
    let topic = match document.kind {
        Kind::Invoice => Topic::Invoice,
        Kind::CreditNote => Topic::CreditNote,
    };
    enqueue(conn, TenantId(document.tenant), topic, document.id, now)
}

/// The email for an invoice just paid (called by the transition).
pub(crate) fn invoice_paid(
    conn: &mut DbConnection,
    document: &Document,
    now: Timestamp,
) -> QueryResult<bool> {
    enqueue(
        conn,
        TenantId(document.tenant),
        Topic::InvoicePaid,
        document.id,
        now,
    )
}

/// The tenant's contact address changed (to `email`, or to none): its
/// emails not sent yet go to the new one, or, with none, are given up.
pub fn readdress(
    conn: &mut DbConnection,
    tenant: TenantId,
    email: Option<&str>,
) -> QueryResult<usize> {
    let waiting = mail_outbox::table
        .filter(mail_outbox::tenant_id.eq(tenant.0))
        .filter(mail_outbox::state.eq(STATE_PENDING));
    match email {
        Some(email) => diesel::update(waiting)
            .set(mail_outbox::recipient.eq(email))
            .execute(conn),
        None => diesel::update(waiting)
            .set((
                mail_outbox::state.eq(STATE_FAILED),
                mail_outbox::last_error.eq("the contact address was removed before it was sent"),
            ))
            .execute(conn),
    }
}

/// One email in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = mail_outbox)]
pub struct Outgoing {
    pub id: i64,
    pub tenant_id: i64,
    pub topic: String,
    pub subject_id: i64,
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub response: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// The tenant's emails, newest first, at most `limit`.
pub fn list(conn: &mut DbConnection, tenant: TenantId, limit: i64) -> QueryResult<Vec<Outgoing>> {
    mail_outbox::table
        .filter(mail_outbox::tenant_id.eq(tenant.0))
        .order(mail_outbox::id.desc())
        .limit(limit)
        .select(Outgoing::as_select())
        .load(conn)
}

/// What one [`Mailer::send_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    /// Refused for now; tried again later.
    pub retrying: usize,
    /// Refused for good, or out of attempts.
    pub failed: usize,
}

/// Sends the outbox's due emails.
#[derive(Clone, Debug)]
pub struct Mailer {
    pub database: Database,
    pub settings: MailSettings,
    /// The platform as it issues invoices: its name signs its own emails
    /// unless `settings.from_name` is set.
    pub platform: Arc<Issuer>,
    /// The platform's dashboard, linked from its own emails.
    pub public_url: String,
    pub clock: Arc<dyn Clock>,
}

/// Who an email is from.
struct Voice {
    name: String,
    from: Address,
    reply_to: Option<Address>,
    support: Option<String>,
    dashboard: Option<String>,
}

/// An email ready for the server.
struct Composed {
    to: Address,
    message: Message,
}

enum Outcome {
    Sent(String),
    Retry(String),
    /// The server could not be reached, or refused the platform's login:
    /// no fault of the email's, so the attempt does not count; tried again
    /// in a minute, and the rest of the batch waits too (each would fare
    /// the same, a connection timeout apiece).
    Held(String),
    Failed(String),
}

impl Mailer {
    /// Sends every email due now, up to a batch; returns what became of
    /// them. Without a server set, sends nothing: the emails wait.
    pub fn send_due(&self) -> anyhow::Result<Sent> {
        let mut done = Sent::default();
        if !self.settings.configured() {
            return Ok(done);
        }
        let transport = self.transport()?;
        let mut conn = self.database.get()?;
        let due: Vec<(i64, i64)> = mail_outbox::table
            .filter(mail_outbox::state.eq(STATE_PENDING))
            .filter(mail_outbox::next_attempt_at.le(self.clock.now().micros()))
            .order((mail_outbox::next_attempt_at, mail_outbox::id))
            .limit(BATCH_MAX)
            .select((mail_outbox::id, mail_outbox::next_attempt_at))
            .load(&mut conn)?;
        for (id, due_at) in due {
            // Claimed by moving its next attempt on and counting the
            // attempt (so one a crash cuts short counts too); another host
            // that read it due finds it changed and leaves it. Each email
            // reads the clock afresh: a batch of slow sends takes a while.
            let claim = self.clock.now().micros() + CLAIM_US;
            let claimed = diesel::update(
                mail_outbox::table
                    .filter(mail_outbox::id.eq(id))
                    .filter(mail_outbox::state.eq(STATE_PENDING))
                    .filter(mail_outbox::next_attempt_at.eq(due_at)),
            )
            .set((
                mail_outbox::next_attempt_at.eq(claim),
                mail_outbox::attempts.eq(mail_outbox::attempts + 1),
            ))
            .execute(&mut conn)?;
            if claimed == 0 {
                continue;
            }
            let email: Outgoing = mail_outbox::table
                .find(id)
                .select(Outgoing::as_select())
                .first(&mut conn)?;
            let attempts = email.attempts;
            // Sent to where the tenant's emails go now, read as it is sent.
            let (customer, recipient): (String, Option<String>) = tenants::table
                .find(email.tenant_id)
                .select((tenants::name, tenants::email))
                .first(&mut conn)?;
            let outcome = match (attempts > ATTEMPTS_MAX, &recipient) {
                (true, _) => Outcome::Failed(format!(
                    "given up after {ATTEMPTS_MAX} attempts, the last cut short"
                )),
                (false, None) => {
                    Outcome::Failed("the tenant has no contact address now".to_owned())
                }
                // A document or brand that cannot be read now (the
                // database, say) may be readable later.
                (false, Some(recipient)) => {
                    match self.compose(&mut conn, &email, customer, recipient) {
                        Ok(composed) => self.send(&transport, composed),
                        Err(error) => Outcome::Retry(format!("could not be written: {error:#}")),
                    }
                }
            };
            let now = self.clock.now().micros();
            // Recorded only while the claim is this host's: one whose send
            // outlasted its claim leaves the email to the host that took it
            // over.
            let claimed = mail_outbox::table
                .filter(mail_outbox::id.eq(id))
                .filter(mail_outbox::next_attempt_at.eq(claim));
            let ours = diesel::update(claimed.filter(mail_outbox::state.eq(STATE_PENDING)));
            match outcome {
                Outcome::Sent(response) => {
                    done.sent += 1;
                    // Sent, whatever its address did meanwhile.
                    diesel::update(claimed)
                        .set((
                            mail_outbox::state.eq(STATE_SENT),
                            mail_outbox::recipient.eq(recipient.unwrap_or_default()),
                            mail_outbox::response.eq(response),
                            mail_outbox::last_error.eq(None::<String>),
                            mail_outbox::sent_at.eq(now),
                        ))
                        .execute(&mut conn)?;
                }
                Outcome::Held(error) => {
                    done.retrying += 1;
                    tracing::warn!(email = id, %error, "the SMTP server cannot be reached or refuses the login; system emails wait");
                    ours.set((
                        mail_outbox::attempts.eq(attempts - 1),
                        mail_outbox::last_error.eq(&error),
                        mail_outbox::next_attempt_at.eq(now + HELD_US),
                    ))
                    .execute(&mut conn)?;
                    break;
                }
                Outcome::Retry(error) if attempts < ATTEMPTS_MAX => {
                    done.retrying += 1;
                    tracing::warn!(email = id, attempts, %error, "a system email was refused for now; will retry");
                    ours.set((
                        mail_outbox::last_error.eq(&error),
                        mail_outbox::next_attempt_at.eq(now + backoff_us(attempts)),
                    ))
                    .execute(&mut conn)?;
                }
                Outcome::Retry(error) | Outcome::Failed(error) => {
                    done.failed += 1;
                    tracing::error!(email = id, attempts, %error, "a system email could not be sent");
                    ours.set((
                        mail_outbox::state.eq(STATE_FAILED),
                        mail_outbox::last_error.eq(error),
                    ))
                    .execute(&mut conn)?;
                }
            }
        }
        Ok(done)
    }

    fn transport(&self) -> anyhow::Result<SmtpTransport> {
        let settings = &self.settings;
        let host = settings.smtp_host.trim();
        let implicit = settings.smtp_security == "tls";
        let port = match settings.smtp_port {
            0 if implicit => 465,
            0 => 587,
            port => port,
        };
        let tls = || TlsParameters::new(host.to_owned());
        let mut transport = SmtpTransport::builder_dangerous(host)
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .tls(match settings.smtp_security.as_str() {
                "none" => Tls::None,
                "tls" => Tls::Wrapper(tls()?),
                _ => Tls::Required(tls()?),
            });
        if !settings.smtp_username.is_empty() {
            transport = transport.credentials(Credentials::new(
                settings.smtp_username.clone(),
                settings.smtp_password.clone(),
            ));
        }
        Ok(transport.build())
    }

    fn send(&self, transport: &SmtpTransport, composed: Composed) -> Outcome {
        let from = match self.settings.from_address.parse::<Address>() {
            Ok(from) => from,
            Err(error) => return Outcome::Failed(format!("mail.from_address: {error}")),
        };
        let envelope = match lettre::address::Envelope::new(Some(from), vec![composed.to]) {
            Ok(envelope) => envelope,
            Err(error) => return Outcome::Failed(error.to_string()),
        };
        match transport.send_raw(&envelope, &composed.message.formatted()) {
            Ok(response) => Outcome::Sent(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            // A permanent refusal of this email ends it; one of the
            // platform's login (53x: the settings are wrong) holds every
            // email until the settings are mended, so it is retried.
            Err(error) if refused_login(&error) || unreachable(&error) => {
                Outcome::Held(error.to_string())
            }
            Err(error) if error.is_permanent() => Outcome::Failed(error.to_string()),
            Err(error) => Outcome::Retry(error.to_string()),
        }
    }

    /// The platform's voice: its own emails, and every email to a reseller.
    fn platform_voice(&self) -> anyhow::Result<Voice> {
        let name = match self.settings.from_name.trim() {
            "" => self.platform.name.clone(),
            name => name.to_owned(),
        };
        Ok(Voice {
            name,
            from: self.settings.from_address.parse()?,
            reply_to: None,
            support: None,
            dashboard: Some(format!("{}/", self.public_url.trim_end_matches('/'))),
        })
    }

    /// A reseller's voice, to its tenants.
    fn brand_voice(&self, brand: Brand) -> anyhow::Result<Voice> {
        let support: Option<Address> =
            brand.support_email.as_deref().map(str::parse).transpose()?;
        Ok(Voice {
            from: match &support {
                Some(support) => support.clone(),
                None => self.settings.from_address.parse()?,
            },
            reply_to: support,
            support: brand.support_email,
            dashboard: brand.domain.map(|domain| format!("https://{domain}/")),
            name: brand.name,
        })
    }

    fn compose(
        &self,
        conn: &mut DbConnection,
        email: &Outgoing,
        customer: String,
        recipient: &str,
    ) -> anyhow::Result<Composed> {
        let tenant = TenantId(email.tenant_id);
        let topic = Topic::parse(&email.topic)
            .ok_or_else(|| anyhow::anyhow!("unknown topic {:?}", email.topic))?;
        let (voice, subject, text, attachment) = match topic {
            Topic::WalletAlert => {
                let (threshold, balance, at): (i64, i64, i64) = reseller_alerts::table
                    .find(email.subject_id)
                    .filter(reseller_alerts::reseller_id.eq(tenant.0))
                    .select((
                        reseller_alerts::threshold,
                        reseller_alerts::balance,
                        reseller_alerts::created_at,
                    ))
                    .first(conn)?;
                let voice = self.platform_voice()?;
                let threshold = Credits::from_micros(threshold).to_string();
                let text = TEMPLATES.get_template("wallet_alert")?.render(context! {
                    customer => &customer,
                    sender => &voice.name,
                    threshold => &threshold,
                    balance => Credits::from_micros(balance).to_string(),
                    at => Timestamp::from_micros(at).to_chrono().format("%Y-%m-%d %H:%M").to_string(),
                    reseller => tenant.0,
                    dashboard => &voice.dashboard,
                })?;
                let subject = format!("Your wallet is below {threshold} credits");
                (voice, subject, text, None)
            }
            Topic::Invoice | Topic::CreditNote | Topic::InvoicePaid => {
                let document = invoices::get(conn, tenant, email.subject_id)?;
                let voice = match document.reseller {
                    Some(reseller) => match branding::get(conn, reseller)? {
                        Some(brand) => self.brand_voice(brand)?,
                        // A reseller without a brand signs with its name.
                        None => Voice {
                            name: document.issuer.clone(),
                            dashboard: None,
                            ..self.platform_voice()?
                        },
                    },
                    None => self.platform_voice()?,
                };
                let sheet = render::sheet_of(conn, &document, &self.platform)?;
                let number = sheet.number.clone();
                let subject = match topic {
                    Topic::Invoice => format!(
                        "Invoice {number} from {}: {} {}",
                        voice.name, sheet.total, sheet.currency
                    ),
                    Topic::CreditNote => format!("Credit note {number} from {}", voice.name),
                    _ => format!("Payment received for invoice {number}"),
                };
                let pdf = render::pdf(&sheet);
                let text = TEMPLATES.get_template("document")?.render(context! {
                    topic => topic.as_str(),
                    customer => &customer,
                    sender => &voice.name,
                    sheet => minijinja::value::Serde(&sheet),
                    support => &voice.support,
                    dashboard => &voice.dashboard,
                })?;
                (voice, subject, text, Some((format!("{number}.pdf"), pdf)))
            }
        };
        let to: Address = recipient.parse()?;
        let mut builder = Message::builder()
            .from(Mailbox::new(Some(voice.name.clone()), voice.from.clone()))
            .to(Mailbox::new(Some(customer), to.clone()))
            .subject(subject)
            // The same id on every attempt, so a receiver can tell a
            // resend from a new email.
            .message_id(Some(format!(
                "<{}.{}@{}>",
                email.topic,
                email.subject_id,
                voice.from.domain()
            )));
        if let Some(reply_to) = voice.reply_to {
            builder = builder.reply_to(Mailbox::new(Some(voice.name), reply_to));
        }
        let text = SinglePart::plain(text);
        let message = match attachment {
            None => builder.singlepart(text)?,
            Some((name, pdf)) => {
                builder.multipart(MultiPart::mixed().singlepart(text).singlepart(
                    Attachment::new(name).body(pdf, ContentType::parse("application/pdf")?),
                ))?
            }
        };
        Ok(Composed { to, message })
    }
}

/// Whether the server refused the platform's login or its security (530
/// to 538), not the email.
fn refused_login(error: &lettre::transport::smtp::Error) -> bool {
    error
        .status()
        .is_some_and(|code| code.to_string().starts_with("53"))
}

/// Whether the server was not reached at all (a refused connection, a
/// timeout, TLS): no reply, and no fault found in the email by the client.
fn unreachable(error: &lettre::transport::smtp::Error) -> bool {
    error.status().is_none() && !error.is_client() && !error.is_response()
}

/// After the `attempts`th refusal for now: a minute, doubling, at most an
/// hour.
fn backoff_us(attempts: i32) -> i64 {
    let minutes = 1_i64 << attempts.clamp(1, 7).saturating_sub(1);
    minutes.min(60) * 60 * 1_000_000
}

const DOCUMENT: &str = "\
Hello {{ customer }},

{% if topic == \"invoice\" -%}
{{ sender }} has issued invoice {{ sheet.number }} of {{ sheet.date }}, for {{ sheet.total }} {{ sheet.currency }}.
{%- elif topic == \"credit_note\" -%}
{{ sender }} has issued credit note {{ sheet.number }} of {{ sheet.date }}{% if sheet.credited_number %}, crediting invoice {{ sheet.credited_number }}{% endif %}, for {{ sheet.total }} {{ sheet.currency }}.
{%- else -%}
Thank you: invoice {{ sheet.number }}, for {{ sheet.total }} {{ sheet.currency }}, is paid.
{%- endif %}

{% for line in sheet.lines -%}
  {{ line.description }}: {{ line.quantity }} x {{ line.unit_price }} = {{ line.amount }}
{% endfor -%}
  Subtotal: {{ sheet.subtotal }}
  {{ sheet.tax_label }}: {{ sheet.tax }}
  Total: {{ sheet.total }} {{ sheet.currency }}

The document is attached as a PDF.{% if dashboard %} Your invoices are in your dashboard: {{ dashboard }}app/invoices{% endif %}
{% if support %}
Questions? Write to {{ support }}.
{% endif %}
{{ sender }}
";

const WALLET_ALERT: &str = "\
Hello {{ customer }},

Your wholesale wallet fell below {{ threshold }} credits: {{ balance }} credits were left at {{ at }} UTC.

When it can no longer cover a call's wholesale price, your tenants' calls are refused with reseller_balance_exhausted. Top it up with a credit package (POST /api/v1/resellers/{{ reseller }}/purchases) or ask us for a grant.{% if dashboard %}

{{ dashboard }}{% endif %}

{{ sender }}
";

/// The emails' templates, parsed once.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(templates);

fn templates() -> Environment<'static> {
    let mut environment = Environment::new();
    environment
        .add_template("document", DOCUMENT)
        .expect("the document email's template parses");
    environment
        .add_template("wallet_alert", WALLET_ALERT)
        .expect("the wallet alert's template parses");
    environment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_to_an_hour() {
        let minutes: Vec<i64> = (1..=9).map(|n| backoff_us(n) / 60_000_000).collect();
        assert_eq!(minutes, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn every_topic_reads_back() {
        for topic in [
            Topic::Invoice,
            Topic::CreditNote,
            Topic::InvoicePaid,
            Topic::WalletAlert,
        ] {
            assert_eq!(Topic::parse(topic.as_str()), Some(topic));
        }
        assert_eq!(Topic::parse("newsletter"), None);
    }
}
