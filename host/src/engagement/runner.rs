//! The sequence runner: runs the due steps of active enrollments, on any
//! number of hosts at once.
//!
//! # Exactly once
//!
//! A host first leases an enrollment (a conditional update that only one
//! host can win while the lease lasts), then, for a step that sends, writes
//! the step's run (`sending`) in the transaction that checks the mailbox's
//! caps. The run's unique key (enrollment, step) means a step has one run
//! whichever host gets there. The message goes out with the idempotency key
//! `enrollment-<id>-step-<id>`, so if a host dies between sending and
//! recording, the host that takes the enrollment over sends it again with
//! the same key and the channel answers with the first delivery instead of
//! sending twice.
//!
//! # When
//!
//! A send waits for the sequence's window in the lead's time zone (the
//! sequence's own zone when the lead has none); a wait counts business
//! days (the window's days) from when it is reached; a capped mailbox
//! defers the send until the oldest send in the rolling hour or day ages
//! out. Every later step shifts with it, since each is timed from when the
//! one before ran.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::leads::{self, DoNotContact, Lead, LeadError, NewEvent};
use super::scoring::{self, Rules};
use super::sequences::{
    self, Content, Goto, Mailbox, Sequence, SequenceError, Step, StepSpec, variant_name,
};
use super::tasks::{self, NewTask};
use super::templates::{self, Context};
use crate::db::schema::{enrollments, sequences as sequence_rows, step_runs};
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::metering::{Meter, MeterError, Request};
use crate::runtime::{Call, CallError, Field, Message, Reply, Sender};
use crate::secrets::SecretBox;
use crate::units::{Clock, Timestamp};

/// How long a host holds an enrollment while it runs its steps: far longer
/// than a send takes (a plugin call times out in 30 s).
pub const LEASE: Duration = Duration::from_secs(300);
/// Enrollments one tick runs at most; a backlog is worked off over ticks.
pub const ENROLLMENTS_PER_TICK_MAX: i64 = 200;
/// When a send is refused for now (credits, a channel's rate limit, a
/// failure that may pass), the step is tried again this much later.
pub const RETRY_AFTER: Duration = Duration::from_secs(3_600);

const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// Builds and checks the links the host puts in messages: open and click
/// tracking, the unsubscribe page, and channels' callbacks.
#[derive(Clone, Debug)]
pub struct Links {
    /// Where this platform is reached from outside, such as
    /// `https://tollgate.example.com`, without a trailing slash.
    pub public_url: String,
    pub secrets: Arc<SecretBox>,
}

impl Links {
    pub fn open_pixel(&self, run: i64) -> String {
        let sig = self.secrets.sign("open", &run.to_string());
        format!("{}/t/o/{run}/{sig}", self.public_url)
    }

    pub fn click(&self, run: i64, url: &str) -> String {
        let sig = self.secrets.sign("click", &format!("{run}\n{url}"));
        let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
        format!("{}/t/c/{run}/{sig}?u={encoded}", self.public_url)
    }

    pub fn unsubscribe(&self, run: i64) -> String {
        let sig = self.secrets.sign("unsubscribe", &run.to_string());
        format!("{}/u/{run}/{sig}", self.public_url)
    }

    /// The path segment that names a tenant in its channels' callback URLs.
    pub fn tenant_token(&self, tenant: TenantId) -> String {
        format!(
            "t{}-{}",
            tenant.0,
            self.secrets.sign("callbacks", &tenant.0.to_string())
        )
    }

    /// The tenant a callback token names, when its signature holds.
    pub fn tenant_of(&self, token: &str) -> Option<TenantId> {
        let (id, sig) = token.strip_prefix('t')?.split_once('-')?;
        let id: i64 = id.parse().ok()?;
        self.secrets
            .verify("callbacks", &id.to_string(), sig)
            .then_some(TenantId(id))
    }

    /// The settings an email channel gets when the tenant set none of its
    /// own: one-click unsubscribes (RFC 8058) come back to the host's
    /// callback for the plugin, signed with a secret of the tenant's. Mail
    /// clients post them only to https, so a host reached over plain http
    /// (a developer's) offers none.
    pub fn unsubscribe_settings(
        &self,
        tenant: TenantId,
        plugin: &str,
    ) -> Vec<(&'static str, String)> {
        if !self.public_url.starts_with("https://") {
            return Vec::new();
        }
        let url = format!(
            "{}/api/v1/channels/{plugin}/callbacks/{}?d={{delivery_id}}&r={{recipient}}&sig={{sig}}",
            self.public_url,
            self.tenant_token(tenant)
        );
        let secret = self
            .secrets
            .sign("unsubscribe secret", &tenant.0.to_string());
        vec![("unsubscribe_url", url), ("unsubscribe_secret", secret)]
    }
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Enrollments this host leased and ran.
    pub enrollments: usize,
    /// Steps run (sent, tasks created, waits and conditions passed).
    pub steps: usize,
}

/// Runs sequences' due steps.
pub struct Runner {
    pub database: Database,
    pub meter: Arc<Meter>,
    pub clock: Arc<dyn Clock>,
    pub links: Links,
    /// This host's name on its leases.
    pub owner: String,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// What happened to one step.
enum Outcome {
    /// On to this position, due now.
    Next(u32),
    /// On to this position, due then.
    Later(u32, Timestamp),
    /// Not yet: try this step again then.
    Defer(Timestamp, Option<String>),
    /// The enrollment ends: completed, stopped or blocked, and why.
    End(&'static str, Option<String>),
    /// This host no longer holds the enrollment: leave it alone.
    Lost,
}

impl Runner {
    /// Leases and runs up to [`ENROLLMENTS_PER_TICK_MAX`] due enrollments.
    pub fn tick(&self) -> Result<Tick, SequenceError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let due: Vec<i64> = enrollments::table
            .inner_join(sequence_rows::table.on(sequence_rows::id.eq(enrollments::sequence_id)))
            .filter(enrollments::status.eq("active"))
            .filter(enrollments::next_run_at.le(now.micros()))
            .filter(
                enrollments::lease_until
                    .is_null()
                    .or(enrollments::lease_until.lt(now.micros())),
            )
            .filter(sequence_rows::status.eq("active"))
            .order(enrollments::next_run_at.asc())
            .limit(ENROLLMENTS_PER_TICK_MAX)
            .select(enrollments::id)
            .load(&mut conn)?;
        let mut tick = Tick::default();
        for id in due {
            // Another host may have run it since the list was read.
            if !self.lease(&mut conn, id)? {
                continue;
            }
            tick.enrollments += 1;
            let ran = self.run(&mut conn, id, &mut tick);
            // Whatever happened, the lease goes, so the enrollment is not
            // stuck for a lease's length.
            diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
                .filter(enrollments::lease_owner.eq(&self.owner))
                .set((
                    enrollments::lease_owner.eq(None::<String>),
                    enrollments::lease_until.eq(None::<i64>),
                ))
                .execute(&mut conn)?;
            if let Err(error) = ran {
                tracing::warn!(enrollment = id, %error, "running a sequence step failed; will retry");
            }
        }
        Ok(tick)
    }

    /// Takes the enrollment for this host if it is still due, its
    /// sequence still active, and no other host holds it.
    fn lease(&self, conn: &mut DbConnection, id: i64) -> Result<bool, DieselError> {
        let now = self.clock.now();
        let until = now.saturating_add_micros(LEASE.as_micros() as i64);
        let active_sequences = sequence_rows::table
            .filter(sequence_rows::status.eq("active"))
            .select(sequence_rows::id);
        let won = diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
            .filter(enrollments::status.eq("active"))
            .filter(enrollments::next_run_at.le(now.micros()))
            .filter(enrollments::sequence_id.eq_any(active_sequences))
            .filter(
                enrollments::lease_until
                    .is_null()
                    .or(enrollments::lease_until.lt(now.micros())),
            )
            .set((
                enrollments::lease_owner.eq(&self.owner),
                enrollments::lease_until.eq(until.micros()),
            ))
            .execute(conn)?;
        Ok(won == 1)
    }

    /// Extends this host's lease before a step; false when it lost it (it
    /// ran out and another host took the enrollment) or the enrollment
    /// stopped.
    fn renew(&self, conn: &mut DbConnection, id: i64) -> Result<bool, DieselError> {
        let until = self
            .clock
            .now()
            .saturating_add_micros(LEASE.as_micros() as i64);
        let kept = diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
            .filter(enrollments::status.eq("active"))
            .filter(enrollments::lease_owner.eq(&self.owner))
            .set(enrollments::lease_until.eq(until.micros()))
            .execute(conn)?;
        Ok(kept == 1)
    }

    /// Runs the enrollment's steps that are due, one after another, until
    /// one is due later or the enrollment ends.
    fn run(&self, conn: &mut DbConnection, id: i64, tick: &mut Tick) -> Result<(), SequenceError> {
        let (tenant, sequence_id, version, lead_id, mut position): (i64, i64, i64, i64, i64) =
            enrollments::table
                .filter(enrollments::id.eq(id))
                .select((
                    enrollments::tenant_id,
                    enrollments::sequence_id,
                    enrollments::version,
                    enrollments::lead_id,
                    enrollments::position,
                ))
                .first(conn)?;
        let tenant = TenantId(tenant);
        let sequence = sequences::get(conn, tenant, sequence_id)?;
        let steps = sequences::steps_of(conn, sequence_id, version)?;
        let rules = scoring::rules_of(conn, tenant)?;
        // Each step moves forward, so an enrollment runs each at most once.
        for _ in 0..=steps.len() {
            if !self.renew(conn, id)? {
                return Ok(());
            }
            let now = self.clock.now();
            let lead = match leads::get(conn, tenant, lead_id) {
                Ok(lead) => lead,
                Err(LeadError::NotFound(_)) => {
                    return self.finish(
                        conn,
                        id,
                        "stopped",
                        Some("the lead was erased".into()),
                        now,
                    );
                }
                Err(error) => return Err(error.into()),
            };
            let Some(step) = steps.get(position as usize) else {
                return self.finish(conn, id, "completed", None, now);
            };
            if let Some(reason) = lead.do_not_contact {
                return self.finish(
                    conn,
                    id,
                    "stopped",
                    Some(format!("the lead is do-not-contact ({})", reason.as_str())),
                    now,
                );
            }
            let outcome = self.step(conn, &sequence, step, id, &lead, &rules, now)?;
            tick.steps += usize::from(!matches!(outcome, Outcome::Defer(..)));
            match outcome {
                Outcome::Next(next) => {
                    position = i64::from(next);
                    self.moved(conn, id, position, now, None)?;
                }
                Outcome::Later(next, at) => {
                    return self.moved(conn, id, i64::from(next), at, None);
                }
                Outcome::Defer(at, reason) => return self.moved(conn, id, position, at, reason),
                Outcome::End(status, reason) => return self.finish(conn, id, status, reason, now),
                Outcome::Lost => return Ok(()),
            }
        }
        Ok(())
    }

    /// Moves the enrollment to `position`, due at `at`; only while it is
    /// still active (a reply may have stopped it meanwhile) and this host
    /// holds it.
    fn moved(
        &self,
        conn: &mut DbConnection,
        id: i64,
        position: i64,
        at: Timestamp,
        reason: Option<String>,
    ) -> Result<(), SequenceError> {
        diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
            .filter(enrollments::status.eq("active"))
            .filter(enrollments::lease_owner.eq(&self.owner))
            .set((
                enrollments::position.eq(position),
                enrollments::next_run_at.eq(at.micros()),
                enrollments::reason.eq(reason),
                enrollments::updated_at.eq(self.clock.now().micros()),
            ))
            .execute(conn)?;
        Ok(())
    }

    fn finish(
        &self,
        conn: &mut DbConnection,
        id: i64,
        status: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), SequenceError> {
        diesel::update(enrollments::table.filter(enrollments::id.eq(id)))
            .filter(enrollments::status.eq("active"))
            .filter(enrollments::lease_owner.eq(&self.owner))
            .set((
                enrollments::status.eq(status),
                enrollments::reason.eq(reason),
                enrollments::next_run_at.eq(None::<i64>),
                enrollments::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        conn: &mut DbConnection,
        sequence: &Sequence,
        step: &Step,
        enrollment: i64,
        lead: &Lead,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<Outcome, SequenceError> {
        let tenant = sequence.tenant;
        let zone = lead
            .fields
            .time_zone
            .as_deref()
            .and_then(|zone| zone.parse().ok())
            .unwrap_or(sequence.time_zone);
        let next = step.position + 1;
        match &step.spec {
            StepSpec::Wait { business_days } => {
                self.record_done(
                    conn,
                    tenant,
                    enrollment,
                    step,
                    format!("wait {business_days} business days"),
                    now,
                )?;
                let until = sequence.window.add_business_days(zone, now, *business_days);
                Ok(Outcome::Later(next, until))
            }
            StepSpec::Condition {
                test,
                then,
                otherwise,
            } => {
                let holds = match (&test.engaged, test.field_rule()) {
                    (Some(engaged), _) => self.engaged(conn, enrollment, engaged)?,
                    (None, Some(rule)) => {
                        let rules = Rules {
                            rules: vec![scoring::Rule { points: 1, ..rule }],
                        };
                        scoring::compute(&rules, &lead.fields, &[], now).0 == 1
                    }
                    (None, None) => false,
                };
                let goto = if holds { then } else { otherwise };
                self.record_done(
                    conn,
                    tenant,
                    enrollment,
                    step,
                    (if holds { "then" } else { "else" }).to_string(),
                    now,
                )?;
                match goto {
                    None => Ok(Outcome::Next(next)),
                    Some(Goto::Step(number)) => Ok(Outcome::Next(number.saturating_sub(1))),
                    Some(Goto::End(_)) => Ok(Outcome::End("completed", None)),
                }
            }
            StepSpec::Task { title, task, notes } => {
                let context = self.context(lead, None, None);
                let title = match templates::render(title, false, &context) {
                    Ok(title) => title,
                    Err(reason) => {
                        return self.blocked(conn, tenant, enrollment, step, None, reason, now);
                    }
                };
                let notes = match notes
                    .as_deref()
                    .map(|notes| templates::render(notes, false, &context))
                    .transpose()
                {
                    Ok(notes) => notes,
                    Err(reason) => {
                        return self.blocked(conn, tenant, enrollment, step, None, reason, now);
                    }
                };
                let task = NewTask {
                    title,
                    kind: task.clone(),
                    lead: Some(lead.id),
                    step_run: None,
                    deal: None,
                    due_at: Some(sequence.window.next_open(zone, now)),
                    notes,
                };
                // The run and its task together: a host that dies between
                // them leaves neither, and the next creates both once.
                db::write_transaction(conn, |conn| {
                    let detail = format!("{} task created", task.kind);
                    if let Some(run) =
                        self.record_done(conn, tenant, enrollment, step, detail, now)?
                    {
                        tasks::create(
                            conn,
                            tenant,
                            &NewTask {
                                step_run: Some(run),
                                ..task
                            },
                            now,
                        )?;
                    }
                    Ok::<_, SequenceError>(())
                })?;
                Ok(Outcome::Next(next))
            }
            StepSpec::Email { .. }
            | StepSpec::LinkedinConnect { .. }
            | StepSpec::LinkedinMessage { .. }
            | StepSpec::Message { .. } => {
                let opens = sequence.window.next_open(zone, now);
                if opens > now {
                    return Ok(Outcome::Defer(opens, None));
                }
                self.send(conn, sequence, step, enrollment, lead, rules, now)
                    .map(|outcome| match outcome {
                        // A capped send waits for its window too.
                        Outcome::Defer(at, reason) => {
                            Outcome::Defer(sequence.window.next_open(zone, at), reason)
                        }
                        outcome => outcome,
                    })
            }
        }
    }

    /// Whether any earlier run of the enrollment was opened (or clicked).
    fn engaged(
        &self,
        conn: &mut DbConnection,
        enrollment: i64,
        engaged: &str,
    ) -> Result<bool, DieselError> {
        let query = step_runs::table.filter(step_runs::enrollment_id.eq(enrollment));
        let found: i64 = match engaged {
            "clicked" => query
                .filter(step_runs::clicked_at.is_not_null())
                .count()
                .get_result(conn)?,
            _ => query
                .filter(
                    step_runs::opened_at
                        .is_not_null()
                        .or(step_runs::clicked_at.is_not_null()),
                )
                .count()
                .get_result(conn)?,
        };
        Ok(found > 0)
    }

    /// Records a step that needs no channel as done; none when it was
    /// already (a host that died after recording it).
    fn record_done(
        &self,
        conn: &mut DbConnection,
        tenant: TenantId,
        enrollment: i64,
        step: &Step,
        detail: String,
        now: Timestamp,
    ) -> Result<Option<i64>, SequenceError> {
        if ran(conn, enrollment, step)? {
            return Ok(None);
        }
        let inserted = diesel::insert_into(step_runs::table)
            .values((
                step_runs::tenant_id.eq(tenant.0),
                step_runs::enrollment_id.eq(enrollment),
                step_runs::step_id.eq(step.id),
                step_runs::status.eq("done"),
                step_runs::detail.eq(detail),
                step_runs::started_at.eq(now.micros()),
                step_runs::finished_at.eq(now.micros()),
            ))
            .returning(step_runs::id)
            .get_result::<i64>(conn);
        match inserted {
            Ok(run) => Ok(Some(run)),
            // Another host, whose lease ran out, got there first.
            Err(DieselError::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &self,
        conn: &mut DbConnection,
        tenant: TenantId,
        enrollment: i64,
        step: &Step,
        run: Option<i64>,
        reason: String,
        now: Timestamp,
    ) -> Result<Outcome, SequenceError> {
        let reason = format!(
            "step {} ({}): {reason}",
            step.position + 1,
            step.spec.kind()
        );
        match run {
            Some(run) => {
                diesel::update(step_runs::table.filter(step_runs::id.eq(run)))
                    .set((
                        step_runs::status.eq("blocked"),
                        step_runs::detail.eq(&reason),
                        step_runs::finished_at.eq(now.micros()),
                    ))
                    .execute(conn)?;
            }
            None if !ran(conn, enrollment, step)? => {
                diesel::insert_into(step_runs::table)
                    .values((
                        step_runs::tenant_id.eq(tenant.0),
                        step_runs::enrollment_id.eq(enrollment),
                        step_runs::step_id.eq(step.id),
                        step_runs::status.eq("blocked"),
                        step_runs::detail.eq(&reason),
                        step_runs::started_at.eq(now.micros()),
                        step_runs::finished_at.eq(now.micros()),
                    ))
                    .execute(conn)?;
            }
            None => {}
        }
        Ok(Outcome::End("blocked", Some(reason)))
    }

    fn context(
        &self,
        lead: &Lead,
        mailbox: Option<&Mailbox>,
        unsubscribe_url: Option<String>,
    ) -> Context {
        Context {
            lead: lead.fields.clone(),
            sender_name: mailbox.and_then(|mailbox| mailbox.name.clone()),
            sender_address: mailbox
                .map(|mailbox| mailbox.address.clone())
                .unwrap_or_default(),
            unsubscribe_url,
        }
    }

    /// Sends a step's message: claims its run within the mailbox's caps,
    /// renders it, and makes the metered call.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        conn: &mut DbConnection,
        sequence: &Sequence,
        step: &Step,
        enrollment: i64,
        lead: &Lead,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<Outcome, SequenceError> {
        let tenant = sequence.tenant;
        let next = step.position + 1;
        let (mailbox_id, variants) = step.spec.sends().expect("a step that sends");
        let mailbox = sequences::get_mailbox(conn, tenant, mailbox_id)?;
        let recipient = match &step.spec {
            StepSpec::Email { .. } => lead.fields.email.clone(),
            StepSpec::LinkedinConnect { .. } | StepSpec::LinkedinMessage { .. } => {
                lead.fields.linkedin_url.clone()
            }
            _ => lead
                .fields
                .phone
                .clone()
                .or_else(|| lead.fields.email.clone()),
        };
        let Some(recipient) = recipient else {
            let field = match &step.spec {
                StepSpec::Email { .. } => "an email address",
                StepSpec::LinkedinConnect { .. } | StepSpec::LinkedinMessage { .. } => {
                    "a LinkedIn URL"
                }
                _ => "a phone number or email address",
            };
            return self.blocked(
                conn,
                tenant,
                enrollment,
                step,
                None,
                format!("the lead has no {field}"),
                now,
            );
        };
        if matches!(step.spec, StepSpec::Email { .. })
            && let Some(reason) = leads::suppression_of(conn, tenant, &recipient)?
        {
            leads::set_do_not_contact(conn, tenant, lead.id, reason, now)?;
            return Ok(Outcome::End(
                "stopped",
                Some(format!("{recipient} is suppressed ({})", reason.as_str())),
            ));
        }
        let variant = pick_variant(enrollment, step.id, variants);
        let run = match self.claim(
            conn, tenant, enrollment, step, &mailbox, variant, &recipient, now,
        )? {
            Claim::Run(run) => run,
            Claim::Done => return Ok(Outcome::Next(next)),
            Claim::Capped(at, reason) => return Ok(Outcome::Defer(at, Some(reason))),
            Claim::Lost => return Ok(Outcome::Lost),
        };
        let content = &variants[variant];
        let unsubscribe_url = self.links.unsubscribe(run);
        let context = self.context(lead, Some(&mailbox), Some(unsubscribe_url.clone()));
        let rendered = (|| -> Result<(Option<String>, String, Option<String>), String> {
            let subject = content
                .subject
                .as_deref()
                .map(|subject| templates::render(subject, false, &context))
                .transpose()?;
            let text = templates::render(&content.body, false, &context)?;
            let html = content
                .html
                .as_deref()
                .map(|html| templates::render(html, true, &context))
                .transpose()?;
            Ok((
                subject.map(|subject| subject.replace(['\r', '\n'], " ")),
                text,
                html,
            ))
        })();
        let (subject, mut text, mut html) = match rendered {
            Ok(rendered) => rendered,
            Err(reason) => {
                return self.blocked(conn, tenant, enrollment, step, Some(run), reason, now);
            }
        };
        let is_email = matches!(step.spec, StepSpec::Email { .. });
        if is_email {
            // Every email says how to stop them, even when its template
            // forgot to.
            if !content.body.contains("unsubscribe_url") {
                text.push_str(&format!(
                    "\n\n--\nTo receive no more emails from us: {unsubscribe_url}\n"
                ));
            }
            if sequence.tracking {
                let body = html
                    .take()
                    .unwrap_or_else(|| templates::text_to_html(&text));
                let pixel = format!(
                    "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\">",
                    self.links.open_pixel(run)
                );
                html = Some(templates::track_links(
                    &body,
                    |url| self.links.click(run, url),
                    &pixel,
                ));
            }
        }
        let mut headers = Vec::new();
        match &step.spec {
            StepSpec::LinkedinConnect { .. } => headers.push(Field {
                name: "linkedin-action".into(),
                value: "connect".into(),
            }),
            StepSpec::LinkedinMessage { .. } => headers.push(Field {
                name: "linkedin-action".into(),
                value: "message".into(),
            }),
            _ => {}
        }
        let message = Message {
            recipient: recipient.clone(),
            recipient_name: full_name(lead),
            sender: Sender {
                address: mailbox.address.clone(),
                name: mailbox.name.clone(),
            },
            subject,
            text_body: text,
            html_body: html,
            headers,
            references: self.references(conn, enrollment, &mailbox)?,
            idempotency_key: format!("enrollment-{enrollment}-step-{}", step.id),
        };
        let request = Request {
            tenant,
            plugin: mailbox.plugin.clone(),
            call: Call::Send(message),
            idempotency_key: Some(format!("enrollment-{enrollment}-step-{}", step.id)),
        };
        let defaults = match is_email {
            true => self.links.unsubscribe_settings(tenant, &mailbox.plugin),
            false => Vec::new(),
        };
        let metered = match self.meter.invoke_with_defaults(request, &defaults) {
            Ok(metered) => metered,
            Err(error) => {
                // Nothing was sent or charged: the run goes, so the step
                // runs again later, and its cap slot is free meanwhile.
                diesel::delete(step_runs::table.filter(step_runs::id.eq(run))).execute(conn)?;
                let reason = format!(
                    "step {} ({}) could not be sent: {error}",
                    step.position + 1,
                    step.spec.kind()
                );
                return match error {
                    MeterError::InsufficientCredits { .. }
                    | MeterError::ResellerBalanceExhausted { .. }
                    | MeterError::Suspended
                    | MeterError::Database(_)
                    | MeterError::Other(_) => Ok(Outcome::Defer(
                        now.saturating_add_micros(RETRY_AFTER.as_micros() as i64),
                        Some(reason),
                    )),
                    _ => Ok(Outcome::End("blocked", Some(reason))),
                };
            }
        };
        match metered.result {
            Ok(Reply::Sent(sent)) => {
                diesel::update(step_runs::table.filter(step_runs::id.eq(run)))
                    .set((
                        step_runs::status.eq("sent"),
                        step_runs::delivery_id.eq(&sent.delivery_id),
                        step_runs::call_id.eq(&metered.call_id),
                        step_runs::detail.eq(format!("variant {}", variant_name(variant))),
                        step_runs::finished_at.eq(now.micros()),
                    ))
                    .execute(conn)?;
                let event = NewEvent {
                    kind: "sent",
                    occurred_at: now,
                    detail: Some(&format!(
                        "step {} ({}) to {recipient}",
                        step.position + 1,
                        step.spec.kind()
                    )),
                    step_run: Some(run),
                };
                db::write_transaction(conn, |conn| {
                    leads::record_event(conn, tenant, rules, lead.id, event, now)
                })?;
                Ok(Outcome::Next(next))
            }
            Ok(_) => unreachable!("a send replies with what it sent"),
            Err(error) => {
                let reason = format!("step {} ({}): {error}", step.position + 1, step.spec.kind());
                let retry = matches!(&error, CallError::Plugin { error, .. } if error.retryable)
                    || matches!(error, CallError::Timeout { .. } | CallError::Host { .. });
                match retry {
                    true => {
                        diesel::delete(step_runs::table.filter(step_runs::id.eq(run)))
                            .execute(conn)?;
                        Ok(Outcome::Defer(
                            now.saturating_add_micros(RETRY_AFTER.as_micros() as i64),
                            Some(reason),
                        ))
                    }
                    false => {
                        diesel::update(step_runs::table.filter(step_runs::id.eq(run)))
                            .set((
                                step_runs::status.eq("failed"),
                                step_runs::call_id.eq(&metered.call_id),
                                step_runs::detail.eq(&reason),
                                step_runs::finished_at.eq(now.micros()),
                            ))
                            .execute(conn)?;
                        Ok(Outcome::End("blocked", Some(reason)))
                    }
                }
            }
        }
    }

    /// The delivery ids of the enrollment's earlier messages through the
    /// same mailbox, oldest first: a follow-up threads under them.
    fn references(
        &self,
        conn: &mut DbConnection,
        enrollment: i64,
        mailbox: &Mailbox,
    ) -> Result<Vec<String>, DieselError> {
        let delivered: Vec<Option<String>> = step_runs::table
            .filter(step_runs::enrollment_id.eq(enrollment))
            .filter(step_runs::mailbox_id.eq(mailbox.id))
            .filter(step_runs::status.eq("sent"))
            .order(step_runs::id.asc())
            .select(step_runs::delivery_id)
            .load(conn)?;
        Ok(delivered.into_iter().flatten().collect())
    }

    /// Claims the step's run in the transaction that checks the mailbox's
    /// caps: the run counts against them from now on.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        conn: &mut DbConnection,
        tenant: TenantId,
        enrollment: i64,
        step: &Step,
        mailbox: &Mailbox,
        variant: usize,
        recipient: &str,
        now: Timestamp,
    ) -> Result<Claim, SequenceError> {
        db::write_transaction(conn, |conn| {
            // Two hosts sending from one mailbox count its sends one after
            // the other (SQLite runs one write transaction at a time).
            if let DbConnection::Postgres(pg) = conn {
                use crate::db::schema::mailboxes;
                mailboxes::table
                    .find(mailbox.id)
                    .select(mailboxes::id)
                    .for_update()
                    .first::<i64>(pg)
                    .optional()?;
            }
            let held: i64 = enrollments::table
                .filter(enrollments::id.eq(enrollment))
                .filter(enrollments::status.eq("active"))
                .filter(enrollments::lease_owner.eq(&self.owner))
                .count()
                .get_result(conn)?;
            if held == 0 {
                return Ok(Claim::Lost);
            }
            let existing: Option<(i64, String)> = step_runs::table
                .filter(step_runs::enrollment_id.eq(enrollment))
                .filter(step_runs::step_id.eq(step.id))
                .select((step_runs::id, step_runs::status))
                .first(conn)
                .optional()?;
            match existing {
                // A host died mid-send: send again, with the same key.
                Some((run, status)) if status == "sending" => return Ok(Claim::Run(run)),
                Some(_) => return Ok(Claim::Done),
                None => {}
            }
            for (cap, window, name) in [
                (mailbox.hourly_cap, HOUR_MICROS, "hour"),
                (mailbox.daily_cap, DAY_MICROS, "24 hours"),
            ] {
                let Some(cap) = cap else { continue };
                let recent = || {
                    step_runs::table
                        .filter(step_runs::mailbox_id.eq(mailbox.id))
                        .filter(step_runs::status.eq_any(["sending", "sent"]))
                        .filter(step_runs::started_at.gt(now.micros() - window))
                };
                let n_recent: i64 = recent().count().get_result(conn)?;
                if n_recent >= cap {
                    // The cap-th newest send ages out first.
                    let oldest_counted: i64 = recent()
                        .order(step_runs::started_at.desc())
                        .offset(cap - 1)
                        .select(step_runs::started_at)
                        .first(conn)?;
                    let free_at = Timestamp::from_micros(oldest_counted + window + 1);
                    return Ok(Claim::Capped(
                        free_at,
                        format!(
                            "mailbox {} sent its cap of {cap} in the last {name}",
                            mailbox.address
                        ),
                    ));
                }
            }
            let run = diesel::insert_into(step_runs::table)
                .values((
                    step_runs::tenant_id.eq(tenant.0),
                    step_runs::enrollment_id.eq(enrollment),
                    step_runs::step_id.eq(step.id),
                    step_runs::variant.eq(variant as i64),
                    step_runs::status.eq("sending"),
                    step_runs::mailbox_id.eq(mailbox.id),
                    step_runs::recipient.eq(recipient),
                    step_runs::started_at.eq(now.micros()),
                ))
                .returning(step_runs::id)
                .get_result::<i64>(conn)?;
            Ok(Claim::Run(run))
        })
    }
}

/// Whether the enrollment has a run of the step.
fn ran(conn: &mut DbConnection, enrollment: i64, step: &Step) -> Result<bool, DieselError> {
    let runs: i64 = step_runs::table
        .filter(step_runs::enrollment_id.eq(enrollment))
        .filter(step_runs::step_id.eq(step.id))
        .count()
        .get_result(conn)?;
    Ok(runs > 0)
}

enum Claim {
    Run(i64),
    /// Another host holds the enrollment now.
    Lost,
    /// The step ran already.
    Done,
    Capped(Timestamp, String),
}

/// The variant an enrollment gets at a step: by weight, and the same
/// whenever it is asked, so a retry sends the same text.
fn pick_variant(enrollment: i64, step: i64, variants: &[Content]) -> usize {
    let total: u64 = variants
        .iter()
        .map(|variant| u64::from(variant.weight))
        .sum();
    if variants.len() <= 1 || total == 0 {
        return 0;
    }
    // A multiplicative hash spreads consecutive enrollments over the range.
    let mixed = (enrollment as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    let mut point = (mixed >> 11) % total;
    for (index, variant) in variants.iter().enumerate() {
        let weight = u64::from(variant.weight);
        if point < weight {
            return index;
        }
        point -= weight;
    }
    variants.len() - 1
}

fn full_name(lead: &Lead) -> Option<String> {
    match (&lead.fields.first_name, &lead.fields.last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(name), None) | (None, Some(name)) => Some(name.clone()),
        (None, None) => None,
    }
}

/// Stops every active enrollment of a lead: it replied, bounced,
/// unsubscribed, or its deal was won or lost. Returns how many stopped.
pub fn stop_lead(
    conn: &mut DbConnection,
    tenant: TenantId,
    lead: i64,
    reason: &str,
    now: Timestamp,
) -> Result<usize, DieselError> {
    diesel::update(
        enrollments::table
            .filter(enrollments::tenant_id.eq(tenant.0))
            .filter(enrollments::lead_id.eq(lead))
            .filter(enrollments::status.eq("active")),
    )
    .set((
        enrollments::status.eq("stopped"),
        enrollments::reason.eq(reason),
        enrollments::next_run_at.eq(None::<i64>),
        enrollments::updated_at.eq(now.micros()),
    ))
    .execute(conn)
}

/// Suppresses an address tenant-wide, marks the lead that has it
/// do-not-contact and stops its sequences; returns how many stopped.
pub fn suppress_lead(
    conn: &mut DbConnection,
    tenant: TenantId,
    address: &str,
    reason: DoNotContact,
    now: Timestamp,
) -> Result<usize, LeadError> {
    match leads::suppress(conn, tenant, address, reason, now)? {
        Some(lead) => Ok(stop_lead(conn, tenant, lead, reason.as_str(), now)?),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_split_by_weight_and_stay_put() {
        let content = |weight| Content {
            subject: None,
            body: "x".into(),
            html: None,
            weight,
        };
        let variants = [content(1), content(3)];
        let mut counts = [0; 2];
        for enrollment in 0..4_000 {
            counts[pick_variant(enrollment, 7, &variants)] += 1;
        }
        assert!((900..1_100).contains(&counts[0]), "{counts:?}");
        assert_eq!(
            pick_variant(42, 7, &variants),
            pick_variant(42, 7, &variants)
        );
    }
}
