//! Invoices and credit notes: lines, tax and totals exact to the minor unit,
//! numbers without gaps, and the states a document moves through.
//!
//! A document is created as a draft (no number; its lines may still be
//! replaced by voiding it and creating another) and gets its number when it
//! is finalized (`open`), from its issuer's series for its kind, in the same
//! transaction that advances the series; so numbers run without gaps, and a
//! document voided later keeps its number. From `open` it is `paid`, `void`
//! or `uncollectible`; an uncollectible one may still be paid or voided.
//!
//! Rounding: a line's amount is its quantity times its unit price, exact.
//! Tax is computed once, on the subtotal, and rounded half away from zero
//! to the minor unit; the total is the subtotal plus that tax.

use diesel::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::config::BillingSettings;
use crate::db::schema::{invoice_lines, invoice_series, invoices};
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::units::{Currency, Timestamp};

/// Lines one document may hold at most.
pub const LINES_MAX: usize = 100;

/// The longest line description, in bytes.
pub const TEXT_BYTES_MAX: usize = 500;

/// An invoice (money owed by the tenant) or a credit note (money given back
/// against an invoice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoice,
    CreditNote,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invoice => "invoice",
            Kind::CreditNote => "credit_note",
        }
    }

    fn parse(text: &str) -> Kind {
        match text {
            "credit_note" => Kind::CreditNote,
            _ => Kind::Invoice,
        }
    }

    /// What a number is printed after: `INV-000042`, `CN-000007`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Invoice => "INV",
            Kind::CreditNote => "CN",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Open => "open",
            State::Paid => "paid",
            State::Void => "void",
            State::Uncollectible => "uncollectible",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "open" => State::Open,
            "paid" => State::Paid,
            "void" => State::Void,
            "uncollectible" => State::Uncollectible,
            _ => State::Draft,
        }
    }
}

/// Who issues documents and the tax they charge, from `[billing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    pub name: String,
    pub address: String,
    pub tax_rate: Decimal,
    pub tax_name: String,
}

impl Issuer {
    pub fn from_settings(settings: &BillingSettings) -> Issuer {
        Issuer {
            name: settings.issuer.clone(),
            address: settings.issuer_address.clone(),
            tax_rate: settings.tax_rate,
            tax_name: settings.tax_name.clone(),
        }
    }
}

/// A line to bill: `quantity` of something at `unit_price_minor` each. A
/// negative unit price credits (unused time on a plan left mid-period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLine {
    pub description: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// A document to create.
#[derive(Clone, Debug)]
pub struct NewDocument {
    pub tenant: TenantId,
    pub kind: Kind,
    pub currency: Currency,
    pub lines: Vec<NewLine>,
    /// For a credit note, the invoice it credits.
    pub credits_invoice: Option<i64>,
}

/// A document's sums, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub description: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub amount_minor: i64,
}

/// An invoice or credit note as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub id: i64,
    pub tenant: i64,
    pub kind: Kind,
    pub issuer: String,
    /// Its number in the issuer's series; none while a draft.
    pub number: Option<i64>,
    pub state: State,
    pub currency: String,
    pub totals: Totals,
    pub tax_rate: Decimal,
    pub tax_name: String,
    pub credits_invoice: Option<i64>,
    pub lines: Vec<Line>,
    pub created_at: Timestamp,
    /// When it was issued.
    pub finalized_at: Option<Timestamp>,
    /// When it was paid or voided, as its state says.
    pub closed_at: Option<Timestamp>,
    /// The reseller that issued it to its tenant; `None`: the platform.
    pub reseller: Option<TenantId>,
}

impl Document {
    /// The number as printed: `INV-000042`; none while a draft.
    pub fn display_number(&self) -> Option<String> {
        self.number
            .map(|number| format!("{}-{number:06}", self.kind.prefix()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error("a document needs at least one line")]
    NoLines,
    #[error("who issues this tenant's documents could not be read: {0}")]
    Issuer(String),
    #[error("{0} lines is more than a document may hold ({LINES_MAX})")]
    TooManyLines(usize),
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("the amounts overflow what a document can hold")]
    Overflow,
    #[error(
        "the lines add up to {subtotal_minor} minor units; a document cannot total less than zero"
    )]
    NegativeTotal { subtotal_minor: i64 },
    #[error("a credit note must name the invoice it credits, and an invoice must not")]
    CreditNoteTarget,
    #[error(
        "invoice {invoice} has {remaining_minor} minor units left to credit; this credit note is for {total_minor}"
    )]
    CreditExceedsInvoice {
        invoice: i64,
        remaining_minor: i64,
        total_minor: i64,
    },
    #[error("invoice {invoice} is {state}; only an open or paid invoice can be credited")]
    NotCreditable { invoice: i64, state: &'static str },
    #[error("a credit note is in the currency of its invoice ({expected}), not {got}")]
    CurrencyMismatch { expected: String, got: String },
    #[error("no document {0}")]
    NotFound(i64),
    #[error("document {id} is {state}; it cannot be {action}")]
    WrongState {
        id: i64,
        state: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Sums lines and applies the tax: see the module's rounding rules.
pub fn totals(lines: &[NewLine], tax_rate: Decimal) -> Result<Totals, InvoiceError> {
    let mut subtotal: i64 = 0;
    for line in lines {
        let amount = line
            .quantity
            .checked_mul(line.unit_price_minor)
            .ok_or(InvoiceError::Overflow)?;
        subtotal = subtotal.checked_add(amount).ok_or(InvoiceError::Overflow)?;
    }
    if subtotal < 0 {
        return Err(InvoiceError::NegativeTotal {
            subtotal_minor: subtotal,
        });
    }
    let tax = (Decimal::from(subtotal) * tax_rate)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    let tax: i64 = tax.try_into().map_err(|_| InvoiceError::Overflow)?;
    let total = subtotal.checked_add(tax).ok_or(InvoiceError::Overflow)?;
    Ok(Totals {
        subtotal_minor: subtotal,
        tax_minor: tax,
        total_minor: total,
    })
}

fn check(document: &NewDocument) -> Result<(), InvoiceError> {
    if document.lines.is_empty() {
        return Err(InvoiceError::NoLines);
    }
    if document.lines.len() > LINES_MAX {
        return Err(InvoiceError::TooManyLines(document.lines.len()));
    }
    for (index, line) in document.lines.iter().enumerate() {
        let bad = |reason: String| InvoiceError::BadLine {
            line: index + 1,
            reason,
        };
        if line.description.trim().is_empty() {
            return Err(bad("the description is empty".into()));
        }
        if line.description.len() > TEXT_BYTES_MAX {
            return Err(bad(format!(
                "the description is {} bytes, more than {TEXT_BYTES_MAX}",
                line.description.len()
            )));
        }
        if line.quantity <= 0 {
            return Err(bad(format!(
                "the quantity is {}; it must be at least 1",
                line.quantity
            )));
        }
    }
    match (document.kind, document.credits_invoice) {
        (Kind::Invoice, None) | (Kind::CreditNote, Some(_)) => Ok(()),
        _ => Err(InvoiceError::CreditNoteTarget),
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = invoices)]
struct DocumentRow {
    id: i64,
    tenant_id: i64,
    kind: String,
    issuer: String,
    number: Option<i64>,
    state: String,
    currency: String,
    subtotal_minor: i64,
    tax_rate: String,
    tax_name: String,
    tax_minor: i64,
    total_minor: i64,
    credits_invoice_id: Option<i64>,
    created_at: i64,
    finalized_at: Option<i64>,
    closed_at: Option<i64>,
    reseller_id: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = invoice_lines, treat_none_as_default_value = false)]
struct LineRow {
    invoice_id: i64,
    position: i32,
    description: String,
    quantity: i64,
    unit_price_minor: i64,
    amount_minor: i64,
}

impl DocumentRow {
    fn into_document(self, lines: Vec<Line>) -> Document {
        Document {
            id: self.id,
            tenant: self.tenant_id,
            kind: Kind::parse(&self.kind),
            issuer: self.issuer,
            number: self.number,
            state: State::parse(&self.state),
            currency: self.currency,
            totals: Totals {
                subtotal_minor: self.subtotal_minor,
                tax_minor: self.tax_minor,
                total_minor: self.total_minor,
            },
            tax_rate: self.tax_rate.parse().unwrap_or_default(),
            tax_name: self.tax_name,
            credits_invoice: self.credits_invoice_id,
            lines,
            created_at: Timestamp::from_micros(self.created_at),
            finalized_at: self.finalized_at.map(Timestamp::from_micros),
            closed_at: self.closed_at.map(Timestamp::from_micros),
            reseller: self.reseller_id.map(TenantId),
        }
    }
}

/// Creates a draft. A credit note may credit at most what its invoice has
/// left after the credit notes already issued against it (void ones aside).
pub fn create(
    conn: &mut DbConnection,
    issuer: &Issuer,
    document: &NewDocument,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    db::write_transaction(conn, |conn| create_within(conn, issuer, document, now))
}

/// [`create`] inside the caller's write transaction.
pub(crate) fn create_within(
    conn: &mut DbConnection,
    issuer: &Issuer,
    document: &NewDocument,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    check(document)?;
    // A resold tenant's documents are the reseller's, in its brand.
    let (issuer, reseller) = crate::branding::issuer_for(conn, document.tenant, issuer)
        .map_err(|error| InvoiceError::Issuer(error.to_string()))?;
    let issuer = &issuer;
    let sums = totals(&document.lines, issuer.tax_rate)?;
    {
        if let Some(invoice) = document.credits_invoice {
            check_creditable(conn, document, invoice, sums.total_minor)?;
        }
        let id: i64 = diesel::insert_into(invoices::table)
            .values((
                invoices::tenant_id.eq(document.tenant.0),
                invoices::kind.eq(document.kind.as_str()),
                invoices::issuer.eq(&issuer.name),
                invoices::state.eq(State::Draft.as_str()),
                invoices::currency.eq(document.currency.code()),
                invoices::subtotal_minor.eq(sums.subtotal_minor),
                invoices::tax_rate.eq(issuer.tax_rate.normalize().to_string()),
                invoices::tax_name.eq(&issuer.tax_name),
                invoices::tax_minor.eq(sums.tax_minor),
                invoices::total_minor.eq(sums.total_minor),
                invoices::credits_invoice_id.eq(document.credits_invoice),
                invoices::created_at.eq(now.micros()),
                invoices::reseller_id.eq(reseller.map(|reseller| reseller.0)),
            ))
            .returning(invoices::id)
            .get_result(conn)?;
        let lines: Vec<LineRow> = document
            .lines
            .iter()
            .enumerate()
            .map(|(index, line)| LineRow {
                invoice_id: id,
                position: index as i32 + 1,
                description: line.description.clone(),
                quantity: line.quantity,
                unit_price_minor: line.unit_price_minor,
                amount_minor: line.quantity * line.unit_price_minor,
            })
            .collect();
        db::insert_all!(conn, invoice_lines::table, &lines);
        get(conn, document.tenant, id)
    }
}

fn check_creditable(
    conn: &mut DbConnection,
    document: &NewDocument,
    invoice: i64,
    total_minor: i64,
) -> Result<(), InvoiceError> {
    let target = get(conn, document.tenant, invoice)?;
    if target.kind != Kind::Invoice {
        return Err(InvoiceError::CreditNoteTarget);
    }
    if !matches!(target.state, State::Open | State::Paid) {
        return Err(InvoiceError::NotCreditable {
            invoice,
            state: target.state.as_str(),
        });
    }
    if target.currency != document.currency.code() {
        return Err(InvoiceError::CurrencyMismatch {
            expected: target.currency,
            got: document.currency.code().to_owned(),
        });
    }
    let credited: Vec<i64> = invoices::table
        .filter(invoices::credits_invoice_id.eq(invoice))
        .filter(invoices::state.ne(State::Void.as_str()))
        .select(invoices::total_minor)
        .load(conn)?;
    let remaining = target.totals.total_minor - credited.iter().sum::<i64>();
    if total_minor > remaining {
        return Err(InvoiceError::CreditExceedsInvoice {
            invoice,
            remaining_minor: remaining,
            total_minor,
        });
    }
    Ok(())
}

/// Issues a draft: gives it the next number of its issuer's series for
/// its kind and opens it.
pub fn finalize(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    db::write_transaction(conn, |conn| finalize_within(conn, tenant, id, now))
}

/// [`finalize`] inside the caller's write transaction.
pub(crate) fn finalize_within(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    {
        let document = get(conn, tenant, id)?;
        require(&document, &[State::Draft], "finalized")?;
        // A reseller numbers its documents in a series of its own.
        let issuer = match document.reseller {
            Some(reseller) => format!("reseller:{reseller}"),
            None => document.issuer.clone(),
        };
        let series = (
            invoice_series::issuer.eq(&issuer),
            invoice_series::kind.eq(document.kind.as_str()),
            invoice_series::last_number.eq(0),
        );
        match conn {
            DbConnection::Sqlite(conn) => diesel::insert_or_ignore_into(invoice_series::table)
                .values(series)
                .execute(conn)?,
            DbConnection::Postgres(conn) => diesel::insert_into(invoice_series::table)
                .values(series)
                .on_conflict_do_nothing()
                .execute(conn)?,
        };
        // The update locks the series' row until the transaction ends, so
        // two hosts finalizing at once take consecutive numbers.
        let number: i64 =
            diesel::update(invoice_series::table.find((&issuer, document.kind.as_str())))
                .set(invoice_series::last_number.eq(invoice_series::last_number + 1))
                .returning(invoice_series::last_number)
                .get_result(conn)?;
        let changed = diesel::update(
            invoices::table
                .filter(invoices::id.eq(id))
                .filter(invoices::state.eq(State::Draft.as_str())),
        )
        .set((
            invoices::state.eq(State::Open.as_str()),
            invoices::number.eq(number),
            invoices::finalized_at.eq(now.micros()),
        ))
        .execute(conn)?;
        if changed == 0 {
            // Another host finalized it first; the number goes back.
            return Err(InvoiceError::WrongState {
                id,
                state: State::Open.as_str(),
                action: "finalized",
            });
        }
        let document = get(conn, tenant, id)?;
        if document.kind == Kind::CreditNote {
            crate::analytics::revenue::credit_note_issued(conn, &document)?;
        }
        crate::mail::document_issued(conn, &document, now)?;
        Ok(document)
    }
}

/// Records that an open (or uncollectible) document was paid.
pub fn mark_paid(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    transition(
        conn,
        tenant,
        id,
        &[State::Open, State::Uncollectible],
        State::Paid,
        "paid",
        now,
    )
}

/// Marks an invoice paid unless it already is: two hosts settling the same
/// payment at once (a webhook and the provider's answer) both succeed.
pub fn ensure_paid(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    match mark_paid(conn, tenant, id, now) {
        Err(InvoiceError::WrongState { .. }) => {
            let document = get(conn, tenant, id)?;
            match document.state {
                State::Paid => Ok(document),
                _ => mark_paid(conn, tenant, id, now),
            }
        }
        other => other,
    }
}

/// Voids a document that was not paid. A voided document keeps its number.
pub fn void(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    transition(
        conn,
        tenant,
        id,
        &[State::Draft, State::Open, State::Uncollectible],
        State::Void,
        "voided",
        now,
    )
}

/// Gives up collecting an open document; it may still be paid or voided.
pub fn mark_uncollectible(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    transition(
        conn,
        tenant,
        id,
        &[State::Open],
        State::Uncollectible,
        "marked uncollectible",
        now,
    )
}

fn require(document: &Document, from: &[State], action: &'static str) -> Result<(), InvoiceError> {
    match from.contains(&document.state) {
        true => Ok(()),
        false => Err(InvoiceError::WrongState {
            id: document.id,
            state: document.state.as_str(),
            action,
        }),
    }
}

fn transition(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    from: &[State],
    to: State,
    action: &'static str,
    now: Timestamp,
) -> Result<Document, InvoiceError> {
    db::write_transaction(conn, |conn| {
        let document = get(conn, tenant, id)?;
        require(&document, from, action)?;
        let target = invoices::table
            .filter(invoices::id.eq(id))
            .filter(invoices::state.eq(document.state.as_str()));
        let closed_at = matches!(to, State::Paid | State::Void).then_some(now.micros());
        let changed = diesel::update(target)
            .set((
                invoices::state.eq(to.as_str()),
                invoices::closed_at.eq(closed_at),
            ))
            .execute(conn)?;
        if changed == 0 {
            let now_state = get(conn, tenant, id)?.state;
            return Err(InvoiceError::WrongState {
                id,
                state: now_state.as_str(),
                action,
            });
        }
        let document = get(conn, tenant, id)?;
        if to == State::Paid && document.kind == Kind::Invoice {
            crate::analytics::revenue::invoice_paid(conn, &document)?;
            crate::mail::invoice_paid(conn, &document, now)?;
        }
        Ok(document)
    })
}

/// One of the tenant's documents; another tenant's is not found.
pub fn get(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<Document, InvoiceError> {
    let row: DocumentRow = invoices::table
        .filter(invoices::id.eq(id))
        .filter(invoices::tenant_id.eq(tenant.0))
        .select(DocumentRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(InvoiceError::NotFound(id))?;
    let lines = lines_of(conn, &[id])?.remove(&id).unwrap_or_default();
    Ok(row.into_document(lines))
}

/// The tenant's documents of one kind, oldest first, after the id `after`.
pub fn list(
    conn: &mut DbConnection,
    tenant: TenantId,
    kind: Kind,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Document>, InvoiceError> {
    let rows: Vec<DocumentRow> = invoices::table
        .filter(invoices::tenant_id.eq(tenant.0))
        .filter(invoices::kind.eq(kind.as_str()))
        .filter(invoices::id.gt(after.unwrap_or(0)))
        .order(invoices::id)
        .limit(limit)
        .select(DocumentRow::as_select())
        .load(conn)?;
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let mut lines = lines_of(conn, &ids)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let lines = lines.remove(&row.id).unwrap_or_default();
            row.into_document(lines)
        })
        .collect())
}

fn lines_of(
    conn: &mut DbConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<Line>>, InvoiceError> {
    let rows: Vec<LineRow> = invoice_lines::table
        .filter(invoice_lines::invoice_id.eq_any(ids))
        .order((invoice_lines::invoice_id, invoice_lines::position))
        .select(LineRow::as_select())
        .load(conn)?;
    let mut lines: std::collections::HashMap<i64, Vec<Line>> = Default::default();
    for row in rows {
        lines.entry(row.invoice_id).or_default().push(Line {
            description: row.description,
            quantity: row.quantity,
            unit_price_minor: row.unit_price_minor,
            amount_minor: row.amount_minor,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests;
