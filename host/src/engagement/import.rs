//! Bringing leads in: from a CSV file with a column mapping, and from a
//! lead-source plugin (search, then optionally enrich), each lead merged
//! into the one its keys find ([`super::leads::save`]).
//!
//! A CSV import reports every row: created, updated (merged into a lead
//! that existed, or that an earlier row of the same file created) or
//! skipped, with the row's line and why. Rows are written in batches of
//! [`IMPORT_BATCH_ROWS`], each its own transaction, so a 10,000-row file
//! never holds the database's write lock for long.

use std::collections::BTreeMap;

use super::leads::{self, Fields, LeadError, TEXT_FIELDS};
use super::scoring;
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::metering::{MeterError, Request};
use crate::runtime::{self, Call, Reply, SearchQuery};
use crate::units::{Credits, Timestamp};

/// Rows in one CSV file: well above the 10,000 a sales team uploads.
pub const IMPORT_ROWS_MAX: usize = 50_000;
/// Rows written per transaction.
pub const IMPORT_BATCH_ROWS: usize = 500;
/// Skipped rows the report lists one by one (all are counted).
pub const SKIPS_LISTED_MAX: usize = 1_000;
/// Columns in a CSV file.
pub const COLUMNS_MAX: usize = 200;
/// Leads one plugin import may ask a source for.
pub const SOURCE_LEADS_MAX: u32 = 1_000;

/// Where a CSV column goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One of [`TEXT_FIELDS`].
    Field(&'static str),
    CompanySize,
    /// A custom field by name.
    Custom(String),
    /// Tags, separated by commas or semicolons.
    Tags,
    Ignore,
}

impl Target {
    /// `email`, `company_size`, `tags`, `custom.<name>` or `ignore`.
    pub fn parse(text: &str) -> Option<Target> {
        match text {
            "company_size" => Some(Target::CompanySize),
            "tags" => Some(Target::Tags),
            "ignore" => Some(Target::Ignore),
            _ => match text.strip_prefix("custom.") {
                Some(name) if !name.is_empty() => Some(Target::Custom(name.to_owned())),
                Some(_) => None,
                None => TEXT_FIELDS
                    .iter()
                    .find(|field| **field == text)
                    .map(|field| Target::Field(field)),
            },
        }
    }

    /// The target a header names by itself: `Email`, `First Name`,
    /// `LinkedIn URL`, `Company Size`, `Tags`...
    fn guess(header: &str) -> Target {
        let normal: String = header
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let normal = normal.trim_matches('_');
        let alias = match normal {
            "email_address" | "e_mail" | "e_mail_address" | "work_email" => "email",
            "first" | "firstname" | "given_name" => "first_name",
            "last" | "lastname" | "surname" | "family_name" => "last_name",
            "job_title" | "position" => "title",
            "company_name" | "organization" | "organisation" => "company",
            "website" | "company_domain" | "company_website" => "domain",
            "linkedin" | "linkedin_profile" | "linkedin_url" | "linkedin_profile_url" => {
                "linkedin_url"
            }
            "phone_number" | "mobile" => "phone",
            "city" | "country" => "location",
            "timezone" | "tz" => "time_zone",
            "employees" | "company_size" | "headcount" | "employee_count" => "company_size",
            other => other,
        };
        Target::parse(alias)
            .filter(|target| !matches!(target, Target::Custom(_) | Target::Ignore))
            .unwrap_or(Target::Ignore)
    }
}

impl Target {
    /// The target as a mapping names it.
    pub fn name(&self) -> String {
        match self {
            Target::Field(name) => (*name).to_owned(),
            Target::CompanySize => "company_size".to_owned(),
            Target::Custom(name) => format!("custom.{name}"),
            Target::Tags => "tags".to_owned(),
            Target::Ignore => "ignore".to_owned(),
        }
    }
}

/// Every target a mapping may name but custom fields (`custom.<name>`),
/// in the order a form lists them.
pub fn targets() -> Vec<String> {
    TEXT_FIELDS
        .iter()
        .map(|field| (*field).to_owned())
        .chain(["company_size", "tags", "ignore"].map(str::to_owned))
        .collect()
}

/// The mapping an import without one uses: each column to the field its
/// header names (`E-mail Address` to `email`), the rest ignored.
pub fn guessed_mapping(columns: &[String]) -> Result<BTreeMap<String, String>, ImportError> {
    if columns.len() > COLUMNS_MAX {
        return Err(ImportError::Mapping(format!(
            "{} columns; at most {COLUMNS_MAX}",
            columns.len()
        )));
    }
    Ok(columns
        .iter()
        .map(|column| (column.clone(), Target::guess(column).name()))
        .collect())
}

/// A CSV import's request.
#[derive(Clone, Debug, Default)]
pub struct CsvImport {
    pub csv: Vec<u8>,
    /// Header → target. None: each header maps to the field it names, and
    /// the rest are ignored.
    pub mapping: Option<BTreeMap<String, String>>,
    /// Tags added to every lead the file creates or updates.
    pub tags: Vec<String>,
}

/// A row that was not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The row's line in the file (the header is line 1).
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub skipped: usize,
    /// The first [`SKIPS_LISTED_MAX`] skipped rows.
    pub skips: Vec<Skip>,
    /// Columns the mapping left out.
    pub ignored_columns: Vec<String>,
}

impl Report {
    fn skip(&mut self, line: u64, reason: String) {
        self.skipped += 1;
        if self.skips.len() < SKIPS_LISTED_MAX {
            self.skips.push(Skip { line, reason });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is not CSV with a header row: {0}")]
    NotCsv(String),
    #[error("{0}")]
    Mapping(String),
    #[error("the file has more than {IMPORT_ROWS_MAX} rows; split it")]
    TooManyRows,
    #[error(transparent)]
    Lead(#[from] LeadError),
    #[error(transparent)]
    Meter(#[from] MeterError),
    /// The search was made (and charged what it found) but failed.
    #[error("{plugin}: {error}")]
    Search {
        plugin: String,
        error: runtime::CallError,
    },
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for ImportError {
    fn from(error: diesel::result::Error) -> ImportError {
        ImportError::Lead(LeadError::Database(error))
    }
}

/// The column targets of a file, from its header and the mapping.
fn mapping(
    headers: &csv::StringRecord,
    explicit: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<Target>, Vec<String>), ImportError> {
    if headers.len() > COLUMNS_MAX {
        return Err(ImportError::Mapping(format!(
            "the file has {} columns; at most {COLUMNS_MAX}",
            headers.len()
        )));
    }
    if let Some(explicit) = explicit
        && let Some(missing) = explicit
            .keys()
            .find(|name| !headers.iter().any(|header| header == name.as_str()))
    {
        return Err(ImportError::Mapping(format!(
            "the mapping names column {missing:?}, which the file's header does not have"
        )));
    }
    let mut targets = Vec::with_capacity(headers.len());
    let mut ignored = Vec::new();
    for header in headers {
        let target = match explicit {
            None => Target::guess(header),
            Some(explicit) => match explicit.get(header) {
                None => Target::Ignore,
                Some(name) => Target::parse(name).ok_or_else(|| {
                    ImportError::Mapping(format!(
                        "the mapping sends column {header:?} to {name:?}, which is not one of {}, company_size, tags, custom.<name> or ignore",
                        TEXT_FIELDS.join(", ")
                    ))
                })?,
            },
        };
        if target == Target::Ignore {
            ignored.push(header.to_owned());
        }
        targets.push(target);
    }
    let maps = |field: &str| {
        targets
            .iter()
            .any(|target| matches!(target, Target::Field(name) if *name == field))
    };
    let identifies = maps("email")
        || maps("linkedin_url")
        || (maps("first_name") && maps("last_name") && maps("domain"));
    if !identifies {
        return Err(ImportError::Mapping(
            "no column maps to email or linkedin_url (or to first_name, last_name and domain together), so no row could be matched to a lead".to_owned(),
        ));
    }
    Ok((targets, ignored))
}

/// One CSV row's fields, before validation.
fn row_fields(targets: &[Target], record: &csv::StringRecord) -> Result<Fields, String> {
    let mut fields = Fields::default();
    for (target, cell) in targets.iter().zip(record.iter()) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        match target {
            Target::Field(name) => {
                fields.set_text(name, Some(cell.to_owned()));
            }
            Target::CompanySize => {
                let digits: String = cell
                    .chars()
                    .filter(|c| !matches!(c, ',' | ' ' | '_'))
                    .collect();
                let size = digits
                    .parse::<i64>()
                    .map_err(|_| format!("company_size: {cell:?} is not a whole number"))?;
                fields.company_size = Some(size);
            }
            Target::Custom(name) => {
                fields.custom_fields.insert(name.clone(), cell.to_owned());
            }
            Target::Tags => {
                fields.tags.extend(
                    cell.split([',', ';'])
                        .map(str::trim)
                        .filter(|tag| !tag.is_empty())
                        .map(str::to_owned),
                );
            }
            Target::Ignore => {}
        }
    }
    Ok(fields)
}

/// Imports a CSV file into the tenant's leads.
pub fn import_csv(
    database: &Database,
    tenant: TenantId,
    request: &CsvImport,
    now: Timestamp,
) -> Result<Report, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(request.csv.as_slice());
    let headers = reader
        .headers()
        .map_err(|error| ImportError::NotCsv(error.to_string()))?
        .clone();
    let (targets, ignored) = mapping(&headers, request.mapping.as_ref())?;
    let mut report = Report {
        ignored_columns: ignored,
        ..Report::default()
    };
    // Read and check every row before writing any, so a file that is too
    // long or not CSV changes nothing.
    let mut rows: Vec<(u64, Result<Fields, String>)> = Vec::new();
    for record in reader.records() {
        if rows.len() == IMPORT_ROWS_MAX {
            return Err(ImportError::TooManyRows);
        }
        let (line, fields) = match record {
            Err(error) => {
                let line = error.position().map_or(0, |position| position.line());
                (line, Err(error.to_string()))
            }
            Ok(record) => {
                let line = record.position().map_or(0, |position| position.line());
                let fields = match record.len() > headers.len() {
                    true => Err(format!(
                        "the row has {} cells and the header {}",
                        record.len(),
                        headers.len()
                    )),
                    false => row_fields(&targets, &record).and_then(|mut fields| {
                        fields.tags.extend(request.tags.iter().cloned());
                        fields.validated().map_err(|error| error.to_string())
                    }),
                };
                (line, fields)
            }
        };
        if let Ok(fields) = &fields
            && fields.keys().is_empty()
        {
            rows.push((line, Err(LeadError::NoIdentity.to_string())));
            continue;
        }
        rows.push((line, fields));
    }
    report.rows = rows.len();
    let mut conn = database.get()?;
    let rules = scoring::rules_of(&mut conn, tenant)?;
    for batch in rows.chunks(IMPORT_BATCH_ROWS) {
        db::write_transaction(&mut conn, |conn| {
            import_batch(conn, tenant, &rules, batch, now, &mut report)
        })?;
    }
    Ok(report)
}

fn import_batch(
    conn: &mut DbConnection,
    tenant: TenantId,
    rules: &scoring::Rules,
    batch: &[(u64, Result<Fields, String>)],
    now: Timestamp,
    report: &mut Report,
) -> Result<(), ImportError> {
    // Rows that merge need no room; each new lead must fit.
    let mut room = leads::room(conn, tenant)?;
    for (line, fields) in batch {
        let fields = match fields {
            Ok(fields) => fields,
            Err(reason) => {
                report.skip(*line, reason.clone());
                continue;
            }
        };
        match leads::save(conn, tenant, rules, fields, "csv", now) {
            Ok(saved) if saved.created && room == 0 => {
                return Err(LeadError::TooMany.into());
            }
            Ok(saved) if saved.created => {
                room -= 1;
                report.created += 1;
            }
            Ok(_) => report.updated += 1,
            Err(LeadError::Database(error)) => return Err(LeadError::Database(error).into()),
            Err(error) => report.skip(*line, error.to_string()),
        }
    }
    Ok(())
}

/// An import from a lead-source plugin.
#[derive(Clone, Debug)]
pub struct SourceImport {
    /// The lead source to search.
    pub plugin: String,
    pub query: SearchQuery,
    /// A lead source to enrich each lead found with, if any.
    pub enrich_with: Option<String>,
    pub tags: Vec<String>,
}

/// What a plugin import did and cost.
#[derive(Clone, Debug, Default)]
pub struct SourceReport {
    pub found: usize,
    pub enriched: usize,
    pub created: usize,
    pub updated: usize,
    pub skips: Vec<Skip>,
    pub charged: Credits,
    pub next_cursor: Option<String>,
    /// Why enrichment stopped early (credits ran out, the source failed).
    pub stopped: Option<String>,
}

/// Searches a lead source and saves what it finds, enriching each lead
/// first when asked. Every call is metered: the search is charged per lead
/// returned and nothing when none are; each enrichment per lead found. A
/// search the tenant cannot pay for is refused and imports nothing; when
/// credits run out during enrichment, the leads not yet enriched are saved
/// as found and the report says why enrichment stopped.
pub fn import_from_source(
    meter: &crate::metering::Meter,
    database: &Database,
    tenant: TenantId,
    request: &SourceImport,
    now: Timestamp,
) -> Result<SourceReport, ImportError> {
    let mut query = request.query.clone();
    query.limit = query.limit.clamp(1, SOURCE_LEADS_MAX);
    let searched = meter.invoke(Request {
        tenant,
        plugin: request.plugin.clone(),
        call: Call::Search(query),
        idempotency_key: None,
    })?;
    let mut report = SourceReport {
        charged: searched.charged,
        ..SourceReport::default()
    };
    let page = match searched.result {
        Ok(Reply::SearchPage(page)) => page,
        Ok(_) => unreachable!("a search returns a page"),
        Err(error) => {
            return Err(ImportError::Search {
                plugin: request.plugin.clone(),
                error,
            });
        }
    };
    report.found = page.leads.len();
    report.next_cursor = page.next_cursor;
    let mut found = page.leads;
    found.truncate(SOURCE_LEADS_MAX as usize);
    let mut leads_found = Vec::with_capacity(found.len());
    for lead in found {
        let lead = match (&request.enrich_with, &report.stopped) {
            (Some(enricher), None) => enrich(meter, tenant, enricher, lead, &mut report),
            _ => lead,
        };
        leads_found.push(lead);
    }
    let mut conn = database.get()?;
    let rules = scoring::rules_of(&mut conn, tenant)?;
    db::write_transaction(&mut conn, |conn| {
        let mut room = leads::room(conn, tenant)?;
        for (index, lead) in leads_found.iter().enumerate() {
            let mut fields = fields_of(lead);
            fields.tags.extend(request.tags.iter().cloned());
            let saved = fields.validated().and_then(|fields| {
                leads::save(conn, tenant, &rules, &fields, &request.plugin, now)
            });
            match saved {
                Ok(saved) if saved.created && room == 0 => return Err(LeadError::TooMany.into()),
                Ok(saved) if saved.created => {
                    room -= 1;
                    report.created += 1;
                }
                Ok(_) => report.updated += 1,
                Err(LeadError::Database(error)) => return Err(ImportError::from(error)),
                Err(error) => report.skips.push(Skip {
                    line: index as u64 + 1,
                    reason: error.to_string(),
                }),
            }
        }
        Ok::<_, ImportError>(())
    })?;
    Ok(report)
}

/// One lead enriched, or as it was when enrichment failed or found
/// nothing.
fn enrich(
    meter: &crate::metering::Meter,
    tenant: TenantId,
    enricher: &str,
    lead: runtime::Lead,
    report: &mut SourceReport,
) -> runtime::Lead {
    let metered = meter.invoke(Request {
        tenant,
        plugin: enricher.to_owned(),
        call: Call::Enrich(lead.clone()),
        idempotency_key: None,
    });
    match metered {
        Err(error) => {
            report.stopped = Some(format!("enrichment stopped: {error}"));
            lead
        }
        Ok(metered) => {
            report.charged = report
                .charged
                .checked_add(metered.charged)
                .unwrap_or(report.charged);
            match metered.result {
                Ok(Reply::Enrichment(enrichment)) => match enrichment.lead {
                    Some(better) => {
                        report.enriched += 1;
                        merge_lead(lead, better)
                    }
                    None => lead,
                },
                Ok(_) => lead,
                Err(error) => {
                    report.stopped = Some(format!("enrichment stopped: {enricher}: {error}"));
                    lead
                }
            }
        }
    }
}

/// `better`'s values over `lead`'s.
fn merge_lead(lead: runtime::Lead, better: runtime::Lead) -> runtime::Lead {
    let mut custom_fields = lead.custom_fields;
    for field in better.custom_fields {
        custom_fields.retain(|held| held.name != field.name);
        custom_fields.push(field);
    }
    runtime::Lead {
        first_name: better.first_name.or(lead.first_name),
        last_name: better.last_name.or(lead.last_name),
        email: better.email.or(lead.email),
        title: better.title.or(lead.title),
        company: better.company.or(lead.company),
        domain: better.domain.or(lead.domain),
        linkedin_url: better.linkedin_url.or(lead.linkedin_url),
        phone: better.phone.or(lead.phone),
        location: better.location.or(lead.location),
        time_zone: better.time_zone.or(lead.time_zone),
        custom_fields,
    }
}

/// A plugin's lead as fields. Custom fields named like a company size
/// fill `company_size`; others whose names a lead cannot hold are dropped.
pub fn fields_of(lead: &runtime::Lead) -> Fields {
    let mut fields = Fields {
        first_name: lead.first_name.clone(),
        last_name: lead.last_name.clone(),
        email: lead.email.clone(),
        title: lead.title.clone(),
        company: lead.company.clone(),
        domain: lead.domain.clone(),
        linkedin_url: lead.linkedin_url.clone(),
        phone: lead.phone.clone(),
        location: lead.location.clone(),
        time_zone: lead.time_zone.clone(),
        ..Fields::default()
    };
    for field in lead.custom_fields.iter().take(leads::CUSTOM_FIELDS_MAX) {
        let name = field.name.trim();
        let size_named = matches!(
            name.to_lowercase().as_str(),
            "company_size" | "employees" | "headcount" | "employee_count"
        );
        match (size_named, field.value.trim().parse::<i64>()) {
            (true, Ok(size)) => fields.company_size = Some(size),
            _ => {
                let valid = !name.is_empty()
                    && name.chars().count() <= leads::CUSTOM_FIELD_NAME_CHARS_MAX
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if valid {
                    fields
                        .custom_fields
                        .insert(name.to_owned(), field.value.clone());
                }
            }
        }
    }
    fields
}

/// A stored lead as a plugin's lead, for enrichment and sending.
pub fn lead_of(fields: &Fields) -> runtime::Lead {
    runtime::Lead {
        first_name: fields.first_name.clone(),
        last_name: fields.last_name.clone(),
        email: fields.email.clone(),
        title: fields.title.clone(),
        company: fields.company.clone(),
        domain: fields.domain.clone(),
        linkedin_url: fields.linkedin_url.clone(),
        phone: fields.phone.clone(),
        location: fields.location.clone(),
        time_zone: fields.time_zone.clone(),
        custom_fields: fields
            .custom_fields
            .iter()
            .map(|(name, value)| runtime::Field {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}
