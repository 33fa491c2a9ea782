//! Payments through payment-provider plugins: the ways a tenant saved to
//! pay, invoices paid with them, the providers' notifications, and the
//! collection of renewals with its dunning schedule.
//!
//! - A **payment method** holds the provider's token only (a card's
//!   `pm_...`, never its number) and names the provider plugin that knows it.
//! - **Paying** an open invoice writes a `processing` payment (at most one
//!   payment under way or taken per invoice, by a unique index), asks the
//!   provider through the meter with the merchant's settings and the
//!   idempotency key `tollgate-payment-{id}`, and records its answer:
//!   `succeeded` settles the invoice (grants what it bought), `pending`
//!   waits for a notification or an operator (a bank transfer), `failed`
//!   keeps the reason.
//! - A **notification** is verified and parsed by the provider plugin (a
//!   bad signature is refused before anything is read). Each event moves a
//!   payment forward only: a success is final, so a failure that arrives
//!   after it (out of order) changes nothing; settling is idempotent (the
//!   ledger ids of grants are made from what they pay for), so a replayed
//!   or duplicated event grants nothing twice. Events are kept by the
//!   provider's event id.
//! - **Collection**: a renewal's invoice gets a `collections` row, and
//!   [`Payments::collect_due`] charges the tenant's default payment method.
//!   When that fails the subscription is `past_due` and the next attempt is
//!   scheduled after the configured days; when the last one fails the
//!   invoice is uncollectible and the subscription canceled. A host claims
//!   an attempt by clearing its time in one conditional update, so two
//!   hosts never charge the same attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::invoices::{self, InvoiceError};
use super::purchases::{self, Purchase, PurchaseError};
use super::subscriptions::{Subscription, SubscriptionError, Subscriptions};
use crate::db::schema::{
    collections, grants, payment_events, payment_methods, payments, subscription_changes,
    subscription_periods,
};
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{Command, Ledger, LedgerError, TransferId};
use crate::metering::{self, Meter, MeterError, Settings};
use crate::runtime::{
    self, Call, CallError, Callback, ErrorKind, PaymentEventKind, PaymentRequest, RefundRequest,
    Reply,
};
use crate::units::{Clock, Credits, Timestamp};

mod refund;

pub use refund::Refund;

/// Longest provider token, label or failure reason kept, in bytes.
const TOKEN_BYTES_MAX: usize = 200;
const LABEL_BYTES_MAX: usize = 100;
const REASON_BYTES_MAX: usize = 500;

/// Payment methods one tenant may keep at once.
const METHODS_PER_TENANT_MAX: i64 = 20;

/// Events one notification may carry that are acted on.
const EVENTS_PER_NOTIFICATION_MAX: usize = 100;

/// Collections one `collect_due` attempts at most.
const COLLECTIONS_PER_RUN_MAX: i64 = 100;

/// Payments one listing returns at most.
pub const PAYMENTS_PAGE_MAX: i64 = 100;

const DAY_US: i64 = 86_400_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    Card,
    Paypal,
    BankTransfer,
}

impl MethodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Card => "card",
            MethodKind::Paypal => "paypal",
            MethodKind::BankTransfer => "bank_transfer",
        }
    }

    pub fn parse(text: &str) -> Option<MethodKind> {
        match text {
            "card" => Some(MethodKind::Card),
            "paypal" => Some(MethodKind::Paypal),
            "bank_transfer" => Some(MethodKind::BankTransfer),
            _ => None,
        }
    }

    fn wire(self) -> runtime::Method {
        match self {
            MethodKind::Card => runtime::Method::Card,
            MethodKind::Paypal => runtime::Method::Paypal,
            MethodKind::BankTransfer => runtime::Method::BankTransfer,
        }
    }
}

/// A way the tenant saved to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMethod {
    pub id: i64,
    pub tenant: TenantId,
    pub provider: String,
    pub method: MethodKind,
    pub label: String,
    pub is_default: bool,
    pub created_at: Timestamp,
}

/// A payment method to save.
#[derive(Clone, Debug)]
pub struct NewMethod {
    pub provider: String,
    pub method: MethodKind,
    /// The provider's token; empty for a bank transfer.
    pub token: String,
    pub label: Option<String>,
    /// Make it the one renewals charge (the first method always is).
    pub make_default: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentState {
    Processing,
    Pending,
    Succeeded,
    Failed,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Processing => "processing",
            PaymentState::Pending => "pending",
            PaymentState::Succeeded => "succeeded",
            PaymentState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> PaymentState {
        match text {
            "pending" => PaymentState::Pending,
            "succeeded" => PaymentState::Succeeded,
            "failed" => PaymentState::Failed,
            _ => PaymentState::Processing,
        }
    }
}

/// One attempt to collect an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: i64,
    pub tenant: TenantId,
    pub invoice: i64,
    pub payment_method: i64,
    pub provider: String,
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub provider_reference: Option<String>,
    pub failure_reason: Option<String>,
    pub instructions: Option<String>,
    pub created_at: Timestamp,
    pub settled_at: Option<Timestamp>,
}

/// What paying an invoice bought.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    Purchase(Purchase),
    Subscription(Subscription),
}

/// What a provider's notification did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notified {
    /// Events the notification carried.
    pub events: usize,
    /// Events seen before (a replay), which changed nothing.
    pub duplicates: usize,
    /// Events that moved a payment forward.
    pub applied: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(
        "there is no payment provider {0:?}: the operator configures providers under [payments.providers] in tollgate.toml"
    )]
    UnknownProvider(String),
    #[error("{0}")]
    InvalidMethod(String),
    #[error("no payment method {0} of this tenant; GET /api/v1/billing/payment-methods lists them")]
    MethodNotFound(i64),
    #[error("a tenant may keep {METHODS_PER_TENANT_MAX} payment methods; remove one first")]
    TooManyMethods,
    #[error("invoice {invoice} is {state}, not open, so there is nothing to pay")]
    NotPayable { invoice: i64, state: String },
    #[error(
        "invoice {invoice} already has a payment that is {state} (payment {payment}); wait for its outcome"
    )]
    AlreadyPaying {
        invoice: i64,
        payment: i64,
        state: &'static str,
    },
    #[error("no payment {0} of this tenant")]
    PaymentNotFound(i64),
    #[error("payment {payment} is {state}; only a succeeded payment can be refunded")]
    NotRefundable { payment: i64, state: &'static str },
    #[error("payment {payment} was already refunded (refund {refund}, {state})")]
    AlreadyRefunded {
        payment: i64,
        refund: i64,
        state: String,
    },
    #[error("the provider refused the refund: {0}")]
    RefundFailed(String),
    #[error("the notification was refused: {0}")]
    Forged(String),
    #[error("the notification could not be read: {0}")]
    BadNotification(String),
    #[error("the payment provider could not be called: {0}")]
    Meter(#[from] MeterError),
    #[error(transparent)]
    Invoice(#[from] InvoiceError),
    #[error(transparent)]
    Purchase(#[from] PurchaseError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error("{0:#}")]
    Pool(#[from] anyhow::Error),
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = payment_methods)]
struct MethodRow {
    id: i64,
    tenant_id: i64,
    provider: String,
    method: String,
    token: String,
    label: String,
    is_default: bool,
    created_at: i64,
}

impl MethodRow {
    fn public(&self) -> PaymentMethod {
        PaymentMethod {
            id: self.id,
            tenant: TenantId(self.tenant_id),
            provider: self.provider.clone(),
            method: MethodKind::parse(&self.method).unwrap_or(MethodKind::Card),
            label: self.label.clone(),
            is_default: self.is_default,
            created_at: Timestamp::from_micros(self.created_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = payments)]
struct PaymentRow {
    id: i64,
    tenant_id: i64,
    invoice_id: i64,
    payment_method_id: i64,
    provider: String,
    amount_minor: i64,
    currency: String,
    state: String,
    provider_reference: Option<String>,
    failure_reason: Option<String>,
    instructions: Option<String>,
    created_at: i64,
    settled_at: Option<i64>,
}

impl PaymentRow {
    fn into_payment(self) -> Payment {
        Payment {
            id: self.id,
            tenant: TenantId(self.tenant_id),
            invoice: self.invoice_id,
            payment_method: self.payment_method_id,
            provider: self.provider,
            amount_minor: self.amount_minor,
            currency: self.currency,
            state: PaymentState::parse(&self.state),
            provider_reference: self.provider_reference,
            failure_reason: self.failure_reason,
            instructions: self.instructions,
            created_at: Timestamp::from_micros(self.created_at),
            settled_at: self.settled_at.map(Timestamp::from_micros),
        }
    }
}

/// Whether `token` could be a card number (12 to 19 digits, spaces and
/// dashes aside): those are never stored.
fn looks_like_card_number(token: &str) -> bool {
    let digits: Vec<char> = token.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (12..=19).contains(&digits.len()) && digits.iter().all(char::is_ascii_digit)
}

fn validate(new: &NewMethod) -> Result<(), PaymentError> {
    let invalid = |message: String| Err(PaymentError::InvalidMethod(message));
    if new.token.len() > TOKEN_BYTES_MAX {
        return invalid(format!(
            "token: at most {TOKEN_BYTES_MAX} bytes (a provider's token, such as pm_...)"
        ));
    }
    if new
        .token
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
        && !new.token.is_empty()
    {
        if looks_like_card_number(&new.token) {
            return invalid(card_number_refused());
        }
        return invalid("token: no spaces or control characters".into());
    }
    if looks_like_card_number(&new.token) {
        return invalid(card_number_refused());
    }
    match (new.method, new.token.is_empty()) {
        (MethodKind::BankTransfer, false) => {
            return invalid("token: a bank transfer has none; leave it out".into());
        }
        (MethodKind::Card | MethodKind::Paypal, true) => {
            return invalid(format!(
                "token: a {} payment method needs the provider's token for it",
                new.method.as_str()
            ));
        }
        _ => {}
    }
    if let Some(label) = &new.label
        && (label.trim().is_empty() || label.len() > LABEL_BYTES_MAX)
    {
        return invalid(format!("label: 1 to {LABEL_BYTES_MAX} bytes, not blank"));
    }
    Ok(())
}

fn card_number_refused() -> String {
    "token: this looks like a card number, which Tollgate never stores; save the token the provider's checkout gives instead".into()
}

fn clipped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The payments of one host.
pub struct Payments {
    pub database: Database,
    pub ledger: Ledger,
    pub meter: Arc<Meter>,
    pub subscriptions: Arc<Subscriptions>,
    /// The merchant's settings for each configured provider plugin.
    pub providers: Arc<BTreeMap<String, Arc<Settings>>>,
    /// Days after each failed collection attempt to try again.
    pub dunning_retry_days: Vec<u32>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("dunning_retry_days", &self.dunning_retry_days)
            .finish_non_exhaustive()
    }
}

impl Payments {
    /// The payments of a host whose subscriptions are `subscriptions`
    /// (their database, ledger and clock), with `[payments]` from
    /// `tollgate.toml`.
    pub fn new(
        meter: Arc<Meter>,
        subscriptions: Arc<Subscriptions>,
        settings: &crate::config::PaymentSettings,
    ) -> Payments {
        Payments {
            database: subscriptions.database.clone(),
            ledger: subscriptions.ledger.clone(),
            meter,
            providers: Arc::new(
                settings
                    .providers
                    .iter()
                    .map(|(name, values)| (name.clone(), Arc::new(values.clone())))
                    .collect(),
            ),
            dunning_retry_days: settings.dunning_retry_days.clone(),
            clock: subscriptions.clock.clone(),
            subscriptions,
        }
    }

    fn provider(&self, name: &str) -> Result<Arc<Settings>, PaymentError> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| PaymentError::UnknownProvider(name.to_owned()))
    }

    /// Saves a payment method for the tenant.
    pub fn add_method(
        &self,
        tenant: TenantId,
        new: &NewMethod,
    ) -> Result<PaymentMethod, PaymentError> {
        self.provider(&new.provider)?;
        validate(new)?;
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        db::write_transaction(&mut conn, |conn| {
            let live = live_methods(conn, tenant)?;
            if live.len() as i64 >= METHODS_PER_TENANT_MAX {
                return Err(PaymentError::TooManyMethods);
            }
            let make_default = new.make_default || live.iter().all(|row| !row.is_default);
            if make_default {
                clear_default(conn, tenant)?;
            }
            let label = new.label.clone().unwrap_or_else(|| {
                let tail: String = new
                    .token
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                match new.method {
                    MethodKind::BankTransfer => format!("bank transfer via {}", new.provider),
                    _ => format!("{} …{tail} via {}", new.method.as_str(), new.provider),
                }
            });
            let id: i64 = diesel::insert_into(payment_methods::table)
                .values((
                    payment_methods::tenant_id.eq(tenant.0),
                    payment_methods::provider.eq(&new.provider),
                    payment_methods::method.eq(new.method.as_str()),
                    payment_methods::token.eq(&new.token),
                    payment_methods::label.eq(&label),
                    payment_methods::is_default.eq(make_default),
                    payment_methods::created_at.eq(now.micros()),
                ))
                .returning(payment_methods::id)
                .get_result(conn)?;
            Ok(method_row(conn, tenant, id)?.public())
        })
    }

    /// The tenant's payment methods, oldest first.
    pub fn methods(&self, tenant: TenantId) -> Result<Vec<PaymentMethod>, PaymentError> {
        let mut conn = self.database.get()?;
        Ok(live_methods(&mut conn, tenant)?
            .iter()
            .map(MethodRow::public)
            .collect())
    }

    /// Removes a payment method; when it was the default, the newest one
    /// left becomes the default.
    pub fn remove_method(&self, tenant: TenantId, id: i64) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        db::write_transaction(&mut conn, |conn| {
            let row = method_row(conn, tenant, id)?;
            diesel::update(payment_methods::table.find(id))
                .set((
                    payment_methods::removed_at.eq(now.micros()),
                    payment_methods::is_default.eq(false),
                ))
                .execute(conn)?;
            if row.is_default
                && let Some(newest) = live_methods(conn, tenant)?.last()
            {
                diesel::update(payment_methods::table.find(newest.id))
                    .set(payment_methods::is_default.eq(true))
                    .execute(conn)?;
            }
            Ok(())
        })
    }

    /// Pays the tenant's open invoice with one of its payment methods.
    /// Returns the payment as the provider left it: succeeded (what the
    /// invoice bought is granted), pending (with what the customer must
    /// do), or failed (with the reason). A call the meter refused (the
    /// provider is not installed, the call cannot be afforded) fails the
    /// payment and is returned as an error.
    pub fn pay(
        &self,
        tenant: TenantId,
        invoice: i64,
        method: i64,
    ) -> Result<Payment, PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let (payment, method, number) = db::write_transaction(&mut conn, |conn| {
            let method = method_row(conn, tenant, method)?;
            let document = invoices::get(conn, tenant, invoice)?;
            if document.kind != invoices::Kind::Invoice || document.state != invoices::State::Open {
                return Err(PaymentError::NotPayable {
                    invoice,
                    state: document.state.as_str().to_owned(),
                });
            }
            if let Some(live) = live_payment(conn, invoice)? {
                return Err(PaymentError::AlreadyPaying {
                    invoice,
                    payment: live.id,
                    state: live.state.as_str(),
                });
            }
            let inserted = diesel::insert_into(payments::table)
                .values((
                    payments::tenant_id.eq(tenant.0),
                    payments::invoice_id.eq(invoice),
                    payments::payment_method_id.eq(method.id),
                    payments::provider.eq(&method.provider),
                    payments::amount_minor.eq(document.totals.total_minor),
                    payments::currency.eq(&document.currency),
                    payments::state.eq(PaymentState::Processing.as_str()),
                    payments::created_at.eq(now.micros()),
                ))
                .returning(payments::id)
                .get_result::<i64>(conn);
            let id = match inserted {
                Ok(id) => id,
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    return Err(PaymentError::AlreadyPaying {
                        invoice,
                        payment: 0,
                        state: "under way",
                    });
                }
                Err(error) => return Err(error.into()),
            };
            let number = document.display_number().unwrap_or_default();
            Ok((payment_row(conn, id)?, method, number))
        })?;
        drop(conn);
        let settings = match self.provider(&method.provider) {
            Ok(settings) => settings,
            Err(error) => {
                self.failed(payment.id, None, &error.to_string())?;
                return Err(error);
            }
        };
        let key = format!("tollgate-payment-{}", payment.id);
        let request = metering::Request {
            tenant,
            plugin: method.provider.clone(),
            call: Call::CreatePayment(PaymentRequest {
                amount_minor: payment.amount_minor as u64,
                currency: payment.currency.clone(),
                method: MethodKind::parse(&method.method)
                    .unwrap_or(MethodKind::Card)
                    .wire(),
                payment_method_token: (!method.token.is_empty()).then(|| method.token.clone()),
                customer_reference: format!("tenant-{}", tenant.0),
                description: format!("Invoice {number}"),
                idempotency_key: key.clone(),
            }),
            idempotency_key: Some(key),
        };
        let metered = match self.meter.invoke_as_merchant(request, settings) {
            Ok(metered) => metered,
            // Refused before the provider was asked: nothing was taken.
            Err(
                error @ (MeterError::NotEnabled(_)
                | MeterError::WrongFunction { .. }
                | MeterError::Unpriced(_)
                | MeterError::InsufficientCredits { .. }
                | MeterError::ResellerBalanceExhausted { .. }
                | MeterError::Suspended
                | MeterError::PricingRule { .. }
                | MeterError::Plugin(_)),
            ) => {
                self.failed(payment.id, None, &error.to_string())?;
                return Err(error.into());
            }
            // The provider may have been asked and may have taken the
            // money: the payment stays under way, so no new attempt (with a
            // new key) can charge twice; its outcome comes from the
            // provider or the operator.
            Err(error) => return Err(error.into()),
        };
        match metered.result {
            Ok(Reply::Payment(answer)) => {
                let reference = Some(answer.provider_reference.as_str());
                match answer.status {
                    runtime::PaymentStatus::Succeeded => {
                        self.succeeded(payment.id, reference)?;
                    }
                    runtime::PaymentStatus::Pending => {
                        let mut conn = self.database.get()?;
                        diesel::update(payments::table.find(payment.id))
                            .filter(payments::state.eq(PaymentState::Processing.as_str()))
                            .set((
                                payments::state.eq(PaymentState::Pending.as_str()),
                                payments::provider_reference.eq(reference),
                                payments::instructions.eq(answer
                                    .instructions
                                    .as_deref()
                                    .map(|text| clipped(text, REASON_BYTES_MAX))),
                            ))
                            .execute(&mut conn)?;
                    }
                    runtime::PaymentStatus::Failed => {
                        let reason = answer
                            .failure_reason
                            .unwrap_or_else(|| "declined by the provider".into());
                        self.failed(payment.id, reference, &reason)?;
                    }
                }
            }
            Ok(_) => {
                self.failed(
                    payment.id,
                    None,
                    "the provider answered with something other than a payment",
                )?;
            }
            // The plugin's own report: the provider refused, or was not
            // reached.
            Err(CallError::Plugin { error, .. }) => {
                self.failed(payment.id, None, &error.message)?;
            }
            // Stopped mid-call (time, fuel, a trap): the provider may have
            // taken the money, so the payment stays under way (see above).
            Err(error) => {
                tracing::warn!(payment = payment.id, %error, "a payment's outcome is unknown; it waits for the provider or an operator");
            }
        }
        let mut conn = self.database.get()?;
        payment_row(&mut conn, payment.id)
    }

    /// Marks a payment that is under way or pending failed.
    fn failed(
        &self,
        payment: i64,
        reference: Option<&str>,
        reason: &str,
    ) -> Result<bool, PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let row = payment_row(&mut conn, payment)?;
        // The reference is kept when this answer has none: a success the
        // provider reports later finds the payment by it.
        let reference = reference.or(row.provider_reference.as_deref());
        let changed = diesel::update(payments::table.find(payment))
            .filter(payments::state.eq_any([
                PaymentState::Processing.as_str(),
                PaymentState::Pending.as_str(),
            ]))
            .set((
                payments::state.eq(PaymentState::Failed.as_str()),
                payments::provider_reference.eq(reference),
                payments::failure_reason.eq(clipped(reason, REASON_BYTES_MAX)),
                payments::settled_at.eq(now.micros()),
            ))
            .execute(&mut conn)?;
        // Whether this call moved it: of two reports of one failure, one.
        Ok(changed == 1)
    }

    /// Marks a payment succeeded (whatever it was before: the provider's
    /// word that the money arrived is final) and settles its invoice.
    fn succeeded(&self, payment: i64, reference: Option<&str>) -> Result<Settled, PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let row = payment_row(&mut conn, payment)?;
        if row.state != PaymentState::Succeeded {
            let updated = diesel::update(payments::table.find(payment))
                .set((
                    payments::state.eq(PaymentState::Succeeded.as_str()),
                    payments::provider_reference
                        .eq(reference.or(row.provider_reference.as_deref())),
                    payments::failure_reason.eq(None::<String>),
                    payments::settled_at.eq(now.micros()),
                ))
                .execute(&mut conn);
            match updated {
                Ok(_) => {}
                // Another payment of the invoice is under way or taken: the
                // provider took this one too (a failure reported, then a
                // late success). It stays as it was, for the operator to
                // refund at the provider; the invoice is settled once.
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    tracing::error!(
                        payment,
                        invoice = row.invoice,
                        "the provider took a second payment for an invoice; refund it at the provider"
                    );
                }
                Err(error) => return Err(error.into()),
            }
        }
        drop(conn);
        self.settle_invoice(row.tenant, row.invoice)
    }

    /// Records that the tenant's invoice was paid and grants what it
    /// bought: a credit package's credits, or a subscription period's
    /// allowance (or an upgrade's difference). Idempotent: a second notice
    /// grants nothing more.
    pub fn settle_invoice(&self, tenant: TenantId, invoice: i64) -> Result<Settled, PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let settled = match purchases::of_invoice(&mut conn, tenant, invoice)? {
            Some(purchase) => {
                Settled::Purchase(purchases::paid(&mut conn, &self.ledger, &purchase, now)?)
            }
            None => {
                drop(conn);
                let subscription = self.subscriptions.invoice_paid(tenant, invoice)?;
                conn = self.database.get()?;
                Settled::Subscription(subscription)
            }
        };
        diesel::update(collections::table.find(invoice))
            .set((
                collections::state.eq("paid"),
                collections::next_attempt_at.eq(None::<i64>),
            ))
            .execute(&mut conn)?;
        Ok(settled)
    }

    /// An operator records that an invoice was paid outside a provider's
    /// notification (a bank transfer arrived): its pending payment, if it
    /// has one, succeeds, and the invoice is settled.
    pub fn record_received(&self, tenant: TenantId, invoice: i64) -> Result<Settled, PaymentError> {
        let mut conn = self.database.get()?;
        // The invoice must be the tenant's (else not found).
        invoices::get(&mut conn, tenant, invoice)?;
        match live_payment(&mut conn, invoice)? {
            Some(payment) if payment.state != PaymentState::Succeeded => {
                drop(conn);
                self.succeeded(payment.id, None)
            }
            _ => {
                drop(conn);
                self.settle_invoice(tenant, invoice)
            }
        }
    }

    /// A succeeded payment, the invoice it paid and the label of the
    /// method that paid it: what a receipt shows.
    pub fn receipt(
        &self,
        tenant: TenantId,
        payment: i64,
    ) -> Result<(Payment, invoices::Document, String), PaymentError> {
        let mut conn = self.database.get()?;
        let found = payments::table
            .find(payment)
            .filter(payments::tenant_id.eq(tenant.0))
            .filter(payments::state.eq(PaymentState::Succeeded.as_str()))
            .select(PaymentRow::as_select())
            .first(&mut conn)
            .optional()?
            .ok_or(PaymentError::PaymentNotFound(payment))?
            .into_payment();
        let invoice = invoices::get(&mut conn, tenant, found.invoice)?;
        let label: String = payment_methods::table
            .find(found.payment_method)
            .select(payment_methods::label)
            .first(&mut conn)?;
        Ok((found, invoice, label))
    }

    /// The tenant's payments, newest first.
    pub fn list(&self, tenant: TenantId) -> Result<Vec<Payment>, PaymentError> {
        let mut conn = self.database.get()?;
        Ok(payments::table
            .filter(payments::tenant_id.eq(tenant.0))
            .order(payments::id.desc())
            .limit(PAYMENTS_PAGE_MAX)
            .select(PaymentRow::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(PaymentRow::into_payment)
            .collect())
    }

    /// Handles a notification a provider sent: verified and parsed by its
    /// plugin, then each event applied once.
    pub fn notify(&self, provider: &str, callback: Callback) -> Result<Notified, PaymentError> {
        let settings = self.provider(provider)?;
        let events = match self.meter.invoke_for_platform(
            provider,
            Call::PaymentCallback(callback),
            &settings,
        )? {
            Ok(Reply::PaymentEvents(events)) => events.events,
            Ok(_) => {
                return Err(PaymentError::BadNotification(
                    "the provider answered with something other than events".into(),
                ));
            }
            Err(CallError::Plugin { error, .. }) if error.kind == ErrorKind::Unauthorized => {
                return Err(PaymentError::Forged(error.message));
            }
            Err(CallError::Plugin { error, .. }) => {
                return Err(PaymentError::BadNotification(error.message));
            }
            Err(error) => return Err(PaymentError::BadNotification(error.to_string())),
        };
        let mut notified = Notified {
            events: events.len(),
            ..Notified::default()
        };
        for event in events.into_iter().take(EVENTS_PER_NOTIFICATION_MAX) {
            let mut conn = self.database.get()?;
            let seen = payment_events::table
                .find((provider, &event.event_id))
                .count()
                .get_result::<i64>(&mut conn)?
                > 0;
            if seen {
                notified.duplicates += 1;
                continue;
            }
            let payment: Option<Payment> = payments::table
                .filter(payments::provider.eq(provider))
                .filter(payments::provider_reference.eq(&event.provider_reference))
                .select(PaymentRow::as_select())
                .first(&mut conn)
                .optional()?
                .map(PaymentRow::into_payment);
            drop(conn);
            if let Some(payment) = &payment {
                let applied = match event.kind {
                    // A refund implies the payment had succeeded.
                    PaymentEventKind::Succeeded => {
                        self.succeeded(payment.id, None)?;
                        true
                    }
                    // A refund made at the provider, outside Tollgate: it
                    // settles nothing and grants nothing; the operator
                    // refunds through Tollgate to take the credits back.
                    PaymentEventKind::Refunded => {
                        tracing::warn!(
                            provider,
                            payment = payment.id,
                            "the provider reports a refund Tollgate did not make"
                        );
                        false
                    }
                    PaymentEventKind::Failed => match payment.state {
                        PaymentState::Processing | PaymentState::Pending => {
                            let reason = event
                                .failure_reason
                                .clone()
                                .unwrap_or_else(|| "the provider reported a failure".into());
                            let moved = self.failed(payment.id, None, &reason)?;
                            if moved {
                                self.collection_failed(payment.invoice, &reason)?;
                            }
                            moved
                        }
                        // A success is final: a failure reported after it
                        // arrived out of order.
                        PaymentState::Succeeded | PaymentState::Failed => false,
                    },
                };
                notified.applied += usize::from(applied);
            } else {
                tracing::warn!(
                    provider,
                    reference = %event.provider_reference,
                    "a notification named a payment this platform does not know"
                );
            }
            // Kept once the event is applied: applying is idempotent, so a
            // crash in between only means it is applied again.
            let mut conn = self.database.get()?;
            let kind = match event.kind {
                PaymentEventKind::Succeeded => "succeeded",
                PaymentEventKind::Failed => "failed",
                PaymentEventKind::Refunded => "refunded",
            };
            let kept = diesel::insert_into(payment_events::table)
                .values((
                    payment_events::provider.eq(provider),
                    payment_events::event_id.eq(clipped(&event.event_id, TOKEN_BYTES_MAX)),
                    payment_events::kind.eq(kind),
                    payment_events::provider_reference
                        .eq(clipped(&event.provider_reference, TOKEN_BYTES_MAX)),
                    payment_events::payment_id.eq(payment.as_ref().map(|payment| payment.id)),
                    payment_events::received_at.eq(self.clock.now().micros()),
                ))
                .execute(&mut conn);
            match kept {
                // Another host applied the same event at the same moment.
                Ok(_) | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(notified)
    }

    /// Charges the default payment method for every renewal invoice whose
    /// next attempt is due. Returns how many attempts it made.
    pub fn collect_due(&self) -> Result<usize, PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let due: Vec<(i64, i64, i64)> = collections::table
            .filter(collections::state.eq("collecting"))
            .filter(collections::next_attempt_at.le(now.micros()))
            .select((
                collections::invoice_id,
                collections::tenant_id,
                collections::next_attempt_at.assume_not_null(),
            ))
            .order(collections::next_attempt_at)
            .limit(COLLECTIONS_PER_RUN_MAX)
            .load(&mut conn)?;
        let mut attempts = 0;
        for (invoice, tenant, at) in due {
            // Claim the attempt: of several hosts, one clears its time.
            let claimed = diesel::update(collections::table.find(invoice))
                .filter(collections::next_attempt_at.eq(at))
                .filter(collections::state.eq("collecting"))
                .set(collections::next_attempt_at.eq(None::<i64>))
                .execute(&mut conn)?;
            if claimed == 0 {
                continue;
            }
            attempts += 1;
            let tenant = TenantId(tenant);
            let method: Option<i64> = payment_methods::table
                .filter(payment_methods::tenant_id.eq(tenant.0))
                .filter(payment_methods::removed_at.is_null())
                .filter(payment_methods::is_default.eq(true))
                .select(payment_methods::id)
                .first(&mut conn)
                .optional()?;
            let Some(method) = method else {
                self.collection_failed(invoice, "no saved payment method")?;
                continue;
            };
            match self.pay(tenant, invoice, method) {
                Ok(payment) => match payment.state {
                    PaymentState::Succeeded => {}
                    PaymentState::Pending | PaymentState::Processing => {
                        diesel::update(collections::table.find(invoice))
                            .set(collections::state.eq("pending"))
                            .execute(&mut conn)?;
                    }
                    PaymentState::Failed => self.collection_failed(
                        invoice,
                        payment.failure_reason.as_deref().unwrap_or("failed"),
                    )?,
                },
                // Paid meanwhile (by the tenant, or a notification).
                Err(PaymentError::NotPayable { .. }) => {}
                Err(PaymentError::AlreadyPaying { .. }) => {
                    diesel::update(collections::table.find(invoice))
                        .set(collections::state.eq("pending"))
                        .execute(&mut conn)?;
                }
                Err(error) => match live_payment(&mut conn, invoice)? {
                    // The provider may have taken the money before the
                    // error: a new attempt could charge twice, so the
                    // outcome waits for its notification or an operator.
                    Some(payment) if payment.state == PaymentState::Processing => {
                        tracing::warn!(invoice, payment = payment.id, %error, "a renewal's payment has no known outcome");
                        diesel::update(collections::table.find(invoice))
                            .set(collections::state.eq("pending"))
                            .execute(&mut conn)?;
                    }
                    // Paid after all (a notification settled it meanwhile).
                    Some(payment) if payment.state == PaymentState::Succeeded => {}
                    _ => self.collection_failed(invoice, &error.to_string())?,
                },
            }
        }
        Ok(attempts)
    }

    /// Finishes what a stopped host left half done: invoices paid whose
    /// purchase, period or upgrade was not yet granted, and payments that
    /// succeeded whose invoice was not yet settled. Settling is idempotent,
    /// so running this on several hosts at once grants nothing twice.
    /// Returns how many invoices it settled.
    pub fn settle_paid(&self) -> Result<usize, PaymentError> {
        use crate::db::schema::{invoices as invoice_rows, purchases, subscriptions};
        let mut conn = self.database.get()?;
        let paid = invoices::State::Paid.as_str();
        let mut owed: Vec<(i64, i64)> = purchases::table
            .inner_join(invoice_rows::table.on(invoice_rows::id.eq(purchases::invoice_id)))
            .filter(purchases::granted.eq(false))
            .filter(invoice_rows::state.eq(paid))
            .select((purchases::tenant_id, purchases::invoice_id))
            .limit(COLLECTIONS_PER_RUN_MAX)
            .load(&mut conn)?;
        owed.extend(
            subscription_periods::table
                .inner_join(subscriptions::table)
                .inner_join(
                    invoice_rows::table.on(invoice_rows::id.eq(subscription_periods::invoice_id)),
                )
                .filter(subscription_periods::granted.eq(false))
                .filter(invoice_rows::state.eq(paid))
                .select((subscriptions::tenant_id, subscription_periods::invoice_id))
                .limit(COLLECTIONS_PER_RUN_MAX)
                .load::<(i64, i64)>(&mut conn)?,
        );
        owed.extend(
            subscription_changes::table
                .inner_join(subscriptions::table)
                .inner_join(
                    invoice_rows::table.on(invoice_rows::id.eq(subscription_changes::invoice_id)),
                )
                .filter(subscription_changes::granted.eq(false))
                .filter(invoice_rows::state.eq(paid))
                .select((subscriptions::tenant_id, subscription_changes::invoice_id))
                .limit(COLLECTIONS_PER_RUN_MAX)
                .load::<(i64, i64)>(&mut conn)?,
        );
        // Payments taken whose invoice is still open.
        owed.extend(
            payments::table
                .inner_join(invoice_rows::table.on(invoice_rows::id.eq(payments::invoice_id)))
                .filter(payments::state.eq(PaymentState::Succeeded.as_str()))
                .filter(invoice_rows::state.eq(invoices::State::Open.as_str()))
                .select((payments::tenant_id, payments::invoice_id))
                .limit(COLLECTIONS_PER_RUN_MAX)
                .load::<(i64, i64)>(&mut conn)?,
        );
        drop(conn);
        for (tenant, invoice) in &owed {
            self.settle_invoice(TenantId(*tenant), *invoice)?;
        }
        Ok(owed.len())
    }

    /// A collection attempt failed: the subscription is past due and the
    /// next attempt scheduled, or, after the last retry, the invoice is
    /// uncollectible and the subscription canceled.
    fn collection_failed(&self, invoice: i64, reason: &str) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let Some((tenant, subscription, failures)) = collections::table
            .find(invoice)
            .filter(collections::state.eq_any(["collecting", "pending"]))
            .select((
                collections::tenant_id,
                collections::subscription_id,
                collections::failures,
            ))
            .first::<(i64, i64, i32)>(&mut conn)
            .optional()?
        else {
            return Ok(());
        };
        let counted = failures;
        let failures = failures + 1;
        tracing::info!(invoice, failures, reason, "collecting a renewal failed");
        // Counted once: of two reports of one failure (or two hosts), the
        // update that still finds the count it read moves it on.
        let unchanged = collections::table
            .find(invoice)
            .filter(collections::failures.eq(counted))
            .filter(collections::state.eq_any(["collecting", "pending"]));
        match self.dunning_retry_days.get(failures as usize - 1) {
            Some(days) => {
                let moved = diesel::update(unchanged)
                    .set((
                        collections::failures.eq(failures),
                        collections::state.eq("collecting"),
                        collections::next_attempt_at.eq(now.micros() + i64::from(*days) * DAY_US),
                    ))
                    .execute(&mut conn)?;
                if moved == 0 {
                    return Ok(());
                }
                drop(conn);
                self.subscriptions.mark_past_due(subscription)?;
            }
            None => {
                let moved = diesel::update(unchanged)
                    .set((
                        collections::failures.eq(failures),
                        collections::state.eq("abandoned"),
                        collections::next_attempt_at.eq(None::<i64>),
                    ))
                    .execute(&mut conn)?;
                if moved == 0 {
                    return Ok(());
                }
                let tenant = TenantId(tenant);
                if invoices::get(&mut conn, tenant, invoice)?.state == invoices::State::Open {
                    invoices::mark_uncollectible(&mut conn, tenant, invoice, now)?;
                }
                drop(conn);
                self.subscriptions.end_unpaid(subscription)?;
            }
        }
        Ok(())
    }
}

/// Writes a collection for a renewal's invoice, first attempt `at`.
pub fn schedule_collection(
    conn: &mut DbConnection,
    tenant: TenantId,
    subscription: i64,
    invoice: i64,
    at: Timestamp,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(collections::table)
        .values((
            collections::invoice_id.eq(invoice),
            collections::tenant_id.eq(tenant.0),
            collections::subscription_id.eq(subscription),
            collections::failures.eq(0),
            collections::next_attempt_at.eq(at.micros()),
            collections::state.eq("collecting"),
        ))
        .execute(conn)?;
    Ok(())
}

fn live_methods(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Vec<MethodRow>, diesel::result::Error> {
    payment_methods::table
        .filter(payment_methods::tenant_id.eq(tenant.0))
        .filter(payment_methods::removed_at.is_null())
        .order(payment_methods::id)
        .select(MethodRow::as_select())
        .load(conn)
}

fn clear_default(conn: &mut DbConnection, tenant: TenantId) -> Result<(), diesel::result::Error> {
    diesel::update(payment_methods::table)
        .filter(payment_methods::tenant_id.eq(tenant.0))
        .filter(payment_methods::is_default.eq(true))
        .set(payment_methods::is_default.eq(false))
        .execute(conn)?;
    Ok(())
}

fn method_row(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
) -> Result<MethodRow, PaymentError> {
    payment_methods::table
        .find(id)
        .filter(payment_methods::tenant_id.eq(tenant.0))
        .filter(payment_methods::removed_at.is_null())
        .select(MethodRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(PaymentError::MethodNotFound(id))
}

fn payment_row(conn: &mut DbConnection, id: i64) -> Result<Payment, PaymentError> {
    Ok(payments::table
        .find(id)
        .select(PaymentRow::as_select())
        .first(conn)?
        .into_payment())
}

/// The invoice's payment that is under way or taken, if any.
fn live_payment(conn: &mut DbConnection, invoice: i64) -> Result<Option<Payment>, PaymentError> {
    Ok(payments::table
        .filter(payments::invoice_id.eq(invoice))
        .filter(payments::state.eq_any([
            PaymentState::Processing.as_str(),
            PaymentState::Pending.as_str(),
            PaymentState::Succeeded.as_str(),
        ]))
        .select(PaymentRow::as_select())
        .first(conn)
        .optional()?
        .map(PaymentRow::into_payment))
}
