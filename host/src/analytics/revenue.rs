//! Revenue rollups: every paid invoice and every credit note, summed by
//! seller (the platform, or the reseller that issued it), day, what was
//! bought (a subscription, a credit package, something else) and how it
//! was paid, and by tenant and month. Added to in the
//! transaction that marks the invoice paid or issues the credit note, so
//! the report equals the documents to the cent without reading them.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Seller;
use super::usage::{day_of, month_of};
use crate::billing::invoices::Document;
use crate::db::schema::{
    payment_methods, payments, purchases, revenue_daily, revenue_monthly, subscription_changes,
    subscription_periods,
};
use crate::db::{self, DbConnection};

/// What an invoice paid for.
pub const SOURCES: [&str; 3] = ["subscription", "package", "other"];

#[derive(Insertable)]
#[diesel(table_name = revenue_daily)]
struct DailyRow<'a> {
    day: &'a str,
    currency: &'a str,
    source: &'a str,
    method: &'a str,
    invoices: i64,
    paid_minor: i64,
    paid_tax_minor: i64,
    refunds: i64,
    refunded_minor: i64,
    refunded_tax_minor: i64,
    seller: i64,
}

#[derive(Insertable)]
#[diesel(table_name = revenue_monthly)]
struct MonthlyRow<'a> {
    tenant_id: i64,
    month: &'a str,
    currency: &'a str,
    paid_minor: i64,
    refunded_minor: i64,
    seller: i64,
}

/// What the invoice paid for: a subscription period or plan change, a
/// credit package, or something else (an invoice the operator wrote).
fn source_of(conn: &mut DbConnection, invoice: i64) -> QueryResult<&'static str> {
    let package: Option<i64> = purchases::table
        .filter(purchases::invoice_id.eq(invoice))
        .select(purchases::id)
        .first(conn)
        .optional()?;
    if package.is_some() {
        return Ok("package");
    }
    let period: Option<i64> = subscription_periods::table
        .filter(subscription_periods::invoice_id.eq(invoice))
        .select(subscription_periods::subscription_id)
        .first(conn)
        .optional()?;
    let change: Option<i64> = match period {
        Some(_) => None,
        None => subscription_changes::table
            .filter(subscription_changes::invoice_id.eq(invoice))
            .select(subscription_changes::id)
            .first(conn)
            .optional()?,
    };
    Ok(match period.or(change) {
        Some(_) => "subscription",
        None => "other",
    })
}

/// How the invoice was paid: the method of its live or taken payment, or
/// `manual` when the operator recorded money received some other way.
fn method_of(conn: &mut DbConnection, invoice: i64) -> QueryResult<String> {
    let method: Option<String> = payments::table
        .inner_join(payment_methods::table)
        .filter(payments::invoice_id.eq(invoice))
        .filter(payments::state.ne("failed"))
        .order(payments::id.desc())
        .select(payment_methods::method)
        .first(conn)
        .optional()?;
    Ok(method.unwrap_or_else(|| "manual".to_owned()))
}

/// Adds a paid invoice. Called once, by the transition that marks it paid.
/// A reseller's invoice to its tenant is the reseller's revenue, not the
/// platform's: the platform's from a reseller is what it charges it.
pub fn invoice_paid(conn: &mut DbConnection, invoice: &Document) -> QueryResult<()> {
    let at = invoice.closed_at.map(|at| at.micros()).unwrap_or_default();
    let source = source_of(conn, invoice.id)?;
    let method = method_of(conn, invoice.id)?;
    add(
        conn,
        Seller::of(invoice.reseller),
        invoice.tenant,
        at,
        &invoice.currency,
        source,
        &method,
        [1, invoice.totals.subtotal_minor, invoice.totals.tax_minor],
        [0, 0, 0],
    )
}

/// Adds an issued credit note (a refund) against the invoice it credits,
/// on the day it was issued.
pub fn credit_note_issued(conn: &mut DbConnection, note: &Document) -> QueryResult<()> {
    let at = note.finalized_at.map(|at| at.micros()).unwrap_or_default();
    let (source, method) = match note.credits_invoice {
        Some(invoice) => (source_of(conn, invoice)?, method_of(conn, invoice)?),
        None => ("other", "manual".to_owned()),
    };
    add(
        conn,
        Seller::of(note.reseller),
        note.tenant,
        at,
        &note.currency,
        source,
        &method,
        [0, 0, 0],
        [1, note.totals.subtotal_minor, note.totals.tax_minor],
    )
}

#[allow(clippy::too_many_arguments)]
fn add(
    conn: &mut DbConnection,
    seller: Seller,
    tenant: i64,
    at: i64,
    currency: &str,
    source: &str,
    method: &str,
    [invoices, paid_minor, paid_tax_minor]: [i64; 3],
    [refunds, refunded_minor, refunded_tax_minor]: [i64; 3],
) -> QueryResult<()> {
    let (day, month) = (day_of(at), month_of(at));
    let row = DailyRow {
        day: &day,
        currency,
        source,
        method,
        invoices,
        paid_minor,
        paid_tax_minor,
        refunds,
        refunded_minor,
        refunded_tax_minor,
        seller: seller.key(),
    };
    {
        use revenue_daily::dsl as r;
        db::upsert!(
            conn,
            revenue_daily::table,
            &row,
            (r::seller, r::day, r::currency, r::source, r::method),
            (
                r::invoices.eq(r::invoices + excluded(r::invoices)),
                r::paid_minor.eq(r::paid_minor + excluded(r::paid_minor)),
                r::paid_tax_minor.eq(r::paid_tax_minor + excluded(r::paid_tax_minor)),
                r::refunds.eq(r::refunds + excluded(r::refunds)),
                r::refunded_minor.eq(r::refunded_minor + excluded(r::refunded_minor)),
                r::refunded_tax_minor.eq(r::refunded_tax_minor + excluded(r::refunded_tax_minor)),
            )
        );
    }
    let row = MonthlyRow {
        tenant_id: tenant,
        month: &month,
        currency,
        paid_minor,
        refunded_minor,
        seller: seller.key(),
    };
    use revenue_monthly::dsl as m;
    db::upsert!(
        conn,
        revenue_monthly::table,
        &row,
        (m::seller, m::tenant_id, m::month, m::currency),
        (
            m::paid_minor.eq(m::paid_minor + excluded(m::paid_minor)),
            m::refunded_minor.eq(m::refunded_minor + excluded(m::refunded_minor)),
        )
    );
    Ok(())
}
