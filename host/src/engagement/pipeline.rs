//! The deal pipeline: pipelines with ordered stages, deals with a value,
//! an owner, a lead and a position in their stage's column, and rules that
//! act when a deal enters a stage (start a sequence for its lead, call a
//! webhook, create a task).
//!
//! # Once per change
//!
//! Moving a deal to another stage writes a move and, in the same
//! transaction, one firing per rule of the new stage, unique by (rule,
//! move). A move to the stage the deal is already in only reorders, so
//! sending the same move twice fires nothing the second time. Rules that
//! only write (a task, an enrollment) run in that transaction; a webhook
//! runs after it through the metered path, with the idempotency key
//! `rule-<rule>-move-<move>`, and a firing left pending by a crash is
//! picked up by the scheduler.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::leads;
use super::runner;
use super::sequences::{self, Enrolled};
use super::tasks::{self, NewTask};
use super::templates::{self, Context};
use crate::db::schema::{deal_moves, deals, pipelines, rule_firings, stage_rules, stages};
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::metering::{Meter, MeterError, Request};
use crate::runtime::{Call, CallError, Field, Message, Reply, Sender};
use crate::units::{Clock, Currency, Money, Timestamp};

/// Stages in one pipeline, rules on one stage, pipelines per tenant.
pub const STAGES_MAX: usize = 30;
pub const RULES_PER_STAGE_MAX: usize = 10;
pub const PIPELINES_MAX: i64 = 100;
/// Deals in one stage's column: a board larger than this is not looked at
/// as a board, and a move renumbers its column.
pub const DEALS_PER_STAGE_MAX: i64 = 10_000;
/// Deals in one page of a listing, and on one board.
pub const PAGE_LIMIT_MAX: i64 = 500;
/// How long a host holds a webhook firing while it calls.
const FIRING_LEASE_MICROS: i64 = 300_000_000;
/// Firings one sweep retries.
pub const FIRINGS_PER_SWEEP_MAX: i64 = 100;
/// A webhook that failed for now is called again this much later.
const RETRY_AFTER_MICROS: i64 = 3_600_000_000;
/// Changes of stage a deal's history shows: the latest.
pub const HISTORY_MAX: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this tenant has {0}, the most it may")]
    TooMany(&'static str),
    #[error("database error: {0}")]
    Database(#[from] DieselError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn invalid(message: impl Into<String>) -> PipelineError {
    PipelineError::Invalid(message.into())
}

/// What a stage's rule does when a deal enters the stage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Enroll the deal's lead in a sequence.
    StartSequence { sequence: i64 },
    /// Send the deal, as JSON, through a channel plugin (the webhook
    /// channel posts it to the tenant's URL).
    CallWebhook { plugin: String },
    /// Create a task about the deal; the title is a template over the lead
    /// and `deal`.
    CreateTask {
        title: String,
        #[serde(default = "todo")]
        task: String,
    },
}

fn todo() -> String {
    "todo".into()
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::StartSequence { .. } => "start_sequence",
            Action::CallWebhook { .. } => "call_webhook",
            Action::CreateTask { .. } => "create_task",
        }
    }
}

/// A stage as defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpec {
    pub name: String,
    /// `won` or `lost`.
    pub outcome: Option<String>,
    pub rules: Vec<Action>,
}

/// A stored stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub id: i64,
    pub name: String,
    pub position: i64,
    pub outcome: Option<String>,
    pub rules: Vec<(i64, Action)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub id: i64,
    pub name: String,
    pub stages: Vec<Stage>,
    pub created_at: Timestamp,
}

/// Checks a pipeline's name and stages; the error names the stage.
fn validate(
    conn: &mut DbConnection,
    tenant: TenantId,
    name: &str,
    stages_spec: &[StageSpec],
) -> Result<(), PipelineError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(invalid("name: 1 to 200 characters"));
    }
    if stages_spec.is_empty() || stages_spec.len() > STAGES_MAX {
        return Err(invalid(format!("stages: 1 to {STAGES_MAX}")));
    }
    for (index, stage) in stages_spec.iter().enumerate() {
        let at = |reason: String| invalid(format!("stages[{index}] ({}): {reason}", stage.name));
        if stage.name.trim().is_empty() || stage.name.chars().count() > 100 {
            return Err(at("name: 1 to 100 characters".into()));
        }
        if let Some(outcome) = &stage.outcome
            && outcome != "won"
            && outcome != "lost"
        {
            return Err(at("outcome: won, lost, or none".into()));
        }
        if stage.rules.len() > RULES_PER_STAGE_MAX {
            return Err(at(format!("at most {RULES_PER_STAGE_MAX} rules")));
        }
        for rule in &stage.rules {
            match rule {
                Action::StartSequence { sequence } => {
                    sequences::get(conn, tenant, *sequence).map_err(|_| {
                        at(format!("start_sequence: sequence {sequence} not found"))
                    })?;
                }
                Action::CallWebhook { plugin } if plugin.trim().is_empty() => {
                    return Err(at("call_webhook: name the channel plugin".into()));
                }
                Action::CallWebhook { .. } => {}
                Action::CreateTask { title, task } => {
                    templates::check(title)
                        .map_err(|reason| at(format!("create_task: title: {reason}")))?;
                    if !tasks::KINDS.contains(&task.as_str()) {
                        return Err(at(format!(
                            "create_task: task is one of {}",
                            tasks::KINDS.join(", ")
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks and stores a pipeline.
pub fn create_pipeline(
    conn: &mut DbConnection,
    tenant: TenantId,
    name: &str,
    stages_spec: &[StageSpec],
    now: Timestamp,
) -> Result<Pipeline, PipelineError> {
    validate(conn, tenant, name, stages_spec)?;
    let held: i64 = pipelines::table
        .filter(pipelines::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)?;
    if held >= PIPELINES_MAX {
        return Err(PipelineError::TooMany("100 pipelines"));
    }
    let id = diesel::insert_into(pipelines::table)
        .values((
            pipelines::tenant_id.eq(tenant.0),
            pipelines::name.eq(name.trim()),
            pipelines::created_at.eq(now.micros()),
        ))
        .returning(pipelines::id)
        .get_result::<i64>(conn)?;
    for (position, stage) in stages_spec.iter().enumerate() {
        let stage_id = diesel::insert_into(stages::table)
            .values((
                stages::tenant_id.eq(tenant.0),
                stages::pipeline_id.eq(id),
                stages::name.eq(stage.name.trim()),
                stages::position.eq(position as i64),
                stages::outcome.eq(&stage.outcome),
            ))
            .returning(stages::id)
            .get_result::<i64>(conn)?;
        write_rules(conn, tenant, stage_id, &stage.rules)?;
    }
    get_pipeline(conn, tenant, id)
}

fn write_rules(
    conn: &mut DbConnection,
    tenant: TenantId,
    stage: i64,
    rules: &[Action],
) -> Result<(), DieselError> {
    for rule in rules {
        diesel::insert_into(stage_rules::table)
            .values((
                stage_rules::tenant_id.eq(tenant.0),
                stage_rules::stage_id.eq(stage),
                stage_rules::action.eq(rule.name()),
                stage_rules::config.eq(serde_json::to_string(rule).expect("rules serialise")),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Replaces a pipeline's name and stages: each stage given with the `id`
/// of one of its stages keeps that stage (and its deals) with the new
/// name, outcome, place and rules; one without an id is added; a stage
/// left out is removed, unless deals are in it. Replaced rules and removed
/// stages stay stored for the history that names them.
pub fn update_pipeline(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    name: &str,
    stages_spec: &[(Option<i64>, StageSpec)],
) -> Result<Pipeline, PipelineError> {
    let specs: Vec<StageSpec> = stages_spec.iter().map(|(_, spec)| spec.clone()).collect();
    validate(conn, tenant, name, &specs)?;
    lock_pipeline(conn, id)?;
    let current = get_pipeline(conn, tenant, id)?;
    let kept: Vec<i64> = stages_spec.iter().filter_map(|(stage, _)| *stage).collect();
    for stage in &kept {
        if !current.stages.iter().any(|held| held.id == *stage) {
            return Err(invalid(format!(
                "stages: stage {stage} is not in pipeline {id}"
            )));
        }
        if kept.iter().filter(|other| *other == stage).count() > 1 {
            return Err(invalid(format!("stages: stage {stage} is given twice")));
        }
    }
    for stage in current
        .stages
        .iter()
        .filter(|held| !kept.contains(&held.id))
    {
        let deals_in: i64 = deals::table
            .filter(deals::stage_id.eq(stage.id))
            .count()
            .get_result(conn)?;
        if deals_in > 0 {
            return Err(invalid(format!(
                "stage {} ({}) holds {deals_in} {}; move them to another stage before removing it",
                stage.id,
                stage.name,
                if deals_in == 1 { "deal" } else { "deals" }
            )));
        }
        diesel::update(stages::table.filter(stages::id.eq(stage.id)))
            .set(stages::removed.eq(true))
            .execute(conn)?;
    }
    diesel::update(pipelines::table.filter(pipelines::id.eq(id)))
        .set(pipelines::name.eq(name.trim()))
        .execute(conn)?;
    for (position, (stage, spec)) in stages_spec.iter().enumerate() {
        let stage_id = match stage {
            Some(stage) => {
                diesel::update(stages::table.filter(stages::id.eq(stage)))
                    .set((
                        stages::name.eq(spec.name.trim()),
                        stages::position.eq(position as i64),
                        stages::outcome.eq(&spec.outcome),
                    ))
                    .execute(conn)?;
                diesel::update(stage_rules::table.filter(stage_rules::stage_id.eq(stage)))
                    .set(stage_rules::removed.eq(true))
                    .execute(conn)?;
                *stage
            }
            None => diesel::insert_into(stages::table)
                .values((
                    stages::tenant_id.eq(tenant.0),
                    stages::pipeline_id.eq(id),
                    stages::name.eq(spec.name.trim()),
                    stages::position.eq(position as i64),
                    stages::outcome.eq(&spec.outcome),
                ))
                .returning(stages::id)
                .get_result::<i64>(conn)?,
        };
        write_rules(conn, tenant, stage_id, &spec.rules)?;
    }
    get_pipeline(conn, tenant, id)
}

pub fn get_pipeline(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
) -> Result<Pipeline, PipelineError> {
    let (name, created_at): (String, i64) = pipelines::table
        .filter(pipelines::tenant_id.eq(tenant.0))
        .filter(pipelines::id.eq(id))
        .select((pipelines::name, pipelines::created_at))
        .first(conn)
        .optional()?
        .ok_or_else(|| PipelineError::NotFound(format!("pipeline {id}")))?;
    let rows: Vec<(i64, String, i64, Option<String>)> = stages::table
        .filter(stages::pipeline_id.eq(id))
        .filter(stages::removed.eq(false))
        .order(stages::position.asc())
        .select((stages::id, stages::name, stages::position, stages::outcome))
        .load(conn)?;
    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
    let rules: Vec<(i64, i64, String)> = stage_rules::table
        .filter(stage_rules::stage_id.eq_any(&ids))
        .filter(stage_rules::removed.eq(false))
        .order(stage_rules::id.asc())
        .select((stage_rules::id, stage_rules::stage_id, stage_rules::config))
        .load(conn)?;
    let mut stages_out = Vec::with_capacity(rows.len());
    for (stage_id, name, position, outcome) in rows {
        let mut stage_rules_out = Vec::new();
        for (rule, held_by, config) in &rules {
            if *held_by == stage_id {
                let action = serde_json::from_str(config).map_err(|error| {
                    anyhow::anyhow!("rule {rule} is stored unreadably: {error}")
                })?;
                stage_rules_out.push((*rule, action));
            }
        }
        stages_out.push(Stage {
            id: stage_id,
            name,
            position,
            outcome,
            rules: stage_rules_out,
        });
    }
    Ok(Pipeline {
        id,
        name,
        stages: stages_out,
        created_at: Timestamp::from_micros(created_at),
    })
}

pub fn list_pipelines(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Vec<Pipeline>, PipelineError> {
    let ids: Vec<i64> = pipelines::table
        .filter(pipelines::tenant_id.eq(tenant.0))
        .order(pipelines::id.asc())
        .select(pipelines::id)
        .load(conn)?;
    ids.into_iter()
        .map(|id| get_pipeline(conn, tenant, id))
        .collect()
}

/// A stored deal.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = deals)]
pub struct Deal {
    pub id: i64,
    pub tenant_id: i64,
    pub pipeline_id: i64,
    pub stage_id: i64,
    pub position: i64,
    pub title: String,
    pub value_minor: i64,
    pub currency: String,
    pub owner: Option<String>,
    pub lead_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A deal's fields as given.
#[derive(Clone, Debug)]
pub struct DealFields {
    pub title: String,
    pub value: Money,
    pub owner: Option<String>,
    pub lead: Option<i64>,
}

fn check_fields(
    conn: &mut DbConnection,
    tenant: TenantId,
    fields: &DealFields,
) -> Result<(), PipelineError> {
    let title = fields.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(invalid("title: 1 to 200 characters"));
    }
    if fields.value.minor < 0 {
        return Err(invalid("value: not below zero"));
    }
    if fields
        .owner
        .as_ref()
        .is_some_and(|owner| owner.chars().count() > 200)
    {
        return Err(invalid("owner: at most 200 characters"));
    }
    if let Some(lead) = fields.lead {
        leads::get(conn, tenant, lead)
            .map_err(|_| invalid(format!("lead: lead {lead} not found")))?;
    }
    Ok(())
}

pub fn get_deal(conn: &mut DbConnection, tenant: TenantId, id: i64) -> Result<Deal, PipelineError> {
    deals::table
        .filter(deals::tenant_id.eq(tenant.0))
        .filter(deals::id.eq(id))
        .select(Deal::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| PipelineError::NotFound(format!("deal {id}")))
}

/// Orders two hosts' changes to one pipeline's columns (SQLite runs one
/// write transaction at a time).
fn lock_pipeline(conn: &mut DbConnection, pipeline: i64) -> Result<(), DieselError> {
    if let DbConnection::Postgres(pg) = conn {
        pipelines::table
            .find(pipeline)
            .select(pipelines::id)
            .for_update()
            .first::<i64>(pg)
            .optional()?;
    }
    Ok(())
}

/// Puts `deal` at `position` in `stage`'s column (clamped to its length),
/// renumbering the column 0, 1, 2...
fn place(
    conn: &mut DbConnection,
    stage: i64,
    deal: Option<i64>,
    position: i64,
) -> Result<i64, PipelineError> {
    let mut column: Vec<i64> = deals::table
        .filter(deals::stage_id.eq(stage))
        .order((deals::position.asc(), deals::id.asc()))
        .select(deals::id)
        .load(conn)?;
    column.retain(|held| Some(*held) != deal);
    if deal.is_some() && column.len() as i64 >= DEALS_PER_STAGE_MAX {
        return Err(invalid(format!(
            "a stage holds at most {DEALS_PER_STAGE_MAX} deals"
        )));
    }
    let at = position.clamp(0, column.len() as i64);
    if let Some(deal) = deal {
        column.insert(at as usize, deal);
    }
    for (index, held) in column.iter().enumerate() {
        diesel::update(deals::table.filter(deals::id.eq(held)))
            .filter(
                deals::position
                    .ne(index as i64)
                    .or(deals::stage_id.ne(stage)),
            )
            .set((deals::position.eq(index as i64), deals::stage_id.eq(stage)))
            .execute(conn)?;
    }
    Ok(at)
}

/// What a move (or a creation) did.
#[derive(Clone, Debug)]
pub struct Moved {
    pub deal: Deal,
    /// The stage change, if the stage changed.
    pub move_id: Option<i64>,
    /// The rules it fired.
    pub firings: Vec<Firing>,
}

/// One rule fired by one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    pub id: i64,
    pub rule: i64,
    pub action: &'static str,
    pub status: String,
    pub detail: Option<String>,
}

fn stage_of(
    conn: &mut DbConnection,
    tenant: TenantId,
    pipeline: i64,
    stage: i64,
) -> Result<Stage, PipelineError> {
    get_pipeline(conn, tenant, pipeline)?
        .stages
        .into_iter()
        .find(|held| held.id == stage)
        .ok_or_else(|| {
            invalid(format!(
                "stage: stage {stage} is not in pipeline {pipeline}"
            ))
        })
}

/// Creates a deal at the top of `stage` (the pipeline's first unless
/// given); entering it fires the stage's rules. Run in a write
/// transaction.
pub fn create_deal(
    conn: &mut DbConnection,
    tenant: TenantId,
    pipeline: i64,
    stage: Option<i64>,
    fields: &DealFields,
    now: Timestamp,
) -> Result<Moved, PipelineError> {
    // Lock first: an edit of the pipeline at once cannot then remove the
    // stage between our reading it and the deal landing in it.
    let found = get_pipeline(conn, tenant, pipeline)?;
    lock_pipeline(conn, found.id)?;
    let stage = match stage {
        Some(stage) => stage_of(conn, tenant, pipeline, stage)?,
        None => get_pipeline(conn, tenant, pipeline)?.stages[0].clone(),
    };
    check_fields(conn, tenant, fields)?;
    let id = diesel::insert_into(deals::table)
        .values((
            deals::tenant_id.eq(tenant.0),
            deals::pipeline_id.eq(pipeline),
            deals::stage_id.eq(stage.id),
            deals::position.eq(-1),
            deals::title.eq(fields.title.trim()),
            deals::value_minor.eq(fields.value.minor),
            deals::currency.eq(fields.value.currency.code()),
            deals::owner.eq(&fields.owner),
            deals::lead_id.eq(fields.lead),
            deals::created_at.eq(now.micros()),
            deals::updated_at.eq(now.micros()),
        ))
        .returning(deals::id)
        .get_result::<i64>(conn)?;
    place(conn, stage.id, Some(id), 0)?;
    entered(conn, tenant, id, None, &stage, now)
}

/// Changes a deal's title, value, owner or lead.
pub fn update_deal(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    fields: &DealFields,
    now: Timestamp,
) -> Result<Deal, PipelineError> {
    get_deal(conn, tenant, id)?;
    check_fields(conn, tenant, fields)?;
    diesel::update(deals::table.filter(deals::id.eq(id)))
        .set((
            deals::title.eq(fields.title.trim()),
            deals::value_minor.eq(fields.value.minor),
            deals::currency.eq(fields.value.currency.code()),
            deals::owner.eq(&fields.owner),
            deals::lead_id.eq(fields.lead),
            deals::updated_at.eq(now.micros()),
        ))
        .execute(conn)?;
    get_deal(conn, tenant, id)
}

/// Moves a deal to `position` in `stage`'s column, as a drag and drop
/// sends. A change of stage is recorded and fires the new stage's rules;
/// a move within its stage only reorders. Run in a write transaction.
pub fn move_deal(
    conn: &mut DbConnection,
    tenant: TenantId,
    id: i64,
    stage: i64,
    position: i64,
    now: Timestamp,
) -> Result<Moved, PipelineError> {
    // Lock first, then read where the deal is: two moves of one deal at
    // once (a double drop) then see each other, and the second finds the
    // deal already in its stage.
    let pipeline = get_deal(conn, tenant, id)?.pipeline_id;
    lock_pipeline(conn, pipeline)?;
    let deal = get_deal(conn, tenant, id)?;
    let target = stage_of(conn, tenant, deal.pipeline_id, stage)?;
    let from = deal.stage_id;
    place(conn, target.id, Some(id), position)?;
    if from == target.id {
        return Ok(Moved {
            deal: get_deal(conn, tenant, id)?,
            move_id: None,
            firings: Vec::new(),
        });
    }
    place(conn, from, None, 0)?;
    diesel::update(deals::table.filter(deals::id.eq(id)))
        .set(deals::updated_at.eq(now.micros()))
        .execute(conn)?;
    entered(conn, tenant, id, Some(from), &target, now)
}

/// Records that a deal entered `stage` and fires its rules: tasks and
/// enrollments now, webhooks left pending for [`fire_pending`].
fn entered(
    conn: &mut DbConnection,
    tenant: TenantId,
    deal_id: i64,
    from: Option<i64>,
    stage: &Stage,
    now: Timestamp,
) -> Result<Moved, PipelineError> {
    let move_id = diesel::insert_into(deal_moves::table)
        .values((
            deal_moves::tenant_id.eq(tenant.0),
            deal_moves::deal_id.eq(deal_id),
            deal_moves::from_stage_id.eq(from),
            deal_moves::to_stage_id.eq(stage.id),
            deal_moves::moved_at.eq(now.micros()),
        ))
        .returning(deal_moves::id)
        .get_result::<i64>(conn)?;
    let deal = get_deal(conn, tenant, deal_id)?;
    if let (Some(outcome), Some(lead)) = (&stage.outcome, deal.lead_id) {
        runner::stop_lead(conn, tenant, lead, &format!("deal_{outcome}"), now)?;
    }
    let mut firings = Vec::with_capacity(stage.rules.len());
    for (rule, action) in &stage.rules {
        let (status, detail) = match action {
            Action::CallWebhook { .. } => ("pending".to_owned(), None),
            Action::StartSequence { sequence } => {
                start_sequence(conn, tenant, &deal, *sequence, now)?
            }
            Action::CreateTask { title, task } => {
                create_task(conn, tenant, &deal, stage, title, task, now)?
            }
        };
        let id = diesel::insert_into(rule_firings::table)
            .values((
                rule_firings::tenant_id.eq(tenant.0),
                rule_firings::rule_id.eq(rule),
                rule_firings::move_id.eq(move_id),
                rule_firings::status.eq(&status),
                rule_firings::detail.eq(&detail),
                rule_firings::fired_at.eq(now.micros()),
            ))
            .returning(rule_firings::id)
            .get_result::<i64>(conn)?;
        firings.push(Firing {
            id,
            rule: *rule,
            action: action.name(),
            status,
            detail,
        });
    }
    Ok(Moved {
        deal,
        move_id: Some(move_id),
        firings,
    })
}

fn start_sequence(
    conn: &mut DbConnection,
    tenant: TenantId,
    deal: &Deal,
    sequence: i64,
    now: Timestamp,
) -> Result<(String, Option<String>), PipelineError> {
    let Some(lead) = deal.lead_id else {
        return Ok((
            "failed".into(),
            Some("the deal has no lead to enroll".into()),
        ));
    };
    let sequence = match sequences::get(conn, tenant, sequence) {
        Ok(sequence) => sequence,
        Err(error) => return Ok(("failed".into(), Some(error.to_string()))),
    };
    let outcome = sequences::enroll_one(conn, tenant, &sequence, lead, now)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(match outcome {
        Enrolled::Enrolled(enrollment) => ("done".into(), Some(format!("enrollment {enrollment}"))),
        Enrolled::Already(enrollment) => (
            "done".into(),
            Some(format!("already enrolled (enrollment {enrollment})")),
        ),
        Enrolled::DoNotContact => ("failed".into(), Some("the lead is do-not-contact".into())),
        Enrolled::NotFound => ("failed".into(), Some(format!("lead {lead} not found"))),
    })
}

fn create_task(
    conn: &mut DbConnection,
    tenant: TenantId,
    deal: &Deal,
    stage: &Stage,
    title: &str,
    kind: &str,
    now: Timestamp,
) -> Result<(String, Option<String>), PipelineError> {
    let lead = match deal.lead_id {
        Some(lead) => {
            Some(leads::get(conn, tenant, lead).map_err(|error| anyhow::anyhow!("{error}"))?)
        }
        None => None,
    };
    let context = Context {
        lead: lead
            .as_ref()
            .map(|lead| lead.fields.clone())
            .unwrap_or_default(),
        ..Context::default()
    };
    let title = match templates::render(title, false, &context) {
        Ok(title) => title,
        Err(reason) => return Ok(("failed".into(), Some(format!("the title: {reason}")))),
    };
    let task = NewTask {
        title,
        kind: kind.to_owned(),
        lead: deal.lead_id,
        step_run: None,
        deal: Some(deal.id),
        due_at: None,
        notes: Some(format!("{} entered {}", deal.title, stage.name)),
    };
    let created = tasks::create(conn, tenant, &task, now).map_err(|error| match error {
        tasks::TaskError::TooMany => PipelineError::TooMany("1,000,000 open tasks"),
        error => PipelineError::Other(anyhow::anyhow!("{error}")),
    })?;
    Ok(("done".into(), Some(format!("task {}", created.id))))
}

/// Calls the webhooks of firings still pending (or whose host died while
/// calling), each through the metered path with an idempotency key of its
/// own; `only` limits it to some firings (those a request just made).
/// Returns how many were called.
pub fn fire_pending(
    database: &Database,
    meter: &Meter,
    clock: &dyn Clock,
    only: Option<&[i64]>,
) -> Result<usize, PipelineError> {
    let now = clock.now();
    let mut conn = database.get()?;
    let mut query = rule_firings::table
        .inner_join(stage_rules::table.on(stage_rules::id.eq(rule_firings::rule_id)))
        .inner_join(deal_moves::table.on(deal_moves::id.eq(rule_firings::move_id)))
        .filter(
            rule_firings::status.eq("pending").or(rule_firings::status
                .eq("firing")
                .and(rule_firings::lease_until.lt(now.micros()))),
        )
        .order(rule_firings::id.asc())
        .limit(FIRINGS_PER_SWEEP_MAX)
        .select((
            rule_firings::id,
            rule_firings::tenant_id,
            rule_firings::rule_id,
            rule_firings::move_id,
            stage_rules::config,
            deal_moves::deal_id,
            deal_moves::to_stage_id,
        ))
        .into_boxed();
    if let Some(only) = only {
        query = query.filter(rule_firings::id.eq_any(only.to_vec()));
    }
    let due: Vec<(i64, i64, i64, i64, String, i64, i64)> = query.load(&mut conn)?;
    let mut called = 0;
    for (firing, tenant, rule, move_id, config, deal, stage) in due {
        // Each firing's lease from now: the calls before it took time.
        let now = clock.now();
        let claimed = diesel::update(rule_firings::table.filter(rule_firings::id.eq(firing)))
            .filter(
                rule_firings::status.eq("pending").or(rule_firings::status
                    .eq("firing")
                    .and(rule_firings::lease_until.lt(now.micros()))),
            )
            .set((
                rule_firings::status.eq("firing"),
                rule_firings::lease_until.eq(now.micros() + FIRING_LEASE_MICROS),
            ))
            .execute(&mut conn)?;
        if claimed == 0 {
            continue;
        }
        let tenant = TenantId(tenant);
        let Ok(Action::CallWebhook { plugin }) = serde_json::from_str::<Action>(&config) else {
            continue;
        };
        let (status, detail) = call_webhook(
            &mut conn, meter, tenant, &plugin, rule, move_id, deal, stage,
        )?;
        // A failure that may pass is tried again later: the firing stays
        // unfinished, with a lease that runs out then.
        let (status, lease_until) = match status {
            "retry" => ("firing", Some(clock.now().micros() + RETRY_AFTER_MICROS)),
            status => (status, None),
        };
        diesel::update(rule_firings::table.filter(rule_firings::id.eq(firing)))
            .set((
                rule_firings::status.eq(status),
                rule_firings::detail.eq(detail),
                rule_firings::lease_until.eq(lease_until),
            ))
            .execute(&mut conn)?;
        called += 1;
    }
    Ok(called)
}

#[allow(clippy::too_many_arguments)]
fn call_webhook(
    conn: &mut DbConnection,
    meter: &Meter,
    tenant: TenantId,
    plugin: &str,
    rule: i64,
    move_id: i64,
    deal_id: i64,
    stage_id: i64,
) -> Result<(&'static str, String), PipelineError> {
    let deal = get_deal(conn, tenant, deal_id)?;
    let stage: String = stages::table
        .find(stage_id)
        .select(stages::name)
        .first(conn)?;
    let payload = serde_json::json!({
        "event": "deal.stage_changed",
        "deal": {
            "id": deal.id,
            "title": deal.title,
            "value_minor": deal.value_minor,
            "currency": deal.currency,
            "owner": deal.owner,
            "lead": deal.lead_id,
            "pipeline": deal.pipeline_id,
        },
        "stage": {"id": stage_id, "name": stage},
        "move": move_id,
    });
    let key = format!("rule-{rule}-move-{move_id}");
    let message = Message {
        recipient: format!("deal:{deal_id}"),
        recipient_name: Some(deal.title.clone()),
        sender: Sender {
            address: "pipeline".into(),
            name: None,
        },
        subject: Some(format!("{} moved to {stage}", deal.title)),
        text_body: payload.to_string(),
        html_body: None,
        headers: vec![Field {
            name: "x-tollgate-event".into(),
            value: "deal.stage_changed".into(),
        }],
        references: Vec::new(),
        idempotency_key: key.clone(),
    };
    let request = Request {
        tenant,
        plugin: plugin.to_owned(),
        call: Call::Send(message),
        idempotency_key: Some(key),
    };
    Ok(match meter.invoke(request) {
        Ok(metered) => match metered.result {
            Ok(Reply::Sent(sent)) => ("done", format!("delivery {}", sent.delivery_id)),
            Ok(_) => ("done", "sent".into()),
            Err(error) => {
                let retry = matches!(&error, CallError::Plugin { error, .. } if error.retryable)
                    || matches!(error, CallError::Timeout { .. } | CallError::Host { .. });
                (if retry { "retry" } else { "failed" }, error.to_string())
            }
        },
        Err(
            error @ (MeterError::InsufficientCredits { .. }
            | MeterError::ResellerBalanceExhausted { .. }
            | MeterError::Suspended
            | MeterError::Database(_)
            | MeterError::Other(_)),
        ) => ("retry", format!("not called yet: {error}")),
        Err(error) => ("failed", error.to_string()),
    })
}

/// One change of a deal's stage, and the rules it fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    /// None when the deal was created in the stage.
    pub from: Option<i64>,
    pub to: i64,
    pub at: Timestamp,
    pub firings: Vec<Firing>,
}

/// The changes of a deal's stage, oldest first, with the rules each fired.
pub fn history(
    conn: &mut DbConnection,
    tenant: TenantId,
    deal: i64,
) -> Result<Vec<Change>, PipelineError> {
    get_deal(conn, tenant, deal)?;
    let mut moves: Vec<(i64, Option<i64>, i64, i64)> = deal_moves::table
        .filter(deal_moves::deal_id.eq(deal))
        .order(deal_moves::id.desc())
        .limit(HISTORY_MAX)
        .select((
            deal_moves::id,
            deal_moves::from_stage_id,
            deal_moves::to_stage_id,
            deal_moves::moved_at,
        ))
        .load(conn)?;
    moves.reverse();
    let ids: Vec<i64> = moves.iter().map(|entry| entry.0).collect();
    let firings: Vec<(i64, i64, i64, String, String, Option<String>)> = rule_firings::table
        .inner_join(stage_rules::table.on(stage_rules::id.eq(rule_firings::rule_id)))
        .filter(rule_firings::move_id.eq_any(&ids))
        .order(rule_firings::id.asc())
        .select((
            rule_firings::move_id,
            rule_firings::id,
            rule_firings::rule_id,
            stage_rules::action,
            rule_firings::status,
            rule_firings::detail,
        ))
        .load(conn)?;
    let mut out = Vec::with_capacity(moves.len());
    for (id, from, to, at) in moves {
        let fired = firings
            .iter()
            .filter(|firing| firing.0 == id)
            .map(|(_, id, rule, action, status, detail)| Firing {
                id: *id,
                rule: *rule,
                action: match action.as_str() {
                    "start_sequence" => "start_sequence",
                    "call_webhook" => "call_webhook",
                    _ => "create_task",
                },
                status: status.clone(),
                detail: detail.clone(),
            })
            .collect();
        out.push(Change {
            id,
            from,
            to,
            at: Timestamp::from_micros(at),
            firings: fired,
        });
    }
    Ok(out)
}

/// The deals of a pipeline (or of one stage), by stage and position.
pub fn deals_of(
    conn: &mut DbConnection,
    tenant: TenantId,
    pipeline: Option<i64>,
    lead: Option<i64>,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Deal>, Option<i64>), PipelineError> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut query = deals::table
        .filter(deals::tenant_id.eq(tenant.0))
        .order(deals::id.asc())
        .limit(limit + 1)
        .select(Deal::as_select())
        .into_boxed();
    if let Some(pipeline) = pipeline {
        query = query.filter(deals::pipeline_id.eq(pipeline));
    }
    if let Some(lead) = lead {
        query = query.filter(deals::lead_id.eq(lead));
    }
    if let Some(after) = after {
        query = query.filter(deals::id.gt(after));
    }
    let mut rows: Vec<Deal> = query.load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match more {
        true => rows.last().map(|deal| deal.id),
        false => None,
    };
    Ok((rows, next))
}

/// A board: each stage's deals in order, up to [`PAGE_LIMIT_MAX`] a stage.
pub fn board(
    conn: &mut DbConnection,
    tenant: TenantId,
    pipeline: i64,
) -> Result<(Pipeline, Vec<Vec<Deal>>), PipelineError> {
    let found = get_pipeline(conn, tenant, pipeline)?;
    let mut columns = Vec::with_capacity(found.stages.len());
    for stage in &found.stages {
        let column: Vec<Deal> = deals::table
            .filter(deals::stage_id.eq(stage.id))
            .order((deals::position.asc(), deals::id.asc()))
            .limit(PAGE_LIMIT_MAX)
            .select(Deal::as_select())
            .load(conn)?;
        columns.push(column);
    }
    Ok((found, columns))
}

/// Money from a decimal string and a currency code, for deal values.
pub fn money(value: &str, currency: &str) -> Result<Money, PipelineError> {
    let currency =
        Currency::parse(currency).map_err(|error| invalid(format!("currency: {error}")))?;
    let decimal: rust_decimal::Decimal = value.trim().parse().map_err(|_| {
        invalid(format!(
            "value: {value:?} is not a decimal amount such as 1200.00"
        ))
    })?;
    Money::from_decimal(decimal, currency).map_err(|error| invalid(format!("value: {error}")))
}

/// Runs `work` in a write transaction.
pub fn in_transaction<T>(
    database: &Database,
    work: impl FnOnce(&mut DbConnection) -> Result<T, PipelineError>,
) -> Result<T, PipelineError> {
    let mut conn = database.get()?;
    db::write_transaction(&mut conn, work)
}
