//! What comes back from the people a tenant contacts: a channel's delivery
//! events (parsed by its plugin from a callback), opens and clicks from the
//! tracking links, and unsubscribes. Each lands on the lead's timeline,
//! on the step's results, and where it must, stops the lead's sequences:
//! a reply (not an automatic one), a hard bounce and an unsubscribe do; a
//! hard bounce and an unsubscribe also suppress the address tenant-wide.

use diesel::prelude::*;

use super::leads::{self, DoNotContact, LeadError, NewEvent};
use super::runner;
use super::scoring;
use crate::db::DbConnection;
use crate::db::schema::{enrollments, leads as lead_rows, step_runs};
use crate::ids::TenantId;
use crate::runtime::{Event, EventKind};
use crate::units::Timestamp;

/// Events one callback may carry: far more than a real report holds.
pub const EVENTS_PER_CALLBACK_MAX: usize = 1_000;

/// What applying a callback's events did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events matched to a lead and recorded.
    pub recorded: usize,
    /// Enrollments stopped.
    pub stopped: usize,
    /// Addresses suppressed.
    pub suppressed: usize,
    /// Events naming no lead or delivery of this tenant.
    pub unmatched: usize,
}

/// The run a delivery id names, with its lead.
fn run_of_delivery(
    conn: &mut DbConnection,
    tenant: TenantId,
    delivery: &str,
) -> QueryResult<Option<(i64, i64)>> {
    let delivery = delivery.trim_start_matches('<').trim_end_matches('>');
    step_runs::table
        .inner_join(enrollments::table.on(enrollments::id.eq(step_runs::enrollment_id)))
        .filter(step_runs::tenant_id.eq(tenant.0))
        .filter(step_runs::delivery_id.eq(delivery))
        .select((step_runs::id, enrollments::lead_id))
        .first(conn)
        .optional()
}

/// The run a tracking link names, with its tenant and lead.
pub fn run_of(conn: &mut DbConnection, run: i64) -> QueryResult<Option<(TenantId, i64)>> {
    Ok(step_runs::table
        .inner_join(enrollments::table.on(enrollments::id.eq(step_runs::enrollment_id)))
        .filter(step_runs::id.eq(run))
        .select((step_runs::tenant_id, enrollments::lead_id))
        .first::<(i64, i64)>(conn)
        .optional()?
        .map(|(tenant, lead)| (TenantId(tenant), lead)))
}

/// Applies a channel's events for a tenant. Run it in a write transaction.
pub fn apply(
    conn: &mut DbConnection,
    tenant: TenantId,
    events: &[Event],
    now: Timestamp,
) -> Result<Applied, LeadError> {
    let rules = scoring::rules_of(conn, tenant)?;
    let mut applied = Applied::default();
    for event in events.iter().take(EVENTS_PER_CALLBACK_MAX) {
        let run = match &event.delivery_id {
            Some(delivery) => run_of_delivery(conn, tenant, delivery)?,
            None => None,
        };
        let lead = match (run, &event.recipient) {
            (Some((_, lead)), _) => Some(lead),
            (None, Some(recipient)) => lead_rows::table
                .filter(lead_rows::tenant_id.eq(tenant.0))
                .filter(lead_rows::email_key.eq(recipient.trim().to_lowercase()))
                .select(lead_rows::id)
                .first::<i64>(conn)
                .optional()?,
            (None, None) => None,
        };
        let occurred_at = event
            .occurred_at_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .map(|ms| Timestamp::from_micros(ms.saturating_mul(1_000)))
            // An event from the future (a wrong clock, a forged callback)
            // counts as now.
            .map_or(now, |at| at.min(now));
        let kind = kind_name(event.kind);
        // Suppression needs only the address, lead or not.
        let address = event
            .recipient
            .clone()
            .or_else(|| lead.and_then(|lead| leads::get(conn, tenant, lead).ok()?.fields.email));
        match (event.kind, &address) {
            (EventKind::BouncedHard, Some(address)) => {
                applied.stopped +=
                    runner::suppress_lead(conn, tenant, address, DoNotContact::Bounced, now)?;
                applied.suppressed += 1;
            }
            (EventKind::Unsubscribed, Some(address)) => {
                applied.stopped +=
                    runner::suppress_lead(conn, tenant, address, DoNotContact::Unsubscribed, now)?;
                applied.suppressed += 1;
            }
            _ => {}
        }
        let Some(lead) = lead else {
            applied.unmatched += 1;
            continue;
        };
        if let Some((run, _)) = run {
            mark_run(conn, run, event.kind, occurred_at)?;
        }
        let detail = event.url.as_deref().or(event.detail.as_deref());
        let new = NewEvent {
            kind,
            occurred_at,
            detail,
            step_run: run.map(|(run, _)| run),
        };
        leads::record_event(conn, tenant, &rules, lead, new, now)?;
        applied.recorded += 1;
        let stop = match event.kind {
            EventKind::Replied => Some("replied"),
            EventKind::BouncedHard => Some("bounced"),
            EventKind::Unsubscribed => Some("unsubscribed"),
            _ => None,
        };
        if let Some(reason) = stop {
            applied.stopped += runner::stop_lead(conn, tenant, lead, reason, now)?;
        }
    }
    Ok(applied)
}

/// The lead event's name for a channel event.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Delivered => "delivered",
        EventKind::Opened => "opened",
        EventKind::Clicked => "clicked",
        EventKind::Replied => "replied",
        EventKind::AutoReplied => "auto_replied",
        EventKind::BouncedHard => "bounced_hard",
        EventKind::BouncedSoft => "bounced_soft",
        EventKind::Unsubscribed => "unsubscribed",
    }
}

/// Notes an engagement on its run, the first time only.
fn mark_run(
    conn: &mut DbConnection,
    run: i64,
    kind: EventKind,
    at: Timestamp,
) -> QueryResult<bool> {
    let target = step_runs::table.filter(step_runs::id.eq(run));
    let changed = match kind {
        EventKind::Opened => diesel::update(target.filter(step_runs::opened_at.is_null()))
            .set(step_runs::opened_at.eq(at.micros()))
            .execute(conn)?,
        EventKind::Clicked => diesel::update(target.filter(step_runs::clicked_at.is_null()))
            .set(step_runs::clicked_at.eq(at.micros()))
            .execute(conn)?,
        EventKind::Replied => diesel::update(target.filter(step_runs::replied_at.is_null()))
            .set(step_runs::replied_at.eq(at.micros()))
            .execute(conn)?,
        _ => 0,
    };
    Ok(changed > 0)
}

/// An open or click from a tracking link: recorded on its run (and the
/// lead's timeline) the first time; a click on another link is recorded
/// too. Returns whether it was new.
pub fn track(
    conn: &mut DbConnection,
    run: i64,
    kind: EventKind,
    url: Option<&str>,
    now: Timestamp,
) -> Result<bool, LeadError> {
    let Some((tenant, lead)) = run_of(conn, run)? else {
        return Ok(false);
    };
    let first = mark_run(conn, run, kind, now)?;
    // Opens repeat with every look at the message; only the first counts.
    // Each click is worth a line on the timeline, within its bound.
    if !first && kind == EventKind::Opened {
        return Ok(false);
    }
    let rules = scoring::rules_of(conn, tenant)?;
    let new = NewEvent {
        kind: kind_name(kind),
        occurred_at: now,
        detail: url,
        step_run: Some(run),
    };
    leads::record_event(conn, tenant, &rules, lead, new, now)?;
    Ok(first)
}

/// An unsubscribe from the link in a message: suppresses the address the
/// run went to, tenant-wide, and stops the lead's sequences.
pub fn unsubscribe(conn: &mut DbConnection, run: i64, now: Timestamp) -> Result<bool, LeadError> {
    let found: Option<(i64, Option<String>, i64)> = step_runs::table
        .inner_join(enrollments::table.on(enrollments::id.eq(step_runs::enrollment_id)))
        .filter(step_runs::id.eq(run))
        .select((
            step_runs::tenant_id,
            step_runs::recipient,
            enrollments::lead_id,
        ))
        .first(conn)
        .optional()?;
    let Some((tenant, recipient, lead)) = found else {
        return Ok(false);
    };
    let tenant = TenantId(tenant);
    if let Some(address) = recipient {
        runner::suppress_lead(conn, tenant, &address, DoNotContact::Unsubscribed, now)?;
    }
    leads::set_do_not_contact(conn, tenant, lead, DoNotContact::Unsubscribed, now)?;
    runner::stop_lead(conn, tenant, lead, "unsubscribed", now)?;
    let rules = scoring::rules_of(conn, tenant)?;
    let new = NewEvent {
        kind: "unsubscribed",
        occurred_at: now,
        detail: Some("the unsubscribe link"),
        step_run: Some(run),
    };
    leads::record_event(conn, tenant, &rules, lead, new, now)?;
    Ok(true)
}
