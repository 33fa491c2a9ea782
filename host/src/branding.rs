//! A reseller's brand: the name, address, tax id, logo, colours, support
//! address and custom domain its tenants see instead of the platform's, on
//! the dashboard (a request to its domain is shown in its brand, as is
//! every page of its tenants' sessions) and on the invoices, credit notes
//! and receipts it issues them. A reseller that set no brand still issues
//! its tenants' invoices, under its own name.

use base64::Engine as _;
use diesel::prelude::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::invoices::Issuer;
use crate::db::schema::reseller_brands;
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::tenants::{self, Kind};
use crate::units::Timestamp;

/// Longest brand name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;
/// Longest address, in bytes, and most lines.
pub const ADDRESS_BYTES_MAX: usize = 1_000;
pub const ADDRESS_LINES_MAX: usize = 8;
/// Largest logo, in bytes (PNG or JPEG; it is inlined in every page).
pub const LOGO_BYTES_MAX: usize = 64 * 1024;

/// The colours of a brand that sets none.
pub const PRIMARY_DEFAULT: &str = "#1f4e79";
pub const ACCENT_DEFAULT: &str = "#2b7a4b";

#[derive(Debug, thiserror::Error)]
pub enum BrandError {
    #[error("invalid branding: {0}")]
    Invalid(String),
    #[error("the domain {0} is another reseller's; choose another")]
    DomainTaken(String),
    #[error(transparent)]
    Tenant(#[from] tenants::TenantError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

/// A logo as given: its type and its bytes in base64.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Logo {
    pub content_type: String,
    pub base64: String,
}

/// A brand as given (`PUT /resellers/{id}/branding`) and stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Brand {
    pub name: String,
    /// Printed under the name on invoices; lines separated by newlines.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub tax_id: Option<String>,
    /// Where its tenants ask for help.
    #[serde(default)]
    pub support_email: Option<String>,
    /// `#rrggbb`.
    #[serde(default)]
    pub primary_color: Option<String>,
    #[serde(default)]
    pub accent_color: Option<String>,
    #[serde(default)]
    pub logo: Option<Logo>,
    /// The host name its dashboard answers on: `app.agency.example`.
    #[serde(default)]
    pub domain: Option<String>,
    /// The tax its invoices charge, as a fraction (`0.2`), and its name;
    /// the platform's when left out.
    #[serde(default)]
    pub tax_rate: Option<Decimal>,
    #[serde(default)]
    pub tax_name: Option<String>,
}

impl Brand {
    /// Checks every field; returns the brand with its domain in lower case.
    pub fn check(mut self) -> Result<Brand, BrandError> {
        let invalid = |reason: String| Err(BrandError::Invalid(reason));
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() || self.name.len() > NAME_BYTES_MAX {
            return invalid(format!("name: give 1 to {NAME_BYTES_MAX} bytes"));
        }
        if self.address.len() > ADDRESS_BYTES_MAX
            || self.address.lines().count() > ADDRESS_LINES_MAX
        {
            return invalid(format!(
                "address: at most {ADDRESS_LINES_MAX} lines and {ADDRESS_BYTES_MAX} bytes"
            ));
        }
        if let Some(tax_id) = &self.tax_id
            && (tax_id.trim().is_empty() || tax_id.len() > 64)
        {
            return invalid("tax_id: give 1 to 64 bytes, or leave it out".into());
        }
        if let Some(email) = &self.support_email
            && email.parse::<lettre::Address>().is_err()
        {
            return invalid(format!("support_email: {email:?} is not an email address"));
        }
        for (field, color) in [
            ("primary_color", &self.primary_color),
            ("accent_color", &self.accent_color),
        ] {
            if let Some(color) = color
                && !is_color(color)
            {
                return invalid(format!(
                    "{field}: {color:?} is not a colour such as #1f4e79"
                ));
            }
        }
        if let Some(logo) = &self.logo {
            logo_bytes(logo)?;
        }
        if let Some(domain) = &mut self.domain {
            *domain = domain.to_ascii_lowercase();
            if !is_host_name(domain) {
                return invalid(format!(
                    "domain: {domain:?} is not a host name such as app.agency.example"
                ));
            }
        }
        if let Some(rate) = self.tax_rate
            && (rate.is_sign_negative() || rate >= Decimal::ONE)
        {
            return invalid(format!(
                "tax_rate: a fraction from 0 to below 1, got {rate}"
            ));
        }
        if let Some(name) = &self.tax_name
            && (name.trim().is_empty() || name.len() > 40)
        {
            return invalid("tax_name: give 1 to 40 bytes, or leave it out".into());
        }
        Ok(self)
    }

    pub fn primary_color(&self) -> &str {
        self.primary_color.as_deref().unwrap_or(PRIMARY_DEFAULT)
    }

    pub fn accent_color(&self) -> &str {
        self.accent_color.as_deref().unwrap_or(ACCENT_DEFAULT)
    }

    /// The logo as a `data:` URL, for an `<img>`.
    pub fn logo_url(&self) -> Option<String> {
        self.logo
            .as_ref()
            .map(|logo| format!("data:{};base64,{}", logo.content_type, logo.base64))
    }

    /// The issuer of the invoices the reseller sends its tenants: its name,
    /// address and tax id, and its tax or else the platform's.
    pub fn issuer(&self, platform: &Issuer) -> Issuer {
        let mut address = self.address.clone();
        if let Some(tax_id) = &self.tax_id {
            if !address.is_empty() {
                address.push('\n');
            }
            address.push_str(&format!("Tax ID {tax_id}"));
        }
        Issuer {
            name: self.name.clone(),
            address,
            tax_rate: self.tax_rate.unwrap_or(platform.tax_rate),
            tax_name: self
                .tax_name
                .clone()
                .unwrap_or_else(|| platform.tax_name.clone()),
        }
    }
}

fn is_color(text: &str) -> bool {
    text.len() == 7
        && text.starts_with('#')
        && text[1..].bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        })
}

/// A logo's bytes, checked to be a PNG or JPEG of its stated type and at
/// most [`LOGO_BYTES_MAX`].
fn logo_bytes(logo: &Logo) -> Result<Vec<u8>, BrandError> {
    let invalid = |reason: String| BrandError::Invalid(reason);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&logo.base64)
        .map_err(|error| invalid(format!("logo.base64: {error}")))?;
    if bytes.len() > LOGO_BYTES_MAX {
        return Err(invalid(format!(
            "logo: {} bytes; at most {LOGO_BYTES_MAX}",
            bytes.len()
        )));
    }
    let matches = match logo.content_type.as_str() {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(&[0xff, 0xd8, 0xff]),
        other => {
            return Err(invalid(format!(
                "logo.content_type: {other:?}; give image/png or image/jpeg"
            )));
        }
    };
    match matches {
        true => Ok(bytes),
        false => Err(invalid(format!(
            "logo: the bytes are not a {} image",
            logo.content_type
        ))),
    }
}

/// The brand `reseller` set, if any.
pub fn get(conn: &mut DbConnection, reseller: TenantId) -> Result<Option<Brand>, BrandError> {
    let document: Option<String> = reseller_brands::table
        .find(reseller.0)
        .select(reseller_brands::document)
        .first(conn)
        .optional()?;
    document.map(|text| parse_stored(&text)).transpose()
}

fn parse_stored(text: &str) -> Result<Brand, BrandError> {
    serde_json::from_str(text)
        .map_err(|error| BrandError::Invalid(format!("stored brand: {error}")))
}

/// Stores the reseller's brand, checked, replacing what it had. A domain
/// another reseller has is refused.
pub fn put(
    conn: &mut DbConnection,
    reseller: TenantId,
    brand: Brand,
    now: Timestamp,
) -> Result<Brand, BrandError> {
    let brand = brand.check()?;
    let document = serde_json::to_string(&brand).expect("a brand serialises");
    db::write_transaction(conn, |conn| {
        if let Some(domain) = &brand.domain {
            let holder: Option<i64> = reseller_brands::table
                .filter(reseller_brands::domain.eq(domain))
                .filter(reseller_brands::reseller_id.ne(reseller.0))
                .select(reseller_brands::reseller_id)
                .first(conn)
                .optional()?;
            if holder.is_some() {
                return Err(BrandError::DomainTaken(domain.clone()));
            }
        }
        let values = (
            reseller_brands::domain.eq(&brand.domain),
            reseller_brands::document.eq(&document),
            reseller_brands::updated_at.eq(now.micros()),
        );
        let updated = diesel::update(reseller_brands::table.find(reseller.0))
            .set(values)
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(reseller_brands::table)
                .values((reseller_brands::reseller_id.eq(reseller.0), values))
                .execute(conn)?;
        }
        Ok(brand.clone())
    })
}

/// The reseller whose dashboard answers on `host` (a `Host` header, its
/// port aside), with its brand.
pub fn by_domain(
    conn: &mut DbConnection,
    host: &str,
) -> Result<Option<(TenantId, Brand)>, BrandError> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|byte| byte.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
        .to_ascii_lowercase();
    let row: Option<(i64, String)> = reseller_brands::table
        .filter(reseller_brands::domain.eq(host))
        .select((reseller_brands::reseller_id, reseller_brands::document))
        .first(conn)
        .optional()?;
    row.map(|(reseller, text)| Ok((TenantId(reseller), parse_stored(&text)?)))
        .transpose()
}

/// What `tenant` sees: its reseller's brand (a reseller's own, for a
/// reseller), or, when the reseller set none, one of its name alone;
/// `None` for the platform's own tenants.
pub fn of_tenant(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Option<(TenantId, Brand)>, BrandError> {
    let found = tenants::find(conn, tenant)?;
    let reseller = match (found.kind, found.parent) {
        (Kind::Reseller, _) => found,
        (Kind::Tenant, Some(parent)) => match tenants::find(conn, parent)? {
            parent if parent.kind == Kind::Reseller => parent,
            _ => return Ok(None),
        },
        (Kind::Tenant, None) => return Ok(None),
    };
    let brand = get(conn, reseller.id)?.unwrap_or_else(|| Brand {
        name: reseller.name.clone(),
        ..Brand::default()
    });
    Ok(Some((reseller.id, brand)))
}

/// Who issues `tenant`'s invoices: its reseller, in its brand, for a
/// resold tenant (with the reseller's id, whose own series numbers them);
/// else the platform.
pub fn issuer_for(
    conn: &mut DbConnection,
    tenant: TenantId,
    platform: &Issuer,
) -> Result<(Issuer, Option<TenantId>), BrandError> {
    match of_tenant(conn, tenant)? {
        Some((reseller, brand)) if reseller != tenant => {
            Ok((brand.issuer(platform), Some(reseller)))
        }
        _ => Ok((platform.clone(), None)),
    }
}

/// The address printed under the issuer of `document`: its reseller's
/// (with its tax id) when a reseller issued it, else the platform's.
pub fn issuer_address(
    conn: &mut DbConnection,
    document: &crate::billing::invoices::Document,
    platform: &Issuer,
) -> Result<String, BrandError> {
    let Some(reseller) = document.reseller else {
        return Ok(platform.address.clone());
    };
    Ok(match get(conn, reseller)? {
        Some(brand) => brand.issuer(platform).address,
        None => String::new(),
    })
}
