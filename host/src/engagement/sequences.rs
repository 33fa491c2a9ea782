//! Sequences: ordered steps (email, LinkedIn connect or message, another
//! channel's message, a manual task, a wait in business days, a condition
//! with two branches) sent to each enrolled lead inside a sending window in
//! the lead's time zone. Also the mailboxes (sending accounts) steps send
//! from, with their rolling caps, and enrollments.
//!
//! A sequence's steps are versioned: editing them writes a new version, and
//! enrollments go on with the version they started on, so a step's results
//! always describe one text. The runner ([`super::runner`]) executes the
//! steps; this module defines, checks and stores them.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::leads::{self, LeadError};
use super::schedule::Window;
use super::scoring::Rule;
use super::templates;
use crate::db::DbConnection;
use crate::db::schema::{
    enrollments, leads as lead_rows, mailboxes, sequence_steps, sequences, step_runs,
};
use crate::ids::TenantId;
use crate::units::Timestamp;

/// Steps in one sequence.
pub const STEPS_MAX: usize = 50;
/// A/B variants of one step.
pub const VARIANTS_MAX: usize = 5;
/// Characters in one template: a long email is a few thousand.
pub const TEMPLATE_CHARS_MAX: usize = 20_000;
/// The longest wait: a year of business days.
pub const WAIT_BUSINESS_DAYS_MAX: u32 = 260;
/// Leads enrolled by one request.
pub const ENROLL_BATCH_MAX: usize = 1_000;
/// Enrollments under way per tenant: a bound on what one tenant puts in
/// front of the scheduler, which runs the oldest due steps first.
pub const ENROLLMENTS_ACTIVE_MAX: i64 = 100_000;
/// Sequences and mailboxes one tenant may have.
pub const SEQUENCES_MAX: i64 = 1_000;
pub const MAILBOXES_MAX: i64 = 200;
/// The most a cap may allow: far above what any mailbox provider accepts.
pub const CAP_MAX: i64 = 100_000;
/// Rows in one page of enrollments.
pub const PAGE_LIMIT_MAX: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("sequence {0} not found")]
    NotFound(i64),
    #[error("mailbox {0} not found")]
    MailboxNotFound(i64),
    #[error("enrollment {0} not found in this sequence")]
    EnrollmentNotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("a mailbox for {plugin} {address} exists already (mailbox {id})")]
    MailboxExists {
        plugin: String,
        address: String,
        id: i64,
    },
    #[error("this tenant has {0}, the most it may")]
    TooMany(&'static str),
    #[error(transparent)]
    Lead(#[from] LeadError),
    #[error(transparent)]
    Task(#[from] super::tasks::TaskError),
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn invalid(message: impl Into<String>) -> SequenceError {
    SequenceError::Invalid(message.into())
}

/// A sending account: a channel plugin and who it sends as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub id: i64,
    pub tenant: TenantId,
    pub plugin: String,
    /// The address (or account) it sends as.
    pub address: String,
    pub name: Option<String>,
    /// The most it sends in any rolling 24 hours and hour.
    pub daily_cap: Option<i64>,
    pub hourly_cap: Option<i64>,
}

/// A new mailbox.
#[derive(Clone, Debug)]
pub struct NewMailbox {
    pub plugin: String,
    pub address: String,
    pub name: Option<String>,
    pub daily_cap: Option<i64>,
    pub hourly_cap: Option<i64>,
}

type MailboxRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn mailbox_of(row: MailboxRow) -> Mailbox {
    let (id, tenant, plugin, address, name, daily_cap, hourly_cap) = row;
    Mailbox {
        id,
        tenant: TenantId(tenant),
        plugin,
        address,
        name,
        daily_cap,
        hourly_cap,
    }
}

const MAILBOX_COLUMNS: (
    mailboxes::id,
    mailboxes::tenant_id,
    mailboxes::plugin,
    mailboxes::address,
    mailboxes::name,
    mailboxes::daily_cap,
    mailboxes::hourly_cap,
) = (
    mailboxes::id,
    mailboxes::tenant_id,
    mailboxes::plugin,
    mailboxes::address,
    mailboxes::name,
    mailboxes::daily_cap,
    mailboxes::hourly_cap,
);

/// Adds a mailbox; the caller has checked that its plugin is a channel.
pub fn create_mailbox(
    conn: &mut DbConnection,
    tenant: TenantId,
    mailbox: &NewMailbox,
    now: Timestamp,
) -> Result<Mailbox, SequenceError> {
    let address = mailbox.address.trim();
    if address.is_empty() || address.chars().count() > leads::FIELD_CHARS_MAX {
        return Err(invalid(format!(
            "address: give the address or account it sends as, at most {} characters",
            leads::FIELD_CHARS_MAX
        )));
    }
    for (name, cap) in [
        ("daily_cap", mailbox.daily_cap),
        ("hourly_cap", mailbox.hourly_cap),
    ] {
        if let Some(cap) = cap
            && !(1..=CAP_MAX).contains(&cap)
        {
            return Err(invalid(format!("{name}: between 1 and {CAP_MAX}, or none")));
        }
    }
    let held: i64 = mailboxes::table
        .filter(mailboxes::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)?;
    if held >= MAILBOXES_MAX {
        return Err(SequenceError::TooMany("200 mailboxes"));
    }
    let inserted = diesel::insert_into(mailboxes::table)
        .values((
            mailboxes::tenant_id.eq(tenant.0),
            mailboxes::plugin.eq(&mailbox.plugin),
            mailboxes::address.eq(address),
            mailboxes::name.eq(&mailbox.name),
            mailboxes::daily_cap.eq(mailbox.daily_cap),
            mailboxes::hourly_cap.eq(mailbox.hourly_cap),
            mailboxes::created_at.eq(now.micros()),
        ))
        .returning(mailboxes::id)
        .get_result::<i64>(conn);
    match inserted {
        Ok(id) => get_mailbox(conn, tenant, id),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            let id = mailboxes::table
                .filter(mailboxes::tenant_id.eq(tenant.0))
                .filter(mailboxes::plugin.eq(&mailbox.plugin))
                .filter(mailboxes::address.eq(address))
                .select(mailboxes::id)
                .first(conn)?;
            Err(SequenceError::MailboxExists {
                plugin: mailbox.plugin.clone(),
                address: address.to_owned(),
                id,
            })
        }
        Err(error) => Err(error.into()),
    }
}

pub fn get_mailbox(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
) -> Result<Mailbox, SequenceError> {
    mailboxes::table
        .filter(mailboxes::tenant_id.eq(tenant.0))
        .filter(mailboxes::id.eq(id))
        .select(MAILBOX_COLUMNS)
        .first::<MailboxRow>(conn)
        .optional()?
        .map(mailbox_of)
        .ok_or(SequenceError::MailboxNotFound(id))
}

pub fn list_mailboxes(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Vec<Mailbox>, SequenceError> {
    let rows: Vec<MailboxRow> = mailboxes::table
        .filter(mailboxes::tenant_id.eq(tenant.0))
        .order(mailboxes::id.asc())
        .select(MAILBOX_COLUMNS)
        .load(conn)?;
    Ok(rows.into_iter().map(mailbox_of).collect())
}

/// One version of a step's text: a subject (for email), a body and an
/// optional HTML body, each a minijinja template over the lead.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// How often this variant is chosen, relative to the others.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Where a condition goes: a step number (1 is the first) or the end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Goto {
    Step(u32),
    /// `"end"`.
    End(String),
}

/// What a condition tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// `opened` or `clicked`: whether the lead did this with any earlier
    /// step of this enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engaged: Option<String>,
    /// Or a lead field, with one condition as in a scoring rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl Test {
    /// The field test as a scoring rule (of no points).
    pub fn field_rule(&self) -> Option<Rule> {
        self.field.as_ref().map(|field| Rule {
            field: Some(field.clone()),
            contains: self.contains.clone(),
            equals: self.equals.clone(),
            at_least: self.at_least,
            at_most: self.at_most,
            present: self.present,
            ..Rule::default()
        })
    }
}

/// One step, as defined and stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    /// An email through the mailbox's channel.
    Email {
        mailbox: i64,
        variants: Vec<Content>,
    },
    /// A LinkedIn connection request, its note the body.
    LinkedinConnect {
        mailbox: i64,
        variants: Vec<Content>,
    },
    /// A LinkedIn message.
    LinkedinMessage {
        mailbox: i64,
        variants: Vec<Content>,
    },
    /// A message through another channel (a webhook, SMS).
    Message {
        mailbox: i64,
        variants: Vec<Content>,
    },
    /// A task for a person: a call to make, say.
    Task {
        title: String,
        #[serde(default = "call")]
        task: String,
        #[serde(default)]
        notes: Option<String>,
    },
    /// Nothing for this many business days.
    Wait { business_days: u32 },
    /// The next step depends on the test.
    Condition {
        #[serde(rename = "if")]
        test: Test,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<Goto>,
        #[serde(rename = "else", default, skip_serializing_if = "Option::is_none")]
        otherwise: Option<Goto>,
    },
}

fn call() -> String {
    "call".to_owned()
}

/// The kinds of task.
pub const TASK_KINDS: [&str; 4] = ["call", "email", "linkedin", "todo"];

impl StepSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            StepSpec::Email { .. } => "email",
            StepSpec::LinkedinConnect { .. } => "linkedin_connect",
            StepSpec::LinkedinMessage { .. } => "linkedin_message",
            StepSpec::Message { .. } => "message",
            StepSpec::Task { .. } => "task",
            StepSpec::Wait { .. } => "wait",
            StepSpec::Condition { .. } => "condition",
        }
    }

    /// The mailbox and variants of a step that sends.
    pub fn sends(&self) -> Option<(i64, &[Content])> {
        match self {
            StepSpec::Email { mailbox, variants }
            | StepSpec::LinkedinConnect { mailbox, variants }
            | StepSpec::LinkedinMessage { mailbox, variants }
            | StepSpec::Message { mailbox, variants } => Some((*mailbox, variants)),
            _ => None,
        }
    }
}

/// A new sequence or a new version of one.
#[derive(Clone, Debug)]
pub struct Definition {
    pub name: String,
    pub time_zone: String,
    pub window: Window,
    pub tracking: bool,
    pub steps: Vec<StepSpec>,
}

/// A stored step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub id: i64,
    /// 0 for the first.
    pub position: u32,
    pub spec: StepSpec,
}

/// A stored sequence, with the steps of its current version.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub id: i64,
    pub tenant: TenantId,
    pub name: String,
    pub active: bool,
    pub version: i64,
    pub time_zone: chrono_tz::Tz,
    pub window: Window,
    pub tracking: bool,
    pub steps: Vec<Step>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Checks a definition: its window, time zone, steps, mailboxes and
/// templates. The error names the step (1 is the first).
pub fn validate(
    conn: &mut DbConnection,
    tenant: TenantId,
    definition: &Definition,
) -> Result<(), SequenceError> {
    let name = definition.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("name: 1 to 200 characters"));
    }
    definition.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
        invalid(format!(
            "time_zone: {:?} is not an IANA time zone",
            definition.time_zone
        ))
    })?;
    definition
        .window
        .validate()
        .map_err(|reason| invalid(format!("window: {reason}")))?;
    let n_steps = definition.steps.len();
    if n_steps == 0 || n_steps > STEPS_MAX {
        return Err(invalid(format!("steps: 1 to {STEPS_MAX}")));
    }
    for (index, step) in definition.steps.iter().enumerate() {
        let number = index + 1;
        let at = |reason: String| invalid(format!("step {number} ({}): {reason}", step.kind()));
        if let Some((mailbox, variants)) = step.sends() {
            get_mailbox(conn, tenant, mailbox)
                .map_err(|_| at(format!("mailbox {mailbox} not found")))?;
            if variants.is_empty() || variants.len() > VARIANTS_MAX {
                return Err(at(format!("1 to {VARIANTS_MAX} variants")));
            }
            for (letter, variant) in variants.iter().enumerate() {
                let at = |reason: String| at(format!("variant {}: {reason}", variant_name(letter)));
                if !(1..=100).contains(&variant.weight) {
                    return Err(at("weight must be between 1 and 100".into()));
                }
                if matches!(step, StepSpec::Email { .. }) && variant.subject.is_none() {
                    return Err(at("an email needs a subject".into()));
                }
                if variant.body.trim().is_empty()
                    && !matches!(step, StepSpec::LinkedinConnect { .. })
                {
                    return Err(at("the body is empty".into()));
                }
                for (part, text) in [
                    ("subject", variant.subject.as_deref()),
                    ("body", Some(variant.body.as_str())),
                    ("html", variant.html.as_deref()),
                ] {
                    if let Some(text) = text {
                        check_template(part, text).map_err(&at)?;
                    }
                }
            }
        }
        match step {
            StepSpec::Task { title, task, notes } => {
                check_template("title", title).map_err(&at)?;
                if let Some(notes) = notes {
                    check_template("notes", notes).map_err(&at)?;
                }
                if !TASK_KINDS.contains(&task.as_str()) {
                    return Err(at(format!("task must be one of {}", TASK_KINDS.join(", "))));
                }
            }
            StepSpec::Wait { business_days }
                if !(1..=WAIT_BUSINESS_DAYS_MAX).contains(business_days) =>
            {
                return Err(at(format!("business_days: 1 to {WAIT_BUSINESS_DAYS_MAX}")));
            }
            StepSpec::Condition {
                test,
                then,
                otherwise,
            } => {
                match (&test.engaged, test.field_rule()) {
                    (Some(engaged), None) if engaged == "opened" || engaged == "clicked" => {}
                    (Some(_), None) => return Err(at("engaged: opened or clicked".into())),
                    (None, Some(rule)) => {
                        let rule = Rule { points: 0, ..rule };
                        super::scoring::Rules { rules: vec![rule] }
                            .validate()
                            .map_err(|reason| {
                                at(format!("if: {}", reason.trim_start_matches("rules[0]: ")))
                            })?;
                    }
                    _ => return Err(at("if: give engaged, or a field with one condition".into())),
                }
                for goto in [then, otherwise].into_iter().flatten() {
                    match goto {
                        Goto::End(word) if word == "end" => {}
                        Goto::Step(target)
                            if (*target as usize) > number && (*target as usize) <= n_steps => {}
                        _ => {
                            return Err(at(format!(
                                "then and else go to a later step (a number from {} to {n_steps}) or \"end\"",
                                number + 1
                            )));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_template(part: &str, text: &str) -> Result<(), String> {
    if text.chars().count() > TEMPLATE_CHARS_MAX {
        return Err(format!(
            "{part}: longer than {TEMPLATE_CHARS_MAX} characters"
        ));
    }
    templates::check(text).map_err(|reason| format!("{part}: {reason}"))
}

/// A, B, C... for variant 0, 1, 2...
pub fn variant_name(index: usize) -> char {
    (b'A' + (index as u8).min(25)) as char
}

/// Creates a sequence (already validated), active, at version 1.
pub fn create(
    conn: &mut DbConnection,
    tenant: TenantId,
    definition: &Definition,
    now: Timestamp,
) -> Result<Sequence, SequenceError> {
    let held: i64 = sequences::table
        .filter(sequences::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)?;
    if held >= SEQUENCES_MAX {
        return Err(SequenceError::TooMany("1,000 sequences"));
    }
    let id = diesel::insert_into(sequences::table)
        .values((
            sequences::tenant_id.eq(tenant.0),
            sequences::name.eq(definition.name.trim()),
            sequences::status.eq("active"),
            sequences::version.eq(1),
            sequences::time_zone.eq(&definition.time_zone),
            sequences::window_start_minute.eq(i64::from(definition.window.start_minute)),
            sequences::window_end_minute.eq(i64::from(definition.window.end_minute)),
            sequences::window_days.eq(i64::from(definition.window.days)),
            sequences::tracking.eq(definition.tracking),
            sequences::created_at.eq(now.micros()),
            sequences::updated_at.eq(now.micros()),
        ))
        .returning(sequences::id)
        .get_result::<i64>(conn)?;
    write_steps(conn, tenant, id, 1, &definition.steps)?;
    get(conn, tenant, id)
}

/// Replaces a sequence's definition (already validated). New steps make a
/// new version; enrollments under way keep theirs.
pub fn update(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    definition: &Definition,
    now: Timestamp,
) -> Result<Sequence, SequenceError> {
    let current = get(conn, tenant, id)?;
    let steps_changed = current
        .steps
        .iter()
        .map(|step| &step.spec)
        .ne(definition.steps.iter());
    let version = match steps_changed {
        true => current.version + 1,
        false => current.version,
    };
    diesel::update(sequences::table.filter(sequences::id.eq(id)))
        .set((
            sequences::name.eq(definition.name.trim()),
            sequences::version.eq(version),
            sequences::time_zone.eq(&definition.time_zone),
            sequences::window_start_minute.eq(i64::from(definition.window.start_minute)),
            sequences::window_end_minute.eq(i64::from(definition.window.end_minute)),
            sequences::window_days.eq(i64::from(definition.window.days)),
            sequences::tracking.eq(definition.tracking),
            sequences::updated_at.eq(now.micros()),
        ))
        .execute(conn)?;
    if steps_changed {
        write_steps(conn, tenant, id, version, &definition.steps)?;
    }
    get(conn, tenant, id)
}

/// Pauses (no step of it runs) or resumes a sequence.
pub fn set_active(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    active: bool,
    now: Timestamp,
) -> Result<Sequence, SequenceError> {
    get(conn, tenant, id)?;
    diesel::update(sequences::table.filter(sequences::id.eq(id)))
        .set((
            sequences::status.eq(if active { "active" } else { "paused" }),
            sequences::updated_at.eq(now.micros()),
        ))
        .execute(conn)?;
    get(conn, tenant, id)
}

fn write_steps(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: i64,
    version: i64,
    steps: &[StepSpec],
) -> Result<(), DieselError> {
    for (position, spec) in steps.iter().enumerate() {
        diesel::insert_into(sequence_steps::table)
            .values((
                sequence_steps::tenant_id.eq(tenant.0),
                sequence_steps::sequence_id.eq(sequence),
                sequence_steps::version.eq(version),
                sequence_steps::position.eq(position as i64),
                sequence_steps::kind.eq(spec.kind()),
                sequence_steps::config.eq(serde_json::to_string(spec).expect("steps serialise")),
            ))
            .execute(conn)?;
    }
    Ok(())
}

type SequenceRow = (
    i64,
    i64,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    bool,
    i64,
    i64,
);

const SEQUENCE_COLUMNS: (
    sequences::id,
    sequences::tenant_id,
    sequences::name,
    sequences::status,
    sequences::version,
    sequences::time_zone,
    sequences::window_start_minute,
    sequences::window_end_minute,
    sequences::window_days,
    sequences::tracking,
    sequences::created_at,
    sequences::updated_at,
) = (
    sequences::id,
    sequences::tenant_id,
    sequences::name,
    sequences::status,
    sequences::version,
    sequences::time_zone,
    sequences::window_start_minute,
    sequences::window_end_minute,
    sequences::window_days,
    sequences::tracking,
    sequences::created_at,
    sequences::updated_at,
);

/// A sequence of the tenant's, with its current steps.
pub fn get(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<Sequence, SequenceError> {
    let row: SequenceRow = sequences::table
        .filter(sequences::tenant_id.eq(tenant.0))
        .filter(sequences::id.eq(id))
        .select(SEQUENCE_COLUMNS)
        .first(conn)
        .optional()?
        .ok_or(SequenceError::NotFound(id))?;
    let steps = steps_of(conn, id, row.4)?;
    Ok(sequence_of(row, steps))
}

fn sequence_of(row: SequenceRow, steps: Vec<Step>) -> Sequence {
    let (id, tenant, name, status, version, zone, start, end, days, tracking, created, updated) =
        row;
    Sequence {
        id,
        tenant: TenantId(tenant),
        name,
        active: status == "active",
        version,
        // Checked when stored.
        time_zone: zone.parse().unwrap_or(chrono_tz::UTC),
        window: Window {
            start_minute: start as u32,
            end_minute: end as u32,
            days: days as u8,
        },
        tracking,
        steps,
        created_at: Timestamp::from_micros(created),
        updated_at: Timestamp::from_micros(updated),
    }
}

/// The steps of one version, in order.
pub fn steps_of(
    conn: &mut DbConnection,
    sequence: i64,
    version: i64,
) -> Result<Vec<Step>, SequenceError> {
    let rows: Vec<(i64, i64, String)> = sequence_steps::table
        .filter(sequence_steps::sequence_id.eq(sequence))
        .filter(sequence_steps::version.eq(version))
        .order(sequence_steps::position.asc())
        .select((
            sequence_steps::id,
            sequence_steps::position,
            sequence_steps::config,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(id, position, config)| {
            let spec = serde_json::from_str(&config)
                .map_err(|error| anyhow::anyhow!("step {id} is stored unreadably: {error}"))?;
            Ok(Step {
                id,
                position: position as u32,
                spec,
            })
        })
        .collect()
}

/// The tenant's sequences, newest first, without their steps.
pub fn list(conn: &mut DbConnection, tenant: TenantId) -> Result<Vec<Sequence>, SequenceError> {
    let rows: Vec<SequenceRow> = sequences::table
        .filter(sequences::tenant_id.eq(tenant.0))
        .order(sequences::id.desc())
        .select(SEQUENCE_COLUMNS)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| sequence_of(row, Vec::new()))
        .collect())
}

/// What enrolling one lead did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enrolled {
    Enrolled(i64),
    /// It is (or was) in this sequence already: enrollment `0`.
    Already(i64),
    /// The lead may not be contacted.
    DoNotContact,
    NotFound,
}

/// Enrolls leads: each starts at the first step, due now (the runner
/// moves it into the window).
pub fn enroll(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: i64,
    leads_to_enroll: &[i64],
    now: Timestamp,
) -> Result<Vec<(i64, Enrolled)>, SequenceError> {
    if leads_to_enroll.len() > ENROLL_BATCH_MAX {
        return Err(invalid(format!(
            "at most {ENROLL_BATCH_MAX} leads a request"
        )));
    }
    let sequence = get(conn, tenant, sequence)?;
    let active: i64 = enrollments::table
        .filter(enrollments::tenant_id.eq(tenant.0))
        .filter(enrollments::status.eq("active"))
        .count()
        .get_result(conn)?;
    if active + leads_to_enroll.len() as i64 > ENROLLMENTS_ACTIVE_MAX {
        return Err(SequenceError::TooMany("100,000 enrollments under way"));
    }
    let mut outcomes = Vec::with_capacity(leads_to_enroll.len());
    for lead in leads_to_enroll {
        outcomes.push((*lead, enroll_one(conn, tenant, &sequence, *lead, now)?));
    }
    Ok(outcomes)
}

/// Enrolls one lead, unless it is there already or may not be contacted.
pub fn enroll_one(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: &Sequence,
    lead: i64,
    now: Timestamp,
) -> Result<Enrolled, SequenceError> {
    let found: Option<Option<String>> = lead_rows::table
        .filter(lead_rows::tenant_id.eq(tenant.0))
        .filter(lead_rows::id.eq(lead))
        .select(lead_rows::do_not_contact)
        .first(conn)
        .optional()?;
    match found {
        None => return Ok(Enrolled::NotFound),
        Some(Some(_)) => return Ok(Enrolled::DoNotContact),
        Some(None) => {}
    }
    let existing: Option<i64> = enrollments::table
        .filter(enrollments::sequence_id.eq(sequence.id))
        .filter(enrollments::lead_id.eq(lead))
        .select(enrollments::id)
        .first(conn)
        .optional()?;
    if let Some(id) = existing {
        return Ok(Enrolled::Already(id));
    }
    let id = diesel::insert_into(enrollments::table)
        .values((
            enrollments::tenant_id.eq(tenant.0),
            enrollments::sequence_id.eq(sequence.id),
            enrollments::version.eq(sequence.version),
            enrollments::lead_id.eq(lead),
            enrollments::status.eq("active"),
            enrollments::position.eq(0),
            enrollments::next_run_at.eq(now.micros()),
            enrollments::created_at.eq(now.micros()),
            enrollments::updated_at.eq(now.micros()),
        ))
        .returning(enrollments::id)
        .get_result::<i64>(conn)?;
    Ok(Enrolled::Enrolled(id))
}

/// An enrollment as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    pub id: i64,
    pub sequence: i64,
    pub version: i64,
    pub lead: i64,
    pub status: String,
    pub reason: Option<String>,
    /// The next step, 0 for the first.
    pub position: u32,
    pub next_run_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

type EnrollmentRow = (
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    i64,
);

const ENROLLMENT_COLUMNS: (
    enrollments::id,
    enrollments::sequence_id,
    enrollments::version,
    enrollments::lead_id,
    enrollments::status,
    enrollments::reason,
    enrollments::position,
    enrollments::next_run_at,
    enrollments::created_at,
    enrollments::updated_at,
) = (
    enrollments::id,
    enrollments::sequence_id,
    enrollments::version,
    enrollments::lead_id,
    enrollments::status,
    enrollments::reason,
    enrollments::position,
    enrollments::next_run_at,
    enrollments::created_at,
    enrollments::updated_at,
);

fn enrollment_of(row: EnrollmentRow) -> Enrollment {
    let (id, sequence, version, lead, status, reason, position, next_run_at, created, updated) =
        row;
    Enrollment {
        id,
        sequence,
        version,
        lead,
        status,
        reason,
        position: position as u32,
        next_run_at: next_run_at.map(Timestamp::from_micros),
        created_at: Timestamp::from_micros(created),
        updated_at: Timestamp::from_micros(updated),
    }
}

/// A page of a sequence's enrollments, by id, after `after`.
pub fn enrollments_of(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: i64,
    status: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Enrollment>, Option<i64>), SequenceError> {
    get(conn, tenant, sequence)?;
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut query = enrollments::table
        .filter(enrollments::tenant_id.eq(tenant.0))
        .filter(enrollments::sequence_id.eq(sequence))
        .order(enrollments::id.asc())
        .limit(limit + 1)
        .select(ENROLLMENT_COLUMNS)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(enrollments::status.eq(status.to_owned()));
    }
    if let Some(after) = after {
        query = query.filter(enrollments::id.gt(after));
    }
    let mut rows: Vec<EnrollmentRow> = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let page: Vec<Enrollment> = rows.into_iter().map(enrollment_of).collect();
    let next = match more {
        true => page.last().map(|enrollment| enrollment.id),
        false => None,
    };
    Ok((page, next))
}

/// Every enrollment of a lead, oldest first (a lead is in at most one
/// enrollment per sequence, and a tenant has at most [`SEQUENCES_MAX`]).
pub fn enrollments_of_lead(
    conn: &mut DbConnection,
    tenant: TenantId,
    lead: i64,
) -> Result<Vec<Enrollment>, DieselError> {
    let rows: Vec<EnrollmentRow> = enrollments::table
        .filter(enrollments::tenant_id.eq(tenant.0))
        .filter(enrollments::lead_id.eq(lead))
        .order(enrollments::id.asc())
        .select(ENROLLMENT_COLUMNS)
        .load(conn)?;
    Ok(rows.into_iter().map(enrollment_of).collect())
}

/// Stops an enrollment by hand: no further step of it runs. Stopping one
/// that has ended changes nothing.
pub fn stop(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: i64,
    id: i64,
    now: Timestamp,
) -> Result<Enrollment, SequenceError> {
    let found = enrollment(conn, tenant, id)?
        .filter(|enrollment| enrollment.sequence == sequence)
        .ok_or(SequenceError::EnrollmentNotFound(id))?;
    if found.status == "active" {
        diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
            .filter(enrollments::status.eq("active"))
            .set((
                enrollments::status.eq("stopped"),
                enrollments::reason.eq("stopped by hand"),
                enrollments::next_run_at.eq(None::<i64>),
                enrollments::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
    }
    Ok(enrollment(conn, tenant, id)?.expect("found above"))
}

/// One enrollment of the tenant's.
pub fn enrollment(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
) -> Result<Option<Enrollment>, DieselError> {
    Ok(enrollments::table
        .filter(enrollments::tenant_id.eq(tenant.0))
        .filter(enrollments::id.eq(id))
        .select(ENROLLMENT_COLUMNS)
        .first::<EnrollmentRow>(conn)
        .optional()?
        .map(enrollment_of))
}

/// How one step (and variant) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepResult {
    pub step: i64,
    /// The variant's index (A = 0), for steps that send.
    pub variant: Option<i64>,
    /// Runs by status: sent, failed, blocked, done...
    pub by_status: BTreeMap<String, i64>,
    pub opened: i64,
    pub clicked: i64,
    pub replied: i64,
}

/// Results per step and variant, over every version of the sequence.
pub fn results(
    conn: &mut DbConnection,
    tenant: TenantId,
    sequence: i64,
) -> Result<Vec<StepResult>, SequenceError> {
    get(conn, tenant, sequence)?;
    type Row = (i64, Option<i64>, String, i64, i64, i64, i64);
    let rows: Vec<Row> = step_runs::table
        .inner_join(sequence_steps::table.on(sequence_steps::id.eq(step_runs::step_id)))
        .filter(sequence_steps::sequence_id.eq(sequence))
        .filter(step_runs::tenant_id.eq(tenant.0))
        .group_by((step_runs::step_id, step_runs::variant, step_runs::status))
        .select((
            step_runs::step_id,
            step_runs::variant,
            step_runs::status,
            diesel::dsl::count_star(),
            diesel::dsl::count(step_runs::opened_at),
            diesel::dsl::count(step_runs::clicked_at),
            diesel::dsl::count(step_runs::replied_at),
        ))
        .load(conn)?;
    let mut results: BTreeMap<(i64, Option<i64>), StepResult> = BTreeMap::new();
    for (step, variant, status, runs, opened, clicked, replied) in rows {
        let result = results
            .entry((step, variant))
            .or_insert_with(|| StepResult {
                step,
                variant,
                ..StepResult::default()
            });
        *result.by_status.entry(status).or_default() += runs;
        result.opened += opened;
        result.clicked += clicked;
        result.replied += replied;
    }
    Ok(results.into_values().collect())
}
