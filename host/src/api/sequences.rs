//! The engagement endpoints besides leads: mailboxes (sending accounts and
//! their caps), sequences with their steps and results per step and
//! variant, enrollments, and tasks.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::admin::json_body;
use super::error::ApiError;
use super::leads::{blocking, lead_error};
use super::v1::{Caller, id_param, limit_param, meter_error, number_param, params, read_body};
use crate::db::{self, DbConnection};
use crate::engagement::runner::Links;
use crate::engagement::schedule::Window;
use crate::engagement::sequences::{
    self, Definition, Enrolled, Enrollment, Mailbox, NewMailbox, Sequence, SequenceError, StepSpec,
    variant_name,
};
use crate::engagement::tasks::{self, NewTask, Task, TaskError};
use crate::runtime::PluginKind;
use crate::units::{Clock, SystemClock, Timestamp};

/// What the engagement endpoints need beyond the rest of the API.
#[derive(Clone, Debug)]
pub struct Engagement {
    /// Where this platform is reached from outside, for the links it puts
    /// in messages.
    pub public_url: String,
    /// The clock enrollments and tasks are dated by.
    pub clock: Arc<dyn Clock>,
}

impl Default for Engagement {
    fn default() -> Engagement {
        Engagement {
            public_url: "http://127.0.0.1:8080".into(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl AppState {
    pub(super) fn links(&self) -> Links {
        Links {
            public_url: self.engagement.public_url.clone(),
            secrets: self.secrets.clone(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.engagement.clock.now()
    }
}

fn sequence_error(error: SequenceError) -> ApiError {
    match error {
        SequenceError::NotFound(_)
        | SequenceError::MailboxNotFound(_)
        | SequenceError::EnrollmentNotFound(_) => ApiError::not_found(error.to_string()),
        SequenceError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sequence",
            error.to_string(),
        ),
        SequenceError::MailboxExists { id, .. } => {
            ApiError::new(StatusCode::CONFLICT, "mailbox_exists", error.to_string())
                .with("mailbox", id)
        }
        SequenceError::TooMany(_) => {
            ApiError::new(StatusCode::CONFLICT, "limit_reached", error.to_string())
        }
        SequenceError::Lead(error) => lead_error(error),
        SequenceError::Task(error) => task_error(error),
        SequenceError::Database(_) | SequenceError::Other(_) => ApiError::internal(error),
    }
}

fn task_error(error: TaskError) -> ApiError {
    match error {
        TaskError::NotFound(_) => ApiError::not_found(error.to_string()),
        TaskError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
            error.to_string(),
        ),
        TaskError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "limit_reached", error.to_string())
        }
        TaskError::Database(_) | TaskError::Other(_) => ApiError::internal(error),
    }
}

/// Runs `work` in a write transaction (or, with `write` false, on a plain
/// connection) off the async workers.
async fn with_conn<T: Send + 'static>(
    state: &AppState,
    write: bool,
    work: impl FnOnce(&mut DbConnection) -> Result<T, SequenceError> + Send + 'static,
) -> Result<T, ApiError> {
    let database = state.database.clone();
    blocking(
        move || {
            let mut conn = database.get()?;
            match write {
                true => db::write_transaction(&mut conn, work),
                false => work(&mut conn),
            }
        },
        sequence_error,
    )
    .await
}

fn mailbox_json(mailbox: &Mailbox) -> Value {
    json!({
        "id": mailbox.id,
        "plugin": mailbox.plugin,
        "address": mailbox.address,
        "name": mailbox.name,
        "daily_cap": mailbox.daily_cap,
        "hourly_cap": mailbox.hourly_cap,
    })
}

/// `GET /mailboxes`
pub(super) async fn list_mailboxes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let list = with_conn(&state, false, move |conn| {
        sequences::list_mailboxes(conn, tenant)
    })
    .await?;
    Ok(Json(
        json!({ "mailboxes": list.iter().map(mailbox_json).collect::<Vec<_>>() }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxBody {
    plugin: String,
    address: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    daily_cap: Option<i64>,
    #[serde(default)]
    hourly_cap: Option<i64>,
}

/// `POST /mailboxes` (a tenant admin): a sending account of a channel
/// plugin, with optional caps per rolling hour and 24 hours.
pub(super) async fn create_mailbox(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: MailboxBody = json_body(&bytes)?;
    let meter = state.meter.clone();
    let plugin = body.plugin.clone();
    let kind = tokio::task::spawn_blocking(move || meter.plugin(&plugin).map(|active| active.kind))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| meter_error(&body.plugin, error))?;
    if kind != PluginKind::Channel {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sequence",
            format!(
                "plugin {} is a {kind} plugin; a mailbox sends through a channel plugin",
                body.plugin
            ),
        ));
    }
    let mailbox = NewMailbox {
        plugin: body.plugin,
        address: body.address,
        name: body.name,
        daily_cap: body.daily_cap,
        hourly_cap: body.hourly_cap,
    };
    let now = state.now();
    let created = with_conn(&state, true, move |conn| {
        sequences::create_mailbox(conn, tenant, &mailbox, now)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "mailbox": mailbox_json(&created) })),
    )
        .into_response())
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minute_text(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn sequence_json(sequence: &Sequence) -> Value {
    let days: Vec<&str> = DAY_NAMES
        .iter()
        .enumerate()
        .filter(|(index, _)| sequence.window.days & (1 << index) != 0)
        .map(|(_, name)| *name)
        .collect();
    json!({
        "id": sequence.id,
        "name": sequence.name,
        "status": if sequence.active { "active" } else { "paused" },
        "version": sequence.version,
        "time_zone": sequence.time_zone.name(),
        "window": {
            "start": minute_text(sequence.window.start_minute),
            "end": minute_text(sequence.window.end_minute),
            "days": days,
        },
        "tracking": sequence.tracking,
        "steps": sequence.steps.iter().map(|step| {
            let mut value = serde_json::to_value(&step.spec).expect("steps serialise");
            value["id"] = json!(step.id);
            value["number"] = json!(step.position + 1);
            value
        }).collect::<Vec<_>>(),
        "created_at": sequence.created_at.to_string(),
        "updated_at": sequence.updated_at.to_string(),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    start: String,
    end: String,
    days: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceBody {
    name: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    window: Option<WindowBody>,
    #[serde(default)]
    tracking: Option<bool>,
    #[serde(default)]
    active: Option<bool>,
    steps: Vec<StepSpec>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_sequence",
        message,
    )
}

fn parse_minute(text: &str, name: &str) -> Result<u32, ApiError> {
    let parsed = text.split_once(':').and_then(|(hours, minutes)| {
        let (hours, minutes) = (hours.parse::<u32>().ok()?, minutes.parse::<u32>().ok()?);
        (minutes < 60 && (hours < 24 || (hours == 24 && minutes == 0)))
            .then_some(hours * 60 + minutes)
    });
    parsed.ok_or_else(|| {
        invalid(format!(
            "window.{name}: {text:?} is not a time such as 09:00"
        ))
    })
}

impl SequenceBody {
    fn definition(self) -> Result<(Definition, Option<bool>), ApiError> {
        let window = match self.window {
            None => Window::OFFICE_HOURS,
            Some(window) => {
                let mut days = 0_u8;
                for day in &window.days {
                    let index = DAY_NAMES
                        .iter()
                        .position(|name| name.eq_ignore_ascii_case(day))
                        .ok_or_else(|| {
                            invalid(format!(
                                "window.days: {day:?} is not one of {}",
                                DAY_NAMES.join(", ")
                            ))
                        })?;
                    days |= 1 << index;
                }
                Window {
                    start_minute: parse_minute(&window.start, "start")?,
                    end_minute: parse_minute(&window.end, "end")?,
                    days,
                }
            }
        };
        let definition = Definition {
            name: self.name,
            time_zone: self.time_zone.unwrap_or_else(|| "UTC".into()),
            window,
            tracking: self.tracking.unwrap_or(true),
            steps: self.steps,
        };
        Ok((definition, self.active))
    }
}

/// `GET /sequences`
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let list = with_conn(&state, false, move |conn| sequences::list(conn, tenant)).await?;
    let list: Vec<Value> = list
        .iter()
        .map(|sequence| {
            let mut value = sequence_json(sequence);
            if let Some(object) = value.as_object_mut() {
                object.remove("steps");
            }
            value
        })
        .collect();
    Ok(Json(json!({ "sequences": list })))
}

/// `POST /sequences` (a tenant admin): creates a sequence, active.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let (definition, active) = json_body::<SequenceBody>(&bytes)?.definition()?;
    let now = state.now();
    let sequence = with_conn(&state, true, move |conn| {
        sequences::validate(conn, tenant, &definition)?;
        let created = sequences::create(conn, tenant, &definition, now)?;
        match active {
            Some(false) => sequences::set_active(conn, tenant, created.id, false, now),
            _ => Ok(created),
        }
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "sequence": sequence_json(&sequence) })),
    )
        .into_response())
}

/// `PUT /sequences/{id}` (a tenant admin): replaces the definition; new
/// steps make a new version, and enrollments under way keep theirs.
/// `"active": false` pauses it.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let id = id_param(&id, "sequence")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let (definition, active) = json_body::<SequenceBody>(&bytes)?.definition()?;
    let now = state.now();
    let sequence = with_conn(&state, true, move |conn| {
        sequences::get(conn, tenant, id)?;
        sequences::validate(conn, tenant, &definition)?;
        let updated = sequences::update(conn, tenant, id, &definition, now)?;
        match active {
            Some(active) => sequences::set_active(conn, tenant, id, active, now),
            None => Ok(updated),
        }
    })
    .await?;
    Ok(Json(json!({ "sequence": sequence_json(&sequence) })))
}

/// `GET /sequences/{id}`: the sequence, its current steps, and results
/// per step and variant over all its versions.
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "sequence")?;
    let (sequence, results) = with_conn(&state, false, move |conn| {
        Ok((
            sequences::get(conn, tenant, id)?,
            sequences::results(conn, tenant, id)?,
        ))
    })
    .await?;
    let results: Vec<Value> = results
        .iter()
        .map(|result| {
            json!({
                "step": result.step,
                "variant": result.variant.map(|index| variant_name(index as usize).to_string()),
                "runs": result.by_status,
                "opened": result.opened,
                "clicked": result.clicked,
                "replied": result.replied,
            })
        })
        .collect();
    let mut answer = json!({ "sequence": sequence_json(&sequence) });
    answer["results"] = json!(results);
    Ok(Json(answer))
}

pub(super) fn enrollment_json(enrollment: &Enrollment) -> Value {
    json!({
        "id": enrollment.id,
        "sequence": enrollment.sequence,
        "version": enrollment.version,
        "lead": enrollment.lead,
        "status": enrollment.status,
        "reason": enrollment.reason,
        "next_step": enrollment.position + 1,
        "next_run_at": enrollment.next_run_at.map(|at| at.to_string()),
        "created_at": enrollment.created_at.to_string(),
        "updated_at": enrollment.updated_at.to_string(),
    })
}

/// `GET /sequences/{id}/enrollments?status=&limit=&cursor=`
pub(super) async fn list_enrollments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "sequence")?;
    params(&query, &["status", "limit", "cursor"])?;
    let limit = limit_param(&query, sequences::PAGE_LIMIT_MAX)?;
    let after = query
        .get("cursor")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this listing returned")
            })
        })
        .transpose()?;
    let status = query.get("status").cloned();
    if let Some(status) = &status
        && !["active", "completed", "stopped", "blocked"].contains(&status.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "status must be active, completed, stopped or blocked",
        ));
    }
    let (page, next) = with_conn(&state, false, move |conn| {
        sequences::enrollments_of(conn, tenant, id, status.as_deref(), after, limit)
    })
    .await?;
    Ok(Json(json!({
        "enrollments": page.iter().map(enrollment_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|id| id.to_string()),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    leads: Vec<i64>,
}

/// `DELETE /sequences/{id}/enrollments/{enrollment}`: stops it; no
/// further step of it runs.
pub(super) async fn stop_enrollment(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, enrollment)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "sequence")?;
    let enrollment = id_param(&enrollment, "enrollment")?;
    let now = state.now();
    let stopped = with_conn(&state, true, move |conn| {
        sequences::get(conn, tenant, id)?;
        sequences::stop(conn, tenant, id, enrollment, now)
    })
    .await?;
    Ok(Json(json!({ "enrollment": enrollment_json(&stopped) })))
}

/// `POST /sequences/{id}/enrollments` `{"leads": [1, 2]}`: enrolls each
/// lead, and says for each what happened.
pub(super) async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "sequence")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: EnrollBody = json_body(&bytes)?;
    let now = state.now();
    let outcomes = with_conn(&state, true, move |conn| {
        sequences::enroll(conn, tenant, id, &body.leads, now)
    })
    .await?;
    let results: Vec<Value> = outcomes
        .iter()
        .map(|(lead, outcome)| match outcome {
            Enrolled::Enrolled(enrollment) => {
                json!({"lead": lead, "result": "enrolled", "enrollment": enrollment})
            }
            Enrolled::Already(enrollment) => {
                json!({"lead": lead, "result": "already_enrolled", "enrollment": enrollment})
            }
            Enrolled::DoNotContact => json!({"lead": lead, "result": "do_not_contact"}),
            Enrolled::NotFound => json!({"lead": lead, "result": "not_found"}),
        })
        .collect();
    let enrolled = outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Enrolled::Enrolled(_)))
        .count();
    Ok(Json(json!({ "enrolled": enrolled, "results": results })))
}

pub(super) fn task_json(task: &Task) -> Value {
    let at = |micros: Option<i64>| micros.map(|micros| Timestamp::from_micros(micros).to_string());
    json!({
        "id": task.id,
        "title": task.title,
        "kind": task.kind,
        "lead": task.lead_id,
        "step_run": task.step_run_id,
        "deal": task.deal_id,
        "due_at": at(task.due_at),
        "status": task.status,
        "notes": task.notes,
        "created_at": Timestamp::from_micros(task.created_at).to_string(),
        "completed_at": at(task.completed_at),
    })
}

async fn with_tasks<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut DbConnection) -> Result<T, TaskError> + Send + 'static,
) -> Result<T, ApiError> {
    let database = state.database.clone();
    blocking(
        move || db::write_transaction(&mut *database.get()?, work),
        task_error,
    )
    .await
}

/// `GET /tasks?status=&lead=&limit=&cursor=`
pub(super) async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["status", "lead", "limit", "cursor"])?;
    let limit = limit_param(&query, tasks::PAGE_LIMIT_MAX)?;
    let filter = tasks::Filter {
        status: query.get("status").cloned(),
        lead: number_param(&query, "lead")?,
    };
    let after = number_param(&query, "cursor")?;
    let (page, next) = with_tasks(&state, move |conn| {
        tasks::list(conn, tenant, &filter, after, limit)
    })
    .await?;
    Ok(Json(json!({
        "tasks": page.iter().map(task_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|id| id.to_string()),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    title: String,
    #[serde(default = "todo")]
    kind: String,
    #[serde(default)]
    lead: Option<i64>,
    #[serde(default)]
    due_at: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

fn todo() -> String {
    "todo".into()
}

/// `POST /tasks`
pub(super) async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: TaskBody = json_body(&bytes)?;
    let due_at = body
        .due_at
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_task",
                    format!("due_at: {text:?} is not an RFC 3339 time"),
                )
            })
        })
        .transpose()?;
    let task = NewTask {
        title: body.title,
        kind: body.kind,
        lead: body.lead,
        step_run: None,
        deal: None,
        due_at,
        notes: body.notes,
    };
    task.validate().map_err(task_error)?;
    let now = state.now();
    let created = with_tasks(&state, move |conn| {
        if let Some(lead) = task.lead {
            crate::engagement::leads::get(conn, tenant, lead)
                .map_err(|_| TaskError::Invalid(format!("lead: lead {lead} not found")))?;
        }
        tasks::create(conn, tenant, &task, now)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "task": task_json(&created) })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskChange {
    status: String,
}

/// `PATCH /tasks/{id}` `{"status": "done"}`
pub(super) async fn update_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "task")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let change: TaskChange = json_body(&bytes)?;
    let now = state.now();
    let task = with_tasks(&state, move |conn| {
        tasks::set_status(conn, tenant, id, &change.status, now)
    })
    .await?;
    Ok(Json(json!({ "task": task_json(&task) })))
}
