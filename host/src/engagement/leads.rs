//! Leads: the people a tenant contacts. A lead is found again by any of
//! three keys, each unique within its tenant: its email (case-insensitive),
//! its LinkedIn profile URL (normalised) and its full name with its
//! company's domain. Saving a lead that a key finds merges into it: what
//! the new data says replaces what was stored, empty values never erase,
//! custom fields and tags add up.
//!
//! Also here: do-not-contact with its reason, the tenant-wide suppression
//! list, engagement events (the lead's timeline, which scoring reads), and
//! a lead's export and erasure (GDPR). Scores are computed by
//! [`super::scoring`] whenever a lead or its events change.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use sha2::{Digest as _, Sha256};

use super::scoring::{self, Rules};
use crate::db::DbConnection;
use crate::db::schema::{lead_events, lead_tags, leads, suppressions};
use crate::ids::TenantId;
use crate::units::Timestamp;

/// Characters in one field: longer than any real name, title or URL.
pub const FIELD_CHARS_MAX: usize = 500;
/// Custom fields on one lead, and the length of a custom field's name.
pub const CUSTOM_FIELDS_MAX: usize = 50;
pub const CUSTOM_FIELD_NAME_CHARS_MAX: usize = 64;
/// Tags on one lead, and a tag's length.
pub const TAGS_MAX: usize = 20;
pub const TAG_CHARS_MAX: usize = 64;
/// Leads one tenant may hold: far above a sales team's book, and a bound
/// on what one tenant can make the host store and rescore.
pub const LEADS_PER_TENANT_MAX: i64 = 1_000_000;
/// Leads in one page of a listing.
pub const PAGE_LIMIT_MAX: i64 = 500;
/// Events one lead keeps; the oldest are dropped beyond this, so tracking
/// requests cannot grow a lead's timeline without bound.
pub const EVENTS_PER_LEAD_MAX: i64 = 1_000;
/// Company sizes accepted, in employees.
const COMPANY_SIZE_MAX: i64 = 10_000_000;

/// The text fields every lead has, as the API and CSV mappings name them.
pub const TEXT_FIELDS: [&str; 10] = [
    "first_name",
    "last_name",
    "email",
    "title",
    "company",
    "domain",
    "linkedin_url",
    "phone",
    "location",
    "time_zone",
];

/// What is known about a lead. Text is trimmed and never empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
    pub domain: Option<String>,
    pub linkedin_url: Option<String>,
    pub phone: Option<String>,
    pub location: Option<String>,
    /// IANA time zone, such as `Asia/Tokyo`.
    pub time_zone: Option<String>,
    pub company_size: Option<i64>,
    pub custom_fields: BTreeMap<String, String>,
    pub tags: BTreeSet<String>,
}

impl Fields {
    /// One of [`TEXT_FIELDS`], by name.
    pub fn text(&self, name: &str) -> Option<&str> {
        match name {
            "first_name" => self.first_name.as_deref(),
            "last_name" => self.last_name.as_deref(),
            "email" => self.email.as_deref(),
            "title" => self.title.as_deref(),
            "company" => self.company.as_deref(),
            "domain" => self.domain.as_deref(),
            "linkedin_url" => self.linkedin_url.as_deref(),
            "phone" => self.phone.as_deref(),
            "location" => self.location.as_deref(),
            "time_zone" => self.time_zone.as_deref(),
            _ => None,
        }
    }

    /// Sets one of [`TEXT_FIELDS`]; false for another name.
    pub fn set_text(&mut self, name: &str, value: Option<String>) -> bool {
        let slot = match name {
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "email" => &mut self.email,
            "title" => &mut self.title,
            "company" => &mut self.company,
            "domain" => &mut self.domain,
            "linkedin_url" => &mut self.linkedin_url,
            "phone" => &mut self.phone,
            "location" => &mut self.location,
            "time_zone" => &mut self.time_zone,
            _ => return false,
        };
        *slot = value;
        true
    }

    /// Checks and normalises every field: trims text (empty becomes
    /// none), lower-cases domains, checks addresses, URLs and time zones.
    pub fn validated(mut self) -> Result<Fields, LeadError> {
        for name in TEXT_FIELDS {
            let value = self
                .text(name)
                .map(str::trim)
                .filter(|text| !text.is_empty())
                .map(str::to_owned);
            if let Some(text) = &value {
                check_length(name, text)?;
            }
            self.set_text(name, value);
        }
        if let Some(email) = &self.email {
            lettre::Address::from_str(email).map_err(|error| {
                invalid(
                    "email",
                    format!("{email:?} is not an email address: {error}"),
                )
            })?;
        }
        if let Some(domain) = self.domain.take() {
            self.domain = Some(normalise_domain(&domain)?);
        }
        if let Some(url) = &self.linkedin_url {
            linkedin_key(url)?;
        }
        if let Some(zone) = &self.time_zone {
            chrono_tz::Tz::from_str(zone).map_err(|_| {
                invalid(
                    "time_zone",
                    format!("{zone:?} is not an IANA time zone; use a name such as Europe/Paris"),
                )
            })?;
        }
        if let Some(phone) = &self.phone
            && !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c))
        {
            return Err(invalid(
                "phone",
                format!("{phone:?} holds characters other than digits, spaces and + - ( ) ."),
            ));
        }
        if let Some(size) = self.company_size
            && !(0..=COMPANY_SIZE_MAX).contains(&size)
        {
            return Err(invalid(
                "company_size",
                format!("{size} is not between 0 and {COMPANY_SIZE_MAX}"),
            ));
        }
        let custom = std::mem::take(&mut self.custom_fields);
        for (name, value) in custom {
            let name = name.trim().to_owned();
            let valid = !name.is_empty()
                && name.chars().count() <= CUSTOM_FIELD_NAME_CHARS_MAX
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(invalid(
                    "custom_fields",
                    format!(
                        "{name:?} is not a field name: use 1 to {CUSTOM_FIELD_NAME_CHARS_MAX} letters, digits, _ or -"
                    ),
                ));
            }
            let value = value.trim().to_owned();
            check_length(&format!("custom_fields.{name}"), &value)?;
            if !value.is_empty() {
                self.custom_fields.insert(name, value);
            }
        }
        let tags = std::mem::take(&mut self.tags);
        for tag in tags {
            let tag = tag.trim().to_owned();
            if tag.is_empty() || tag.chars().count() > TAG_CHARS_MAX || tag.contains(',') {
                return Err(invalid(
                    "tags",
                    format!(
                        "{tag:?} is not a tag: use 1 to {TAG_CHARS_MAX} characters without commas"
                    ),
                ));
            }
            self.tags.insert(tag);
        }
        self.check_counts()?;
        Ok(self)
    }

    fn check_counts(&self) -> Result<(), LeadError> {
        if self.custom_fields.len() > CUSTOM_FIELDS_MAX {
            return Err(invalid(
                "custom_fields",
                format!("a lead holds at most {CUSTOM_FIELDS_MAX} custom fields"),
            ));
        }
        if self.tags.len() > TAGS_MAX {
            return Err(invalid(
                "tags",
                format!("a lead holds at most {TAGS_MAX} tags"),
            ));
        }
        Ok(())
    }

    /// Merges `other` into these fields: its values replace these, its
    /// absent values change nothing, custom fields and tags add up.
    pub fn merge(&mut self, other: &Fields) -> Result<(), LeadError> {
        for name in TEXT_FIELDS {
            if let Some(value) = other.text(name) {
                self.set_text(name, Some(value.to_owned()));
            }
        }
        if other.company_size.is_some() {
            self.company_size = other.company_size;
        }
        self.custom_fields.extend(
            other
                .custom_fields
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        self.tags.extend(other.tags.iter().cloned());
        self.check_counts()
    }

    /// The keys that find this lead again.
    pub fn keys(&self) -> Keys {
        let email = self.email.as_deref().map(str::to_lowercase);
        let linkedin = self
            .linkedin_url
            .as_deref()
            .and_then(|url| linkedin_key(url).ok());
        let name = match (&self.first_name, &self.last_name, &self.domain) {
            (Some(first), Some(last), Some(domain)) => Some(format!(
                "{} {}@{}",
                first.to_lowercase(),
                last.to_lowercase(),
                domain
            )),
            _ => None,
        };
        Keys {
            email,
            linkedin,
            name,
        }
    }

    fn search_text(&self) -> String {
        [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.company,
            &self.title,
        ]
        .into_iter()
        .flatten()
        .map(|text| text.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
    }
}

fn check_length(name: &str, text: &str) -> Result<(), LeadError> {
    match text.chars().count() > FIELD_CHARS_MAX {
        true => Err(invalid(
            name,
            format!("longer than {FIELD_CHARS_MAX} characters"),
        )),
        false => Ok(()),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> LeadError {
    LeadError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// `https://www.Example.com/about` → `example.com`.
fn normalise_domain(text: &str) -> Result<String, LeadError> {
    let lower = text.trim().to_lowercase();
    let without_scheme = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = without_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = host.strip_prefix("www.").unwrap_or(host);
    let valid = host.contains('.')
        && !host.starts_with('.')
        && !host.ends_with('.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    match valid {
        true => Ok(host.to_owned()),
        false => Err(invalid(
            "domain",
            format!("{text:?} is not a domain name such as example.com"),
        )),
    }
}

/// A LinkedIn profile URL's key: `linkedin.com/in/jane-doe`, whatever the
/// scheme, `www.` or country subdomain, query or trailing slash.
pub fn linkedin_key(url: &str) -> Result<String, LeadError> {
    let lower = url.trim().to_lowercase();
    let without_scheme = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let without_query = without_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let (host, path) = without_query.split_once('/').unwrap_or((without_query, ""));
    let is_linkedin = host == "linkedin.com" || host.ends_with(".linkedin.com");
    let profile = path
        .split('/')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>();
    match (is_linkedin, profile.as_slice()) {
        (true, [kind, name]) if !name.is_empty() => Ok(format!("linkedin.com/{kind}/{name}")),
        _ => Err(invalid(
            "linkedin_url",
            format!(
                "{url:?} is not a LinkedIn profile URL such as https://www.linkedin.com/in/jane-doe"
            ),
        )),
    }
}

/// The keys that find a lead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    pub email: Option<String>,
    pub linkedin: Option<String>,
    pub name: Option<String>,
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.linkedin.is_none() && self.name.is_none()
    }
}

/// Why a lead may not be contacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoNotContact {
    /// The person asked to receive nothing more.
    Unsubscribed,
    /// Mail to the address bounced for good.
    Bounced,
    /// Someone on the tenant's team said so.
    Manual,
}

impl DoNotContact {
    pub fn as_str(self) -> &'static str {
        match self {
            DoNotContact::Unsubscribed => "unsubscribed",
            DoNotContact::Bounced => "bounced",
            DoNotContact::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<DoNotContact> {
        match text {
            "unsubscribed" => Some(DoNotContact::Unsubscribed),
            "bounced" => Some(DoNotContact::Bounced),
            "manual" => Some(DoNotContact::Manual),
            _ => None,
        }
    }
}

/// A stored lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lead {
    pub id: i64,
    pub tenant: TenantId,
    pub fields: Fields,
    pub do_not_contact: Option<DoNotContact>,
    pub do_not_contact_at: Option<Timestamp>,
    pub score: i64,
    pub source: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error("lead {0} not found")]
    NotFound(i64),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(
        "a lead needs an email, a LinkedIn URL, or a first and last name with the company's domain, to be found again"
    )]
    NoIdentity,
    #[error(
        "the data matches lead {first} and lead {second}, which are different people or need merging by hand; change one of them first"
    )]
    Ambiguous { first: i64, second: i64 },
    #[error("this tenant holds {LEADS_PER_TENANT_MAX} leads, the most it may; erase some first")]
    TooMany,
    #[error(
        "lead {id} is do-not-contact because it {reason}; only a manual do-not-contact can be lifted"
    )]
    NotManual { id: i64, reason: &'static str },
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = leads)]
struct LeadRow {
    id: i64,
    tenant_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    title: Option<String>,
    company: Option<String>,
    domain: Option<String>,
    linkedin_url: Option<String>,
    phone: Option<String>,
    location: Option<String>,
    time_zone: Option<String>,
    company_size: Option<i64>,
    custom_fields: String,
    do_not_contact: Option<String>,
    do_not_contact_at: Option<i64>,
    score: i64,
    source: String,
    created_at: i64,
    updated_at: i64,
}

impl LeadRow {
    fn into_lead(self, tags: BTreeSet<String>) -> Lead {
        Lead {
            id: self.id,
            tenant: TenantId(self.tenant_id),
            fields: Fields {
                first_name: self.first_name,
                last_name: self.last_name,
                email: self.email,
                title: self.title,
                company: self.company,
                domain: self.domain,
                linkedin_url: self.linkedin_url,
                phone: self.phone,
                location: self.location,
                time_zone: self.time_zone,
                company_size: self.company_size,
                // Written by this module as a JSON object of strings.
                custom_fields: serde_json::from_str(&self.custom_fields).unwrap_or_default(),
                tags,
            },
            do_not_contact: self.do_not_contact.as_deref().and_then(DoNotContact::parse),
            do_not_contact_at: self.do_not_contact_at.map(Timestamp::from_micros),
            score: self.score,
            source: self.source,
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
        }
    }
}

/// One lead of the tenant's.
pub fn get(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<Lead, LeadError> {
    let row = leads::table
        .filter(leads::tenant_id.eq(tenant.0))
        .filter(leads::id.eq(id))
        .select(LeadRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(LeadError::NotFound(id))?;
    let tags = tags_of(conn, &[id])?.remove(&id).unwrap_or_default();
    Ok(row.into_lead(tags))
}

fn tags_of(
    conn: &mut DbConnection,
    ids: &[i64],
) -> Result<BTreeMap<i64, BTreeSet<String>>, DieselError> {
    let rows: Vec<(i64, String)> = lead_tags::table
        .filter(lead_tags::lead_id.eq_any(ids))
        .select((lead_tags::lead_id, lead_tags::tag))
        .load(conn)?;
    let mut tags: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (id, tag) in rows {
        tags.entry(id).or_default().insert(tag);
    }
    Ok(tags)
}

/// What saving a lead did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    pub id: i64,
    /// False when it merged into a lead that one of its keys found.
    pub created: bool,
}

/// Creates a lead, or merges `fields` (already [`Fields::validated`]) into
/// the lead one of its keys finds. Refused when the keys find two leads,
/// or when the merge would give the lead a key another lead holds. Run it
/// in a write transaction; it does not check the tenant's lead count
/// (see [`ensure_room`]).
pub fn save(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    fields: &Fields,
    source: &str,
    now: Timestamp,
) -> Result<Saved, LeadError> {
    let keys = fields.keys();
    if keys.is_empty() {
        return Err(LeadError::NoIdentity);
    }
    let found = holders(conn, tenant, &keys)?;
    let (lead, created) = match found.as_slice() {
        [] => {
            let id = insert(conn, tenant, fields, source, now)?;
            (id, true)
        }
        [id] => {
            let mut merged = get(conn, tenant, *id)?.fields;
            merged.merge(fields)?;
            if let Some(other) = holders(conn, tenant, &merged.keys())?
                .into_iter()
                .find(|holder| holder != id)
            {
                return Err(LeadError::Ambiguous {
                    first: *id,
                    second: other,
                });
            }
            write(conn, tenant, *id, &merged, now)?;
            (*id, false)
        }
        [first, second, ..] => {
            return Err(LeadError::Ambiguous {
                first: *first,
                second: *second,
            });
        }
    };
    if let Some(email) = &fields.email
        && let Some(reason) = suppression_of(conn, tenant, email)?
    {
        set_do_not_contact(conn, tenant, lead, reason, now)?;
    }
    scoring::refresh(conn, tenant, rules, lead, now)?;
    Ok(Saved { id: lead, created })
}

/// The leads holding any of `keys`, lowest id first.
fn holders(
    conn: &mut DbConnection,
    tenant: TenantId,
    keys: &Keys,
) -> Result<Vec<i64>, DieselError> {
    let mut ids = BTreeSet::new();
    let of_tenant = || {
        leads::table
            .filter(leads::tenant_id.eq(tenant.0))
            .select(leads::id)
    };
    if let Some(email) = &keys.email {
        let found = of_tenant()
            .filter(leads::email_key.eq(email))
            .first::<i64>(conn);
        ids.extend(found.optional()?);
    }
    if let Some(linkedin) = &keys.linkedin {
        let found = of_tenant()
            .filter(leads::linkedin_key.eq(linkedin))
            .first::<i64>(conn);
        ids.extend(found.optional()?);
    }
    if let Some(name) = &keys.name {
        let found = of_tenant()
            .filter(leads::name_key.eq(name))
            .first::<i64>(conn);
        ids.extend(found.optional()?);
    }
    Ok(ids.into_iter().collect())
}

fn insert(
    conn: &mut DbConnection,
    tenant: TenantId,
    fields: &Fields,
    source: &str,
    now: Timestamp,
) -> Result<i64, LeadError> {
    let keys = fields.keys();
    let id = diesel::insert_into(leads::table)
        .values((
            leads::tenant_id.eq(tenant.0),
            columns(fields),
            leads::email_key.eq(&keys.email),
            leads::linkedin_key.eq(&keys.linkedin),
            leads::name_key.eq(&keys.name),
            leads::search_text.eq(fields.search_text()),
            leads::score.eq(0),
            leads::source.eq(source),
            leads::created_at.eq(now.micros()),
            leads::updated_at.eq(now.micros()),
        ))
        .returning(leads::id)
        .get_result::<i64>(conn)?;
    write_tags(conn, tenant, id, &fields.tags)?;
    Ok(id)
}

#[allow(clippy::type_complexity)]
fn columns(
    fields: &Fields,
) -> (
    (
        diesel::dsl::Eq<leads::first_name, Option<String>>,
        diesel::dsl::Eq<leads::last_name, Option<String>>,
        diesel::dsl::Eq<leads::email, Option<String>>,
        diesel::dsl::Eq<leads::title, Option<String>>,
        diesel::dsl::Eq<leads::company, Option<String>>,
        diesel::dsl::Eq<leads::domain, Option<String>>,
    ),
    (
        diesel::dsl::Eq<leads::linkedin_url, Option<String>>,
        diesel::dsl::Eq<leads::phone, Option<String>>,
        diesel::dsl::Eq<leads::location, Option<String>>,
        diesel::dsl::Eq<leads::time_zone, Option<String>>,
        diesel::dsl::Eq<leads::company_size, Option<i64>>,
        diesel::dsl::Eq<leads::custom_fields, String>,
    ),
) {
    (
        (
            leads::first_name.eq(fields.first_name.clone()),
            leads::last_name.eq(fields.last_name.clone()),
            leads::email.eq(fields.email.clone()),
            leads::title.eq(fields.title.clone()),
            leads::company.eq(fields.company.clone()),
            leads::domain.eq(fields.domain.clone()),
        ),
        (
            leads::linkedin_url.eq(fields.linkedin_url.clone()),
            leads::phone.eq(fields.phone.clone()),
            leads::location.eq(fields.location.clone()),
            leads::time_zone.eq(fields.time_zone.clone()),
            leads::company_size.eq(fields.company_size),
            leads::custom_fields
                .eq(serde_json::to_string(&fields.custom_fields)
                    .expect("a map of strings serialises")),
        ),
    )
}

/// Replaces a lead's fields and tags with `fields`.
fn write(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    fields: &Fields,
    now: Timestamp,
) -> Result<(), LeadError> {
    let keys = fields.keys();
    diesel::update(leads::table.filter(leads::id.eq(id)))
        .set((
            columns(fields),
            leads::email_key.eq(&keys.email),
            leads::linkedin_key.eq(&keys.linkedin),
            leads::name_key.eq(&keys.name),
            leads::search_text.eq(fields.search_text()),
            leads::updated_at.eq(now.micros()),
        ))
        .execute(conn)?;
    diesel::delete(lead_tags::table.filter(lead_tags::lead_id.eq(id))).execute(conn)?;
    write_tags(conn, tenant, id, &fields.tags)?;
    Ok(())
}

fn write_tags(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    tags: &BTreeSet<String>,
) -> Result<(), DieselError> {
    for tag in tags {
        diesel::insert_into(lead_tags::table)
            .values((
                lead_tags::lead_id.eq(id),
                lead_tags::tenant_id.eq(tenant.0),
                lead_tags::tag.eq(tag),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Changes a stored lead: `change` edits its fields, which are then
/// checked again. Refused when the new keys find another lead.
pub fn update(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    id: i64,
    now: Timestamp,
    change: impl FnOnce(&mut Fields),
) -> Result<Lead, LeadError> {
    let mut fields = get(conn, tenant, id)?.fields;
    change(&mut fields);
    let fields = fields.validated()?;
    let keys = fields.keys();
    if keys.is_empty() {
        return Err(LeadError::NoIdentity);
    }
    if let Some(other) = holders(conn, tenant, &keys)?
        .into_iter()
        .find(|holder| *holder != id)
    {
        return Err(LeadError::Ambiguous {
            first: id,
            second: other,
        });
    }
    write(conn, tenant, id, &fields, now)?;
    scoring::refresh(conn, tenant, rules, id, now)?;
    get(conn, tenant, id)
}

/// How many more leads the tenant may hold.
pub fn room(conn: &mut DbConnection, tenant: TenantId) -> Result<i64, LeadError> {
    let held: i64 = leads::table
        .filter(leads::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)?;
    Ok((LEADS_PER_TENANT_MAX - held).max(0))
}

/// Refused when the tenant cannot hold `adding` more leads.
pub fn ensure_room(
    conn: &mut DbConnection,
    tenant: TenantId,
    adding: usize,
) -> Result<(), LeadError> {
    let held: i64 = leads::table
        .filter(leads::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)?;
    match held.saturating_add(adding as i64) > LEADS_PER_TENANT_MAX {
        true => Err(LeadError::TooMany),
        false => Ok(()),
    }
}

/// Which leads a listing shows. Every criterion set must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Words in the names, email, company or title (case-insensitive).
    pub text: Option<String>,
    pub tag: Option<String>,
    pub score_min: Option<i64>,
    pub score_max: Option<i64>,
    /// Only leads that are (true) or are not (false) do-not-contact.
    pub do_not_contact: Option<bool>,
}

/// The order of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Highest score first (the default), then newest.
    ScoreDesc,
    ScoreAsc,
    Newest,
    Oldest,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "-score" => Some(Sort::ScoreDesc),
            "score" => Some(Sort::ScoreAsc),
            "-created" => Some(Sort::Newest),
            "created" => Some(Sort::Oldest),
            _ => None,
        }
    }
}

/// Where a page ends: the last lead's score and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub score: i64,
    pub id: i64,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let (score, id) = text.split_once('.')?;
        Some(Cursor {
            score: score.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.score, self.id)
    }
}

/// One page of a listing, and where the next starts.
#[derive(Debug)]
pub struct Page {
    pub leads: Vec<Lead>,
    pub next: Option<Cursor>,
}

pub fn list(
    conn: &mut DbConnection,
    tenant: TenantId,
    filter: &Filter,
    sort: Sort,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Page, LeadError> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut query = leads::table
        .filter(leads::tenant_id.eq(tenant.0))
        .select(LeadRow::as_select())
        .limit(limit + 1)
        .into_boxed();
    query = match sort {
        Sort::ScoreDesc => query.order((leads::score.desc(), leads::id.desc())),
        Sort::ScoreAsc => query.order((leads::score.asc(), leads::id.asc())),
        Sort::Newest => query.order(leads::id.desc()),
        Sort::Oldest => query.order(leads::id.asc()),
    };
    if let Some(Cursor { score, id }) = after {
        query = match sort {
            Sort::ScoreDesc => query.filter(
                leads::score
                    .lt(score)
                    .or(leads::score.eq(score).and(leads::id.lt(id))),
            ),
            Sort::ScoreAsc => query.filter(
                leads::score
                    .gt(score)
                    .or(leads::score.eq(score).and(leads::id.gt(id))),
            ),
            Sort::Newest => query.filter(leads::id.lt(id)),
            Sort::Oldest => query.filter(leads::id.gt(id)),
        };
    }
    if let Some(text) = &filter.text {
        for word in text.split_whitespace() {
            let escaped = word
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query = query.filter(leads::search_text.like(format!("%{escaped}%")).escape('\\'));
        }
    }
    if let Some(tag) = &filter.tag {
        query = query.filter(
            leads::id.eq_any(
                lead_tags::table
                    .filter(lead_tags::tenant_id.eq(tenant.0))
                    .filter(lead_tags::tag.eq(tag.clone()))
                    .select(lead_tags::lead_id),
            ),
        );
    }
    if let Some(min) = filter.score_min {
        query = query.filter(leads::score.ge(min));
    }
    if let Some(max) = filter.score_max {
        query = query.filter(leads::score.le(max));
    }
    query = match filter.do_not_contact {
        Some(true) => query.filter(leads::do_not_contact.is_not_null()),
        Some(false) => query.filter(leads::do_not_contact.is_null()),
        None => query,
    };
    let mut rows: Vec<LeadRow> = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let mut tags = tags_of(conn, &ids)?;
    let leads: Vec<Lead> = rows
        .into_iter()
        .map(|row| {
            let id = row.id;
            row.into_lead(tags.remove(&id).unwrap_or_default())
        })
        .collect();
    let next = match more {
        true => leads.last().map(|lead| Cursor {
            score: lead.score,
            id: lead.id,
        }),
        false => None,
    };
    Ok(Page { leads, next })
}

/// Marks a lead do-not-contact. A stronger reason (unsubscribed, bounced)
/// replaces a manual one; the first such reason is kept.
pub fn set_do_not_contact(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    reason: DoNotContact,
    now: Timestamp,
) -> Result<(), LeadError> {
    let current = get(conn, tenant, id)?.do_not_contact;
    let replace = match current {
        None => true,
        Some(DoNotContact::Manual) => reason != DoNotContact::Manual,
        Some(_) => false,
    };
    if replace {
        diesel::update(leads::table.filter(leads::id.eq(id)))
            .set((
                leads::do_not_contact.eq(reason.as_str()),
                leads::do_not_contact_at.eq(now.micros()),
                leads::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Lifts a manual do-not-contact. An unsubscribe or a bounce stays: the
/// person asked, or the address does not exist.
pub fn clear_do_not_contact(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    now: Timestamp,
) -> Result<(), LeadError> {
    match get(conn, tenant, id)?.do_not_contact {
        None => Ok(()),
        Some(DoNotContact::Manual) => {
            diesel::update(leads::table.filter(leads::id.eq(id)))
                .set((
                    leads::do_not_contact.eq(None::<String>),
                    leads::do_not_contact_at.eq(None::<i64>),
                    leads::updated_at.eq(now.micros()),
                ))
                .execute(conn)?;
            Ok(())
        }
        Some(DoNotContact::Unsubscribed) => Err(LeadError::NotManual {
            id,
            reason: "unsubscribed",
        }),
        Some(DoNotContact::Bounced) => Err(LeadError::NotManual {
            id,
            reason: "bounced",
        }),
    }
}

/// How a suppressed address is kept: SHA-256 of it lower-cased, in hex.
pub fn address_hash(address: &str) -> String {
    let digest = Sha256::digest(address.trim().to_lowercase().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Adds `address` to the tenant's suppression list and marks the lead that
/// has it do-not-contact. Returns that lead, if any.
pub fn suppress(
    conn: &mut DbConnection,
    tenant: TenantId,
    address: &str,
    reason: DoNotContact,
    now: Timestamp,
) -> Result<Option<i64>, LeadError> {
    let hash = address_hash(address);
    let known: Option<String> = suppressions::table
        .filter(suppressions::tenant_id.eq(tenant.0))
        .filter(suppressions::address_hash.eq(&hash))
        .select(suppressions::reason)
        .first(conn)
        .optional()?;
    if known.is_none() {
        diesel::insert_into(suppressions::table)
            .values((
                suppressions::tenant_id.eq(tenant.0),
                suppressions::address_hash.eq(&hash),
                suppressions::reason.eq(reason.as_str()),
                suppressions::created_at.eq(now.micros()),
            ))
            .execute(conn)?;
    }
    let lead: Option<i64> = leads::table
        .filter(leads::tenant_id.eq(tenant.0))
        .filter(leads::email_key.eq(address.trim().to_lowercase()))
        .select(leads::id)
        .first(conn)
        .optional()?;
    if let Some(id) = lead {
        set_do_not_contact(conn, tenant, id, reason, now)?;
    }
    Ok(lead)
}

/// Whether the tenant must not write to `address`.
pub fn is_suppressed(
    conn: &mut DbConnection,
    tenant: TenantId,
    address: &str,
) -> Result<bool, DieselError> {
    Ok(suppression_of(conn, tenant, address)?.is_some())
}

/// Why the tenant must not write to `address`, if it must not.
pub fn suppression_of(
    conn: &mut DbConnection,
    tenant: TenantId,
    address: &str,
) -> Result<Option<DoNotContact>, DieselError> {
    let reason: Option<String> = suppressions::table
        .filter(suppressions::tenant_id.eq(tenant.0))
        .filter(suppressions::address_hash.eq(address_hash(address)))
        .select(suppressions::reason)
        .first(conn)
        .optional()?;
    Ok(reason.as_deref().and_then(DoNotContact::parse))
}

/// Something that happened with a lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub detail: Option<String>,
    pub step_run: Option<i64>,
}

/// An event to record on a lead's timeline.
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    /// One of [`super::scoring::EVENT_KINDS`], or another word for the
    /// timeline only (`note`, `enrolled`...).
    pub kind: &'a str,
    pub occurred_at: Timestamp,
    pub detail: Option<&'a str>,
    /// The sequence step that caused it.
    pub step_run: Option<i64>,
}

/// Records an event on a lead's timeline and rescores the lead. Beyond
/// [`EVENTS_PER_LEAD_MAX`] the oldest events go.
pub fn record_event(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &Rules,
    lead: i64,
    event: NewEvent<'_>,
    now: Timestamp,
) -> Result<(), LeadError> {
    let detail = event
        .detail
        .map(|text| text.chars().take(FIELD_CHARS_MAX).collect::<String>());
    diesel::insert_into(lead_events::table)
        .values((
            lead_events::tenant_id.eq(tenant.0),
            lead_events::lead_id.eq(lead),
            lead_events::kind.eq(event.kind),
            lead_events::occurred_at.eq(event.occurred_at.micros()),
            lead_events::detail.eq(detail),
            lead_events::step_run_id.eq(event.step_run),
        ))
        .execute(conn)?;
    let excess: Vec<i64> = lead_events::table
        .filter(lead_events::lead_id.eq(lead))
        .order((lead_events::occurred_at.desc(), lead_events::id.desc()))
        .offset(EVENTS_PER_LEAD_MAX)
        .limit(EVENTS_PER_LEAD_MAX)
        .select(lead_events::id)
        .load(conn)?;
    if !excess.is_empty() {
        diesel::delete(lead_events::table.filter(lead_events::id.eq_any(excess))).execute(conn)?;
    }
    scoring::refresh(conn, tenant, rules, lead, now)?;
    Ok(())
}

/// A lead's events, newest first.
pub fn events(
    conn: &mut DbConnection,
    tenant: TenantId,
    lead: i64,
) -> Result<Vec<Event>, DieselError> {
    #[derive(Queryable, Selectable)]
    #[diesel(table_name = lead_events)]
    struct EventRow {
        id: i64,
        kind: String,
        occurred_at: i64,
        detail: Option<String>,
        step_run_id: Option<i64>,
    }
    let rows: Vec<EventRow> = lead_events::table
        .filter(lead_events::tenant_id.eq(tenant.0))
        .filter(lead_events::lead_id.eq(lead))
        .order((lead_events::occurred_at.desc(), lead_events::id.desc()))
        .limit(EVENTS_PER_LEAD_MAX)
        .select(EventRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| Event {
            id: row.id,
            kind: row.kind,
            occurred_at: Timestamp::from_micros(row.occurred_at),
            detail: row.detail,
            step_run: row.step_run_id,
        })
        .collect())
}

/// Erases a lead and everything stored about it as a person (GDPR art.
/// 17): its fields, tags, timeline, enrollments with their step runs, and
/// tasks about it. An unsubscribe or bounce stays on
/// the suppression list, which holds only a hash of the address, so the
/// person is still never written to again.
pub fn erase(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<(), LeadError> {
    use crate::db::schema::{deals, enrollments, step_runs, tasks};
    get(conn, tenant, id)?;
    // Deals are the tenant's business, not the person's: they stay,
    // without the lead.
    diesel::update(deals::table.filter(deals::lead_id.eq(id)))
        .set(deals::lead_id.eq(None::<i64>))
        .execute(conn)?;
    // Its sequences' runs (which hold its address) and tasks about it go
    // with it.
    let enrolled = enrollments::table
        .filter(enrollments::lead_id.eq(id))
        .select(enrollments::id);
    let runs = step_runs::table
        .filter(step_runs::enrollment_id.eq_any(enrolled))
        .select(step_runs::id);
    diesel::delete(
        tasks::table.filter(
            tasks::lead_id
                .eq(id)
                .or(tasks::step_run_id.eq_any(runs.nullable())),
        ),
    )
    .execute(conn)?;
    diesel::delete(step_runs::table.filter(step_runs::enrollment_id.eq_any(enrolled)))
        .execute(conn)?;
    diesel::delete(enrollments::table.filter(enrollments::lead_id.eq(id))).execute(conn)?;
    diesel::delete(lead_events::table.filter(lead_events::lead_id.eq(id))).execute(conn)?;
    diesel::delete(lead_tags::table.filter(lead_tags::lead_id.eq(id))).execute(conn)?;
    diesel::delete(leads::table.filter(leads::id.eq(id))).execute(conn)?;
    Ok(())
}
