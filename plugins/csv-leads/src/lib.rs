//! `csv-leads`: leads from CSV files the tenant uploads.
//!
//! The host keeps uploaded files in the plugin's key-value store (see
//! `tollgate plugin file put`): the key `files` lists them as JSON
//! (`[{"name", "chunks", ...}]`) and `file/<name>/<n>` holds chunk `n`
//! (five digits). A search streams the files chunk by chunk through a CSV
//! reader, so memory stays small whatever the file's size.
//!
//! Columns map to lead fields by the `columns` setting (`email=E-mail
//! Address, company=Account`) and otherwise by their usual names; columns
//! that map to no field become custom fields. Every criterion of a query
//! that is set must match, case-insensitively: `keywords` (every word
//! somewhere in the lead), `title`, `company` and `location` (contained),
//! `domain` (the company domain, or the email's). The cursor is the number
//! of matching leads already returned.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use tollgate_plugin_sdk::{
    Enrichment, ErrorKind, Field, Lead, LeadSource, PluginError, SearchPage, SearchQuery, host,
    register_plugin,
};

struct CsvLeads;

/// Most leads one page may hold.
const PAGE_SIZE_MAX: u32 = 1_000;

/// Longest custom field value kept, in bytes.
const CUSTOM_VALUE_BYTES_MAX: usize = 1_024;

/// The lead fields a column can map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    FirstName,
    LastName,
    FullName,
    Email,
    Title,
    Company,
    Domain,
    LinkedinUrl,
    Phone,
    Location,
    City,
    Region,
    Country,
    TimeZone,
}

impl Target {
    /// The field's name in the `columns` setting, and the header names (in
    /// lower case, letters and digits only) recognised without a mapping.
    const ALL: [(Target, &'static str, &'static [&'static str]); 14] = [
        (
            Target::FirstName,
            "first_name",
            &["firstname", "givenname", "first"],
        ),
        (
            Target::LastName,
            "last_name",
            &["lastname", "surname", "familyname", "last"],
        ),
        (
            Target::FullName,
            "name",
            &["name", "fullname", "contactname"],
        ),
        (
            Target::Email,
            "email",
            &["email", "emailaddress", "workemail", "businessemail"],
        ),
        (
            Target::Title,
            "title",
            &["title", "jobtitle", "position", "role"],
        ),
        (
            Target::Company,
            "company",
            &[
                "company",
                "companyname",
                "organization",
                "organisation",
                "account",
                "accountname",
            ],
        ),
        (
            Target::Domain,
            "domain",
            &[
                "domain",
                "companydomain",
                "website",
                "companywebsite",
                "url",
            ],
        ),
        (
            Target::LinkedinUrl,
            "linkedin_url",
            &[
                "linkedin",
                "linkedinurl",
                "linkedinprofile",
                "personlinkedinurl",
            ],
        ),
        (
            Target::Phone,
            "phone",
            &[
                "phone",
                "phonenumber",
                "mobile",
                "mobilephone",
                "directphone",
            ],
        ),
        (Target::Location, "location", &["location", "address"]),
        (Target::City, "city", &["city", "town"]),
        (Target::Region, "region", &["region", "state", "province"]),
        (Target::Country, "country", &["country"]),
        (Target::TimeZone, "time_zone", &["timezone", "tz"]),
    ];

    fn by_setting_name(name: &str) -> Option<Target> {
        Target::ALL
            .iter()
            .find(|(_, setting, _)| *setting == name)
            .map(|(target, ..)| *target)
    }

    fn by_header(header: &str) -> Option<Target> {
        let normalized: String = header
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Target::ALL
            .iter()
            .find(|(_, _, aliases)| aliases.contains(&normalized.as_str()))
            .map(|(target, ..)| *target)
    }
}

/// What each column of a file becomes.
#[derive(Debug)]
struct Columns {
    targets: Vec<Option<Target>>,
    headers: Vec<String>,
}

impl Columns {
    /// Maps `headers` by the `columns` setting first, then by name.
    fn new(
        file: &str,
        headers: &csv::StringRecord,
        mapping: &[(Target, String)],
    ) -> Result<Columns, PluginError> {
        let headers: Vec<String> = headers.iter().map(|h| h.trim().to_owned()).collect();
        let mut targets: Vec<Option<Target>> = vec![None; headers.len()];
        for (target, column) in mapping {
            let index = headers
                .iter()
                .position(|header| header.eq_ignore_ascii_case(column))
                .ok_or_else(|| {
                    PluginError::new(
                        ErrorKind::Misconfigured,
                        format!(
                            "setting \"columns\" maps a field to column {column:?}, which {file} does not have; its columns are {}",
                            headers.join(", ")
                        ),
                    )
                })?;
            targets[index] = Some(*target);
        }
        let mapped: Vec<Target> = targets.iter().flatten().copied().collect();
        for (index, header) in headers.iter().enumerate() {
            if targets[index].is_none()
                && let Some(target) = Target::by_header(header)
                && !mapped.contains(&target)
                && !targets.contains(&Some(target))
            {
                targets[index] = Some(target);
            }
        }
        Ok(Columns { targets, headers })
    }

    fn lead(&self, record: &csv::StringRecord) -> Lead {
        let mut lead = Lead {
            first_name: None,
            last_name: None,
            email: None,
            title: None,
            company: None,
            domain: None,
            linkedin_url: None,
            phone: None,
            location: None,
            time_zone: None,
            custom_fields: Vec::new(),
        };
        let mut full_name = None;
        let mut place: [Option<String>; 3] = [None, None, None];
        for (index, value) in record.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let owned = Some(value.to_owned());
            match self.targets.get(index).copied().flatten() {
                Some(Target::FirstName) => lead.first_name = owned,
                Some(Target::LastName) => lead.last_name = owned,
                Some(Target::FullName) => full_name = owned,
                Some(Target::Email) => lead.email = owned,
                Some(Target::Title) => lead.title = owned,
                Some(Target::Company) => lead.company = owned,
                Some(Target::Domain) => lead.domain = Some(bare_domain(value)),
                Some(Target::LinkedinUrl) => lead.linkedin_url = owned,
                Some(Target::Phone) => lead.phone = owned,
                Some(Target::Location) => lead.location = owned,
                Some(Target::City) => place[0] = owned,
                Some(Target::Region) => place[1] = owned,
                Some(Target::Country) => place[2] = owned,
                Some(Target::TimeZone) => lead.time_zone = owned,
                None => {
                    let Some(header) = self.headers.get(index) else {
                        continue;
                    };
                    let mut value = value.to_owned();
                    truncate(&mut value, CUSTOM_VALUE_BYTES_MAX);
                    lead.custom_fields.push(Field {
                        name: header.clone(),
                        value,
                    });
                }
            }
        }
        if let Some(full_name) = full_name
            && lead.first_name.is_none()
            && lead.last_name.is_none()
        {
            match full_name.rsplit_once(' ') {
                Some((first, last)) => {
                    lead.first_name = Some(first.trim().to_owned());
                    lead.last_name = Some(last.to_owned());
                }
                None => lead.first_name = Some(full_name),
            }
        }
        if lead.location.is_none() {
            let parts: Vec<String> = place.into_iter().flatten().collect();
            if !parts.is_empty() {
                lead.location = Some(parts.join(", "));
            }
        }
        lead
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// `https://www.example.com/about` -> `example.com`.
fn bare_domain(value: &str) -> String {
    let value = value.trim().to_ascii_lowercase();
    let value = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .unwrap_or(&value);
    let value = value.split(['/', '?', '#']).next().unwrap_or_default();
    value.strip_prefix("www.").unwrap_or(value).to_owned()
}

/// The `columns` setting, parsed.
fn mapping() -> Result<Vec<(Target, String)>, PluginError> {
    let Some(setting) = host::setting("columns") else {
        return Ok(Vec::new());
    };
    let misconfigured = |message: String| PluginError::new(ErrorKind::Misconfigured, message);
    let mut mapping = Vec::new();
    for pair in setting
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (field, column) = pair.split_once('=').ok_or_else(|| {
            misconfigured(format!("setting \"columns\": {pair:?} is not field=Column"))
        })?;
        let target = Target::by_setting_name(field.trim()).ok_or_else(|| {
            let fields: Vec<&str> = Target::ALL.iter().map(|(_, name, _)| *name).collect();
            misconfigured(format!(
                "setting \"columns\": {:?} is not a lead field; use one of {}",
                field.trim(),
                fields.join(", ")
            ))
        })?;
        mapping.push((target, column.trim().to_owned()));
    }
    Ok(mapping)
}

#[derive(Deserialize)]
struct FileEntry {
    name: String,
    chunks: u32,
}

/// The uploaded files to search, in upload order.
fn files() -> Result<Vec<FileEntry>, PluginError> {
    let no_files = || {
        PluginError::new(
            ErrorKind::Misconfigured,
            "no CSV file is uploaded for this plugin; upload one with `tollgate plugin file put`",
        )
    };
    let index = host::kv_get("files").ok_or_else(no_files)?;
    let mut files: Vec<FileEntry> = serde_json::from_slice(&index).map_err(|error| {
        PluginError::new(
            ErrorKind::Internal,
            format!("the store's file index is not what the host writes: {error}"),
        )
    })?;
    if let Some(chosen) = host::setting("files") {
        let chosen: Vec<&str> = chosen.split(',').map(str::trim).collect();
        if let Some(missing) = chosen
            .iter()
            .find(|name| !name.is_empty() && !files.iter().any(|file| file.name == **name))
        {
            return Err(PluginError::new(
                ErrorKind::Misconfigured,
                format!("setting \"files\" names {missing:?}, which is not uploaded"),
            ));
        }
        files.retain(|file| chosen.contains(&file.name.as_str()));
    }
    if files.is_empty() {
        return Err(no_files());
    }
    Ok(files)
}

/// A file read from the store one chunk at a time.
struct ChunkReader<'a> {
    file: &'a FileEntry,
    next_chunk: u32,
    chunk: Vec<u8>,
    position: usize,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.chunk.len() {
            if self.next_chunk == self.file.chunks {
                return Ok(0);
            }
            let key = format!("file/{}/{:05}", self.file.name, self.next_chunk);
            self.chunk = host::kv_get(&key).ok_or_else(|| {
                std::io::Error::other(format!("chunk {key} is missing from the store"))
            })?;
            self.next_chunk += 1;
            self.position = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.position);
        buf[..n].copy_from_slice(&self.chunk[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Calls `visit` with every lead of the chosen files, in order, until it
/// returns `false`.
fn for_each_lead(mut visit: impl FnMut(Lead) -> bool) -> Result<(), PluginError> {
    let mapping = mapping()?;
    for file in files()? {
        let reader = ChunkReader {
            file: &file,
            next_chunk: 0,
            chunk: Vec::new(),
            position: 0,
        };
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::None)
            .from_reader(reader);
        let bad_csv = |error: csv::Error| {
            let line = error.position().map_or(0, |position| position.line());
            PluginError::invalid_input(format!(
                "{} is not readable CSV near line {line}: {error}; fix the file and upload it again",
                file.name
            ))
        };
        let headers = csv.headers().map_err(bad_csv)?.clone();
        let columns = Columns::new(&file.name, &headers, &mapping)?;
        let mut record = csv::StringRecord::new();
        while csv.read_record(&mut record).map_err(bad_csv)? {
            if !visit(columns.lead(&record)) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Whether `haystack` contains `needle`, ignoring case.
fn contains(haystack: Option<&str>, needle: &str) -> bool {
    haystack.is_some_and(|haystack| haystack.to_lowercase().contains(needle))
}

/// A query with its criteria lower-cased once.
struct Criteria {
    keywords: Vec<String>,
    title: Option<String>,
    company: Option<String>,
    domain: Option<String>,
    location: Option<String>,
}

impl Criteria {
    fn new(query: &SearchQuery) -> Criteria {
        let lower = |text: &Option<String>| {
            text.as_deref()
                .map(str::trim)
                .filter(|text| !text.is_empty())
                .map(str::to_lowercase)
        };
        Criteria {
            keywords: query
                .keywords
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_lowercase)
                .collect(),
            title: lower(&query.title),
            company: lower(&query.company),
            domain: query
                .domain
                .as_deref()
                .map(bare_domain)
                .filter(|d| !d.is_empty()),
            location: lower(&query.location),
        }
    }

    fn matches(&self, lead: &Lead) -> bool {
        if let Some(title) = &self.title
            && !contains(lead.title.as_deref(), title)
        {
            return false;
        }
        if let Some(company) = &self.company
            && !contains(lead.company.as_deref(), company)
        {
            return false;
        }
        if let Some(location) = &self.location
            && !contains(lead.location.as_deref(), location)
        {
            return false;
        }
        if let Some(domain) = &self.domain {
            let email_domain = lead
                .email
                .as_deref()
                .and_then(|email| email.rsplit_once('@'))
                .map(|(_, domain)| domain.to_ascii_lowercase());
            if lead.domain.as_deref() != Some(domain.as_str())
                && email_domain.as_deref() != Some(domain.as_str())
            {
                return false;
            }
        }
        if self.keywords.is_empty() {
            return true;
        }
        let text = [
            &lead.first_name,
            &lead.last_name,
            &lead.email,
            &lead.title,
            &lead.company,
            &lead.domain,
            &lead.location,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(lead.custom_fields.iter().map(|field| field.value.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
        self.keywords.iter().all(|keyword| text.contains(keyword))
    }
}

impl LeadSource for CsvLeads {
    fn search(query: SearchQuery) -> Result<SearchPage, PluginError> {
        if query.limit == 0 || query.limit > PAGE_SIZE_MAX {
            return Err(PluginError::invalid_input(format!(
                "limit must be 1 to {PAGE_SIZE_MAX}, not {}",
                query.limit
            )));
        }
        let skip: usize = match &query.cursor {
            Some(cursor) => cursor.parse().map_err(|_| {
                PluginError::invalid_input(format!(
                    "cursor {cursor:?} is not one this plugin returned"
                ))
            })?,
            None => 0,
        };
        let criteria = Criteria::new(&query);
        let limit = query.limit as usize;
        let mut n_matched = 0;
        let mut leads = Vec::new();
        let mut more = false;
        for_each_lead(|lead| {
            if !criteria.matches(&lead) {
                return true;
            }
            n_matched += 1;
            if n_matched <= skip {
                return true;
            }
            if leads.len() == limit {
                more = true;
                return false;
            }
            leads.push(lead);
            true
        })?;
        Ok(SearchPage {
            units: leads.len() as u64,
            next_cursor: more.then(|| (skip + leads.len()).to_string()),
            leads,
        })
    }

    /// Finds the lead by email, else by LinkedIn URL, and fills in what the
    /// given lead lacks.
    fn enrich(lead: Lead) -> Result<Enrichment, PluginError> {
        let email = lead.email.as_deref().map(str::to_lowercase);
        let linkedin = lead.linkedin_url.as_deref().map(normalize_url);
        if email.is_none() && linkedin.is_none() {
            return Err(PluginError::invalid_input(
                "a lead to enrich needs an email or a LinkedIn URL",
            ));
        }
        let mut found = None;
        for_each_lead(|row| {
            let same_email =
                email.is_some() && row.email.as_deref().map(str::to_lowercase) == email;
            let same_linkedin =
                linkedin.is_some() && row.linkedin_url.as_deref().map(normalize_url) == linkedin;
            if same_email || same_linkedin {
                found = Some(row);
                return false;
            }
            true
        })?;
        Ok(match found {
            Some(row) => Enrichment {
                lead: Some(merge(lead, row)),
                units: 1,
            },
            None => Enrichment {
                lead: None,
                units: 0,
            },
        })
    }
}

/// `https://www.linkedin.com/in/ada/` -> `linkedin.com/in/ada`.
fn normalize_url(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let url = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(&url);
    url.strip_prefix("www.")
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned()
}

/// The given lead, with what it lacks taken from `row`.
fn merge(lead: Lead, row: Lead) -> Lead {
    let mut custom: BTreeMap<String, String> = row
        .custom_fields
        .into_iter()
        .map(|field| (field.name, field.value))
        .collect();
    for field in lead.custom_fields {
        custom.insert(field.name, field.value);
    }
    Lead {
        first_name: lead.first_name.or(row.first_name),
        last_name: lead.last_name.or(row.last_name),
        email: lead.email.or(row.email),
        title: lead.title.or(row.title),
        company: lead.company.or(row.company),
        domain: lead.domain.or(row.domain),
        linkedin_url: lead.linkedin_url.or(row.linkedin_url),
        phone: lead.phone.or(row.phone),
        location: lead.location.or(row.location),
        time_zone: lead.time_zone.or(row.time_zone),
        custom_fields: custom
            .into_iter()
            .map(|(name, value)| Field { name, value })
            .collect(),
    }
}

register_plugin!(CsvLeads);

#[cfg(test)]
mod tests;
