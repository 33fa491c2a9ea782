//! Tenants: the organisations that use Tollgate, each with its own credit
//! wallet in the ledger. A tenant may belong to a parent (a reseller), so
//! the platform → reseller → tenant hierarchy has a place from the start.
//!
//! This module owns the `tenants` table; it asks the ledger to open the
//! wallet and knows nothing else about credits.

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::tenants;
use crate::ids::TenantId;
use crate::ledger::{AccountId, LedgerError, queries};
use crate::units::{Credits, Timestamp};

/// Longest tenant name, in bytes.
pub const TENANT_NAME_BYTES_MAX: usize = 200;

/// Most tenants one listing returns.
pub const TENANTS_PAGE_MAX: usize = 1_000;

/// What a tenant is to the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sales team using the platform.
    Tenant,
    /// A white-label reseller: it sells the platform to tenants of its own
    /// (its children), and its wallet is its wholesale account.
    Reseller,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Reseller => "reseller",
        }
    }

    fn parse(text: &str) -> Kind {
        match text {
            "reseller" => Kind::Reseller,
            _ => Kind::Tenant,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub parent: Option<TenantId>,
    pub kind: Kind,
    pub created_at: Timestamp,
    /// When it was suspended, if it is: its keys and calls are refused.
    pub suspended_at: Option<Timestamp>,
    /// Who suspended it.
    pub suspended_by: Option<Suspender>,
    /// Where its system emails go (invoices, payments, a reseller's wallet
    /// alerts); none: it gets none.
    pub email: Option<String>,
}

/// Who suspends a tenant: a suspension by the operator is lifted only by
/// the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspender {
    Operator,
    Reseller,
}

impl Suspender {
    pub fn as_str(self) -> &'static str {
        match self {
            Suspender::Operator => "operator",
            Suspender::Reseller => "reseller",
        }
    }

    fn parse(text: &str) -> Suspender {
        match text {
            "reseller" => Suspender::Reseller,
            _ => Suspender::Operator,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("a tenant name must be 1 to {TENANT_NAME_BYTES_MAX} bytes and not blank")]
    InvalidName,
    #[error("tenant {0} does not exist")]
    NotFound(TenantId),
    #[error("tenant {0} is not a reseller")]
    NotAReseller(TenantId),
    #[error("tenant {0} was suspended by the operator; only the operator can resume it")]
    SuspendedByOperator(TenantId),
    #[error("{0:?} is not an email address of at most {EMAIL_BYTES_MAX} bytes: {1}")]
    InvalidEmail(String, String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

/// Creates a tenant and its credit wallet, together or not at all.
pub fn create(
    conn: &mut DbConnection,
    name: &str,
    parent: Option<TenantId>,
    credit_limit: Credits,
    now: Timestamp,
) -> Result<(Tenant, AccountId), TenantError> {
    create_of_kind(conn, name, parent, Kind::Tenant, credit_limit, now)
}

/// Creates a reseller and its wallet (its wholesale account).
pub fn create_reseller(
    conn: &mut DbConnection,
    name: &str,
    credit_limit: Credits,
    now: Timestamp,
) -> Result<(Tenant, AccountId), TenantError> {
    create_of_kind(conn, name, None, Kind::Reseller, credit_limit, now)
}

/// Creates a tenant of a reseller's, its child.
pub fn create_for_reseller(
    conn: &mut DbConnection,
    reseller: TenantId,
    name: &str,
    credit_limit: Credits,
    now: Timestamp,
) -> Result<(Tenant, AccountId), TenantError> {
    if find(conn, reseller)?.kind != Kind::Reseller {
        return Err(TenantError::NotAReseller(reseller));
    }
    create_of_kind(conn, name, Some(reseller), Kind::Tenant, credit_limit, now)
}

fn create_of_kind(
    conn: &mut DbConnection,
    name: &str,
    parent: Option<TenantId>,
    kind: Kind,
    credit_limit: Credits,
    now: Timestamp,
) -> Result<(Tenant, AccountId), TenantError> {
    let name = name.trim();
    if name.is_empty() || name.len() > TENANT_NAME_BYTES_MAX {
        return Err(TenantError::InvalidName);
    }
    if credit_limit < Credits::ZERO {
        return Err(LedgerError::NegativeCreditLimit(credit_limit).into());
    }
    crate::db::write_transaction(conn, |conn| {
        if let Some(parent) = parent {
            find(conn, parent)?;
        }
        let id: i64 = diesel::insert_into(tenants::table)
            .values((
                tenants::name.eq(name),
                tenants::parent_tenant_id.eq(parent.map(|parent| parent.0)),
                tenants::created_at.eq(now.micros()),
                tenants::kind.eq(kind.as_str()),
            ))
            .returning(tenants::id)
            .get_result(conn)?;
        let tenant = TenantId(id);
        let wallet = queries::open_wallet(conn, tenant, credit_limit, now)?;
        if kind == Kind::Reseller {
            queries::open_sales_account(conn, tenant, now)?;
        }
        Ok((
            Tenant {
                id: tenant,
                name: name.to_owned(),
                parent,
                kind,
                created_at: now,
                suspended_at: None,
                suspended_by: None,
                email: None,
            },
            wallet,
        ))
    })
}

type TenantRow = (
    i64,
    String,
    Option<i64>,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn from_row(
    (id, name, parent, created_at, kind, suspended_at, suspended_by, email): TenantRow,
) -> Tenant {
    Tenant {
        id: TenantId(id),
        name,
        parent: parent.map(TenantId),
        kind: Kind::parse(&kind),
        created_at: Timestamp::from_micros(created_at),
        suspended_at: suspended_at.map(Timestamp::from_micros),
        suspended_by: suspended_by.as_deref().map(Suspender::parse),
        email,
    }
}

/// Longest contact address (RFC 5321's path limit).
pub const EMAIL_BYTES_MAX: usize = 254;

/// `text` as a contact address, trimmed, if it is one.
pub fn check_email(text: &str) -> Result<String, TenantError> {
    let text = text.trim();
    let invalid = |reason: String| TenantError::InvalidEmail(text.to_owned(), reason);
    if text.len() > EMAIL_BYTES_MAX {
        return Err(invalid(format!("it is {} bytes", text.len())));
    }
    text.parse::<lettre::Address>()
        .map_err(|error| invalid(error.to_string()))?;
    Ok(text.to_owned())
}

/// Sets (or, with `None`, clears) where the tenant's system emails go;
/// those not sent yet follow.
pub fn set_email(
    conn: &mut DbConnection,
    tenant: TenantId,
    email: Option<&str>,
) -> Result<Tenant, TenantError> {
    let email = email.map(check_email).transpose()?;
    crate::db::write_transaction(conn, |conn| {
        let changed = diesel::update(tenants::table.find(tenant.0))
            .set(tenants::email.eq(&email))
            .execute(conn)?;
        if changed == 0 {
            return Err(TenantError::NotFound(tenant));
        }
        crate::mail::readdress(conn, tenant, email.as_deref())?;
        find(conn, tenant)
    })
}

/// Suspends the tenant (`suspended`), refusing its keys and its calls, or
/// resumes it, as `by`. Suspending a suspended tenant keeps its first time
/// (and makes the suspension the operator's if the operator suspends it);
/// a reseller cannot resume a tenant the operator suspended.
pub fn set_suspended(
    conn: &mut DbConnection,
    tenant: TenantId,
    suspended: bool,
    by: Suspender,
    now: Timestamp,
) -> Result<Tenant, TenantError> {
    crate::db::write_transaction(conn, |conn| {
        let found = find(conn, tenant)?;
        let (at, who) = match (suspended, found.suspended_at, found.suspended_by) {
            (true, Some(at), Some(Suspender::Operator)) => (Some(at), Some(Suspender::Operator)),
            (true, Some(at), _) => (Some(at), Some(by)),
            (true, None, _) => (Some(now), Some(by)),
            (false, Some(_), Some(Suspender::Operator)) if by == Suspender::Reseller => {
                return Err(TenantError::SuspendedByOperator(tenant));
            }
            (false, ..) => (None, None),
        };
        diesel::update(tenants::table.find(tenant.0))
            .set((
                tenants::suspended_at.eq(at.map(Timestamp::micros)),
                tenants::suspended_by.eq(who.map(Suspender::as_str)),
            ))
            .execute(conn)?;
        find(conn, tenant)
    })
}

/// Whether the tenant is suspended, or its reseller is.
pub fn is_suspended(conn: &mut DbConnection, tenant: TenantId) -> Result<bool, TenantError> {
    let found = find(conn, tenant)?;
    if found.suspended_at.is_some() {
        return Ok(true);
    }
    match found.parent {
        Some(parent) => Ok(find(conn, parent)?.suspended_at.is_some()),
        None => Ok(false),
    }
}

pub fn find(conn: &mut DbConnection, id: TenantId) -> Result<Tenant, TenantError> {
    tenants::table
        .find(id.0)
        .first::<TenantRow>(conn)
        .optional()?
        .map(from_row)
        .ok_or(TenantError::NotFound(id))
}

/// A reseller's tenant: not found unless `tenant` is one of `reseller`'s
/// children, so one reseller never learns of another's tenants.
pub fn find_of_reseller(
    conn: &mut DbConnection,
    reseller: TenantId,
    tenant: TenantId,
) -> Result<Tenant, TenantError> {
    match find(conn, tenant) {
        Ok(found) if found.parent == Some(reseller) => Ok(found),
        Ok(_) | Err(TenantError::NotFound(_)) => Err(TenantError::NotFound(tenant)),
        Err(error) => Err(error),
    }
}

/// A reseller's tenants in id order, after the cursor `after`, `limit` at a
/// time.
pub fn list_of_reseller(
    conn: &mut DbConnection,
    reseller: TenantId,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Vec<Tenant>, TenantError> {
    let limit = limit.clamp(1, TENANTS_PAGE_MAX) as i64;
    let rows: Vec<TenantRow> = tenants::table
        .filter(tenants::parent_tenant_id.eq(reseller.0))
        .filter(tenants::id.gt(after.map_or(0, |after| after.0)))
        .order(tenants::id)
        .limit(limit)
        .load(conn)?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Resellers in id order, after the cursor `after`, `limit` at a time.
pub fn list_resellers(
    conn: &mut DbConnection,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Vec<Tenant>, TenantError> {
    let limit = limit.clamp(1, TENANTS_PAGE_MAX) as i64;
    let rows: Vec<TenantRow> = tenants::table
        .filter(tenants::kind.eq(Kind::Reseller.as_str()))
        .filter(tenants::id.gt(after.map_or(0, |after| after.0)))
        .order(tenants::id)
        .limit(limit)
        .load(conn)?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Tenants in id order, after the cursor `after`, `limit` at a time.
pub fn list(
    conn: &mut DbConnection,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Vec<Tenant>, TenantError> {
    let limit = limit.clamp(1, TENANTS_PAGE_MAX) as i64;
    let rows: Vec<TenantRow> = tenants::table
        .filter(tenants::id.gt(after.map_or(0, |after| after.0)))
        .order(tenants::id)
        .limit(limit)
        .load(conn)?;
    Ok(rows.into_iter().map(from_row).collect())
}
