//! Refunds: a succeeded payment given back in full. The provider's refund
//! first; only once it is taken on, the unspent credits of the grant the
//! payment bought are revoked and a credit note issued. One refund per
//! payment.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::*;
use crate::db::schema::refunds;

/// A payment given back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: i64,
    pub tenant: TenantId,
    pub payment: i64,
    pub amount_minor: i64,
    pub state: PaymentState,
    pub provider_reference: Option<String>,
    pub failure_reason: Option<String>,
    /// The credit note that gives the invoice's amount back.
    pub credit_note: Option<i64>,
    /// What the payment bought that the tenant had not spent, taken back.
    pub credits_revoked: Credits,
    pub created_at: Timestamp,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = refunds)]
struct RefundRow {
    id: i64,
    tenant_id: i64,
    payment_id: i64,
    amount_minor: i64,
    state: String,
    provider_reference: Option<String>,
    failure_reason: Option<String>,
    credit_note_id: Option<i64>,
    credits_revoked: i64,
    created_at: i64,
}

impl RefundRow {
    fn into_refund(self) -> Refund {
        Refund {
            id: self.id,
            tenant: TenantId(self.tenant_id),
            payment: self.payment_id,
            amount_minor: self.amount_minor,
            state: PaymentState::parse(&self.state),
            provider_reference: self.provider_reference,
            failure_reason: self.failure_reason,
            credit_note: self.credit_note_id,
            credits_revoked: Credits::from_micros(self.credits_revoked),
            created_at: Timestamp::from_micros(self.created_at),
        }
    }
}

impl Payments {
    /// Refunds a succeeded payment in full (an operator's decision): the
    /// money back through the provider, the credits the payment bought and
    /// the tenant has not spent taken back from their grant, and a credit
    /// note for the invoice's amount. A refund the provider refused can be
    /// asked again; one that went through cannot.
    pub fn refund(
        &self,
        tenant: TenantId,
        payment: i64,
    ) -> Result<(Refund, invoices::Document), PaymentError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let (payment, refund_id) = db::write_transaction(&mut conn, |conn| {
            let payment = payments::table
                .find(payment)
                .filter(payments::tenant_id.eq(tenant.0))
                .select(PaymentRow::as_select())
                .first(conn)
                .optional()?
                .ok_or(PaymentError::PaymentNotFound(payment))?
                .into_payment();
            if payment.state != PaymentState::Succeeded {
                return Err(PaymentError::NotRefundable {
                    payment: payment.id,
                    state: payment.state.as_str(),
                });
            }
            let existing: Option<(i64, String)> = refunds::table
                .filter(refunds::payment_id.eq(payment.id))
                .select((refunds::id, refunds::state))
                .first(conn)
                .optional()?;
            let id = match existing {
                Some((id, state)) if state == PaymentState::Failed.as_str() => {
                    // Of two retries at once, one takes it up.
                    let retried = diesel::update(
                        refunds::table
                            .find(id)
                            .filter(refunds::state.eq(PaymentState::Failed.as_str())),
                    )
                    .set((
                        refunds::state.eq(PaymentState::Processing.as_str()),
                        refunds::failure_reason.eq(None::<String>),
                    ))
                    .execute(conn)?;
                    if retried == 0 {
                        return Err(PaymentError::AlreadyRefunded {
                            payment: payment.id,
                            refund: id,
                            state: PaymentState::Processing.as_str().to_owned(),
                        });
                    }
                    id
                }
                Some((id, state)) => {
                    return Err(PaymentError::AlreadyRefunded {
                        payment: payment.id,
                        refund: id,
                        state,
                    });
                }
                None => diesel::insert_into(refunds::table)
                    .values((
                        refunds::tenant_id.eq(tenant.0),
                        refunds::payment_id.eq(payment.id),
                        refunds::amount_minor.eq(payment.amount_minor),
                        refunds::state.eq(PaymentState::Processing.as_str()),
                        refunds::credits_revoked.eq(0),
                        refunds::created_at.eq(now.micros()),
                    ))
                    .returning(refunds::id)
                    .get_result(conn)
                    .map_err(|error| match error {
                        // Another refund of it began at the same moment.
                        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                            PaymentError::AlreadyRefunded {
                                payment: payment.id,
                                refund: 0,
                                state: PaymentState::Processing.as_str().to_owned(),
                            }
                        }
                        other => other.into(),
                    })?,
            };
            Ok((payment, id))
        })?;
        drop(conn);

        // The money first: nothing else changes unless the provider takes
        // the refund on.
        let failed = |reason: &str| -> Result<PaymentError, PaymentError> {
            let mut conn = self.database.get()?;
            diesel::update(refunds::table.find(refund_id))
                .set((
                    refunds::state.eq(PaymentState::Failed.as_str()),
                    refunds::failure_reason.eq(clipped(reason, REASON_BYTES_MAX)),
                ))
                .execute(&mut conn)?;
            Ok(PaymentError::RefundFailed(reason.to_owned()))
        };
        let settings = match self.provider(&payment.provider) {
            Ok(settings) => settings,
            Err(error) => return Err(failed(&error.to_string())?),
        };
        let key = format!("tollgate-refund-{refund_id}");
        let request = metering::Request {
            tenant,
            plugin: payment.provider.clone(),
            call: Call::Refund(RefundRequest {
                provider_reference: payment.provider_reference.clone().unwrap_or_default(),
                amount_minor: payment.amount_minor as u64,
                currency: payment.currency.clone(),
                idempotency_key: key.clone(),
            }),
            idempotency_key: Some(key),
        };
        let answer = match self.meter.invoke_as_merchant(request, settings) {
            Ok(metered) => match metered.result {
                Ok(Reply::Refund(answer)) => answer,
                Ok(_) => {
                    return Err(failed(
                        "the provider answered with something other than a refund",
                    )?);
                }
                Err(CallError::Plugin { error, .. }) => return Err(failed(&error.message)?),
                Err(error) => return Err(failed(&error.to_string())?),
            },
            Err(error) => return Err(failed(&error.to_string())?),
        };
        if answer.status == runtime::PaymentStatus::Failed {
            return Err(failed("declined by the provider")?);
        }

        let revoked = self.revoke_bought(tenant, payment.invoice, refund_id)?;
        let mut conn = self.database.get()?;
        let invoice = invoices::get(&mut conn, tenant, payment.invoice)?;
        let number = invoice.display_number().unwrap_or_default();
        let currency = crate::units::Currency::parse(&invoice.currency)
            .map_err(|error| anyhow::anyhow!("invoice {number}: {error}"))?;
        let note = db::write_transaction(&mut conn, |conn| {
            let draft = invoices::create_within(
                conn,
                &self.subscriptions.issuer,
                &invoices::NewDocument {
                    tenant,
                    kind: invoices::Kind::CreditNote,
                    currency,
                    lines: invoice
                        .lines
                        .iter()
                        .map(|line| invoices::NewLine {
                            description: format!("Refund of {number}: {}", line.description),
                            quantity: line.quantity,
                            unit_price_minor: line.unit_price_minor,
                        })
                        .collect(),
                    credits_invoice: Some(invoice.id),
                },
                now,
            )?;
            let note = invoices::finalize_within(conn, tenant, draft.id, now)?;
            let state = match answer.status {
                runtime::PaymentStatus::Succeeded => PaymentState::Succeeded,
                _ => PaymentState::Pending,
            };
            diesel::update(refunds::table.find(refund_id))
                .set((
                    refunds::state.eq(state.as_str()),
                    refunds::provider_reference
                        .eq(clipped(&answer.provider_reference, TOKEN_BYTES_MAX)),
                    refunds::credit_note_id.eq(note.id),
                    refunds::credits_revoked.eq(revoked.micros()),
                ))
                .execute(conn)?;
            Ok::<_, PaymentError>(note)
        })?;
        let refund = refunds::table
            .find(refund_id)
            .select(RefundRow::as_select())
            .first(&mut conn)?
            .into_refund();
        Ok((refund, note))
    }

    /// Takes back what the invoice bought and the tenant has not spent:
    /// the free credits of its grant (a package, a period's allowance, an
    /// upgrade's difference). Returns how much.
    fn revoke_bought(
        &self,
        tenant: TenantId,
        invoice: i64,
        refund: i64,
    ) -> Result<Credits, PaymentError> {
        let mut conn = self.database.get()?;
        let grant = match purchases::of_invoice(&mut conn, tenant, invoice)? {
            Some(purchase) => Some(format!("purchase-{}", purchase.id)),
            None => {
                let period: Option<(i64, i32)> = subscription_periods::table
                    .filter(subscription_periods::invoice_id.eq(invoice))
                    .select((
                        subscription_periods::subscription_id,
                        subscription_periods::period,
                    ))
                    .first(&mut conn)
                    .optional()?;
                let change: Option<(i64, i64, i32)> = subscription_changes::table
                    .filter(subscription_changes::invoice_id.eq(invoice))
                    .select((
                        subscription_changes::id,
                        subscription_changes::subscription_id,
                        subscription_changes::period,
                    ))
                    .first(&mut conn)
                    .optional()?;
                match (period, change) {
                    (Some((subscription, period)), _) => {
                        Some(format!("sub-{subscription}-{period}-allowance"))
                    }
                    (None, Some((change, subscription, period))) => {
                        Some(format!("sub-{subscription}-{period}-change-{change}"))
                    }
                    (None, None) => None,
                }
            }
        };
        let Some(grant) = grant else {
            return Ok(Credits::ZERO);
        };
        let wallet = crate::ledger::queries::wallet_of(&mut conn, tenant)?;
        // Spending may race the read: read again and retry (a refused
        // command is not stored, so its id can be used again).
        for _ in 0..3 {
            let free: Option<i64> = grants::table
                .find(&grant)
                .filter(grants::account_id.eq(wallet.0))
                .filter(grants::expired.eq(false))
                .select(grants::remaining)
                .first(&mut conn)
                .optional()?;
            let free = Credits::from_micros(free.unwrap_or(0));
            if free <= Credits::ZERO {
                return Ok(Credits::ZERO);
            }
            match self.ledger.submit_blocking(Command::Revoke {
                id: TransferId::new(format!("refund-{refund}"))?,
                account: wallet,
                grant: TransferId::new(grant.clone())?,
                amount: free,
                memo: format!("refund {refund}: unspent credits taken back"),
            }) {
                Ok(receipt) => return Ok(receipt.transfer.amount),
                Err(LedgerError::GrantShort { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(PaymentError::Pool(anyhow::anyhow!(
            "the tenant kept spending grant {grant} while it was refunded; retry the refund"
        )))
    }
}
