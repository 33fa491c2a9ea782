//! Credit packages bought: an invoice for the package's price (its bulk
//! discount applied when the config was loaded), and the credits granted
//! when, and only when, that invoice is paid, under the ledger id
//! `purchase-{id}`, so a repeated payment notice grants them once.
//! Purchased credits do not expire.

use diesel::prelude::*;

use super::invoices::{self, Issuer, NewDocument, NewLine};
use crate::config::CreditPackage;
use crate::db::schema::purchases;
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{Command, GrantSource, Ledger, LedgerError, TransferId, queries};
use crate::units::{Credits, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    pub id: i64,
    pub tenant: TenantId,
    pub package: String,
    pub credits: Credits,
    pub invoice: i64,
    pub granted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error("there is no credit package {0:?}; GET /api/v1/billing/packages lists them")]
    UnknownPackage(String),
    #[error(transparent)]
    Invoice(#[from] invoices::InvoiceError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Resale(#[from] crate::resale::ResaleError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = purchases)]
struct Row {
    id: i64,
    tenant_id: i64,
    package: String,
    credits: i64,
    invoice_id: i64,
    granted: bool,
}

impl Row {
    fn into_purchase(self) -> Purchase {
        Purchase {
            id: self.id,
            tenant: TenantId(self.tenant_id),
            package: self.package,
            credits: Credits::from_micros(self.credits),
            invoice: self.invoice_id,
            granted: self.granted,
        }
    }
}

/// Buys `package` for the tenant: the purchase and its invoice, issued. A
/// resold tenant pays its reseller's retail price for it; the reseller
/// pays the platform only for the calls those credits make, at wholesale.
pub fn buy(
    conn: &mut DbConnection,
    issuer: &Issuer,
    packages: &[CreditPackage],
    tenant: TenantId,
    package: &str,
    now: Timestamp,
) -> Result<(Purchase, invoices::Document), PurchaseError> {
    let package = packages
        .iter()
        .find(|known| known.id == package)
        .ok_or_else(|| PurchaseError::UnknownPackage(package.to_owned()))?;
    let package = &match crate::resale::reseller_of(conn, tenant)? {
        Some(reseller) => reseller.prices.package(package),
        None => package.clone(),
    };
    db::write_transaction(conn, |conn| {
        let discount = match package.discount_percent.is_zero() {
            true => String::new(),
            false => format!(", {}% off", package.discount_percent.normalize()),
        };
        let draft = invoices::create_within(
            conn,
            issuer,
            &NewDocument {
                tenant,
                kind: invoices::Kind::Invoice,
                currency: package.price.currency,
                lines: vec![NewLine {
                    description: format!(
                        "{} credits (package {}{discount})",
                        package.credits, package.id
                    ),
                    quantity: 1,
                    unit_price_minor: package.price.minor,
                }],
                credits_invoice: None,
            },
            now,
        )?;
        let invoice = invoices::finalize_within(conn, tenant, draft.id, now)?;
        let id: i64 = diesel::insert_into(purchases::table)
            .values((
                purchases::tenant_id.eq(tenant.0),
                purchases::package.eq(&package.id),
                purchases::credits.eq(package.credits.micros()),
                purchases::invoice_id.eq(invoice.id),
                purchases::granted.eq(false),
                purchases::created_at.eq(now.micros()),
            ))
            .returning(purchases::id)
            .get_result(conn)?;
        let row: Row = purchases::table
            .find(id)
            .select(Row::as_select())
            .first(conn)?;
        Ok((row.into_purchase(), invoice))
    })
}

/// The tenant's purchase billed by `invoice`, if that is what it bills.
pub fn of_invoice(
    conn: &mut DbConnection,
    tenant: TenantId,
    invoice: i64,
) -> Result<Option<Purchase>, PurchaseError> {
    Ok(purchases::table
        .filter(purchases::invoice_id.eq(invoice))
        .filter(purchases::tenant_id.eq(tenant.0))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::into_purchase))
}

/// The purchase's invoice was paid: marks it paid and grants the credits,
/// once.
pub fn paid(
    conn: &mut DbConnection,
    ledger: &Ledger,
    purchase: &Purchase,
    now: Timestamp,
) -> Result<Purchase, PurchaseError> {
    if invoices::get(conn, purchase.tenant, purchase.invoice)?.state != invoices::State::Paid {
        invoices::ensure_paid(conn, purchase.tenant, purchase.invoice, now)?;
    }
    if !purchase.granted {
        let wallet = queries::wallet_of(conn, purchase.tenant)?;
        ledger.submit_blocking(Command::Grant {
            id: TransferId::new(format!("purchase-{}", purchase.id))?,
            account: wallet,
            source: GrantSource::Purchase,
            amount: purchase.credits,
            expires_at: None,
            priority: None,
            memo: format!("credit package {}", purchase.package),
        })?;
        diesel::update(purchases::table.find(purchase.id))
            .set(purchases::granted.eq(true))
            .execute(conn)?;
    }
    Ok(Purchase {
        granted: true,
        ..purchase.clone()
    })
}
