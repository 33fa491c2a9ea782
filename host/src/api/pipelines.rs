//! The deal pipeline's endpoints: pipelines with their stages and rules
//! (and a pipeline as a board), deals, and moving a deal as a drag and
//! drop does (stage and position), which fires the new stage's rules once.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::admin::json_body;
use super::error::ApiError;
use super::idempotency;
use super::v1::{Caller, id_param, limit_param, number_param, params, read_body};
use crate::engagement::pipeline::{
    self, Action, Deal, DealFields, Firing, Moved, Pipeline, PipelineError, StageSpec,
};
use crate::units::Timestamp;

fn pipeline_error(error: PipelineError) -> ApiError {
    match error {
        PipelineError::NotFound(_) => ApiError::not_found(error.to_string()),
        PipelineError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_pipeline",
            error.to_string(),
        ),
        PipelineError::TooMany(_) => {
            ApiError::new(StatusCode::CONFLICT, "limit_reached", error.to_string())
        }
        PipelineError::Database(_) | PipelineError::Other(_) => ApiError::internal(error),
    }
}

async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PipelineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(pipeline_error)
}

fn pipeline_json(pipeline: &Pipeline) -> Value {
    json!({
        "id": pipeline.id,
        "name": pipeline.name,
        "stages": pipeline.stages.iter().map(|stage| json!({
            "id": stage.id,
            "name": stage.name,
            "position": stage.position,
            "outcome": stage.outcome,
            "rules": stage.rules.iter().map(|(id, action)| {
                let mut rule = serde_json::to_value(action).expect("rules serialise");
                rule["id"] = json!(id);
                rule
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "created_at": pipeline.created_at.to_string(),
    })
}

pub(super) fn deal_json(deal: &Deal) -> Value {
    let value = rust_decimal::Decimal::new(deal.value_minor, 2);
    json!({
        "id": deal.id,
        "pipeline": deal.pipeline_id,
        "stage": deal.stage_id,
        "position": deal.position,
        "title": deal.title,
        "value": value.to_string(),
        "currency": deal.currency,
        "owner": deal.owner,
        "lead": deal.lead_id,
        "created_at": Timestamp::from_micros(deal.created_at).to_string(),
        "updated_at": Timestamp::from_micros(deal.updated_at).to_string(),
    })
}

fn firing_json(firing: &Firing) -> Value {
    json!({
        "id": firing.id,
        "rule": firing.rule,
        "action": firing.action,
        "status": firing.status,
        "detail": firing.detail,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    /// One of the pipeline's stages, on an edit.
    #[serde(default)]
    id: Option<i64>,
    name: String,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    rules: Vec<Action>,
}

impl StageBody {
    fn spec(self) -> (Option<i64>, StageSpec) {
        let spec = StageSpec {
            name: self.name,
            outcome: self.outcome,
            rules: self.rules,
        };
        (self.id, spec)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineBody {
    name: String,
    stages: Vec<StageBody>,
}

/// `GET /pipelines`
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let database = state.database.clone();
    let list = run(move || pipeline::list_pipelines(&mut *database.get()?, tenant)).await?;
    Ok(Json(
        json!({ "pipelines": list.iter().map(pipeline_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /pipelines` (a tenant admin): a pipeline, its stages in order, and
/// each stage's rules.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: PipelineBody = json_body(&bytes)?;
    if body.stages.iter().any(|stage| stage.id.is_some()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_pipeline",
            "stages: a new pipeline's stages have no id yet",
        ));
    }
    let stages: Vec<StageSpec> = body
        .stages
        .into_iter()
        .map(|stage| stage.spec().1)
        .collect();
    let now = state.now();
    let database = state.database.clone();
    let created = run(move || {
        pipeline::in_transaction(&database, |conn| {
            pipeline::create_pipeline(conn, tenant, &body.name, &stages, now)
        })
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "pipeline": pipeline_json(&created) })),
    )
        .into_response())
}

/// `PUT /pipelines/{id}` (a tenant admin): renames it and replaces its
/// stages. A stage given with its `id` keeps its deals and takes the new
/// name, outcome, place and rules; one without an id is added; one left out
/// is removed if no deal is in it.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let id = id_param(&id, "pipeline")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: PipelineBody = json_body(&bytes)?;
    let stages: Vec<(Option<i64>, StageSpec)> =
        body.stages.into_iter().map(StageBody::spec).collect();
    let database = state.database.clone();
    let updated = run(move || {
        pipeline::in_transaction(&database, |conn| {
            pipeline::update_pipeline(conn, tenant, id, &body.name, &stages)
        })
    })
    .await?;
    Ok(Json(json!({ "pipeline": pipeline_json(&updated) })))
}

/// `GET /pipelines/{id}`: the pipeline as a board, each stage with its
/// deals in order.
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "pipeline")?;
    let database = state.database.clone();
    let (found, columns) = run(move || pipeline::board(&mut *database.get()?, tenant, id)).await?;
    let mut answer = pipeline_json(&found);
    if let Some(stages) = answer["stages"].as_array_mut() {
        for (stage, column) in stages.iter_mut().zip(&columns) {
            stage["deals"] = column.iter().map(deal_json).collect();
        }
    }
    Ok(Json(json!({ "pipeline": answer })))
}

/// `GET /deals?pipeline=&lead=&limit=&cursor=`
pub(super) async fn list_deals(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["pipeline", "lead", "limit", "cursor"])?;
    let limit = limit_param(&query, pipeline::PAGE_LIMIT_MAX)?;
    let (filter_pipeline, lead, after) = (
        number_param(&query, "pipeline")?,
        number_param(&query, "lead")?,
        number_param(&query, "cursor")?,
    );
    let database = state.database.clone();
    let (page, next) = run(move || {
        pipeline::deals_of(
            &mut *database.get()?,
            tenant,
            filter_pipeline,
            lead,
            after,
            limit,
        )
    })
    .await?;
    Ok(Json(json!({
        "deals": page.iter().map(deal_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|id| id.to_string()),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DealBody {
    #[serde(default)]
    pipeline: Option<i64>,
    #[serde(default)]
    stage: Option<i64>,
    title: String,
    #[serde(default = "zero")]
    value: String,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    lead: Option<i64>,
}

fn zero() -> String {
    "0".into()
}

fn usd() -> String {
    "USD".into()
}

impl DealBody {
    fn fields(&self) -> Result<DealFields, ApiError> {
        Ok(DealFields {
            title: self.title.clone(),
            value: pipeline::money(&self.value, &self.currency).map_err(pipeline_error)?,
            owner: self.owner.clone(),
            lead: self.lead,
        })
    }
}

fn moved_json(moved: &Moved) -> Value {
    json!({
        "deal": deal_json(&moved.deal),
        "move": moved.move_id,
        "fired": moved.firings.iter().map(firing_json).collect::<Vec<_>>(),
    })
}

/// Calls the webhooks a change left pending, then reads back how the
/// firings ended.
async fn fire(state: &AppState, mut moved: Moved) -> Result<Moved, ApiError> {
    let pending: Vec<i64> = moved
        .firings
        .iter()
        .filter(|firing| firing.status == "pending")
        .map(|firing| firing.id)
        .collect();
    if pending.is_empty() {
        return Ok(moved);
    }
    let (database, meter, clock) = (
        state.database.clone(),
        state.meter.clone(),
        state.engagement.clock.clone(),
    );
    let tenant = crate::ids::TenantId(moved.deal.tenant_id);
    let deal = moved.deal.id;
    let history = run(move || {
        pipeline::fire_pending(&database, &meter, clock.as_ref(), Some(&pending))?;
        pipeline::history(&mut *database.get()?, tenant, deal)
    })
    .await?;
    if let Some(change) = history
        .into_iter()
        .find(|change| Some(change.id) == moved.move_id)
    {
        moved.firings = change.firings;
    }
    Ok(moved)
}

/// `POST /deals`: a deal at the top of its stage (the pipeline's first
/// unless given); entering it fires the stage's rules.
pub(super) async fn create_deal(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: DealBody = json_body(&bytes)?;
    let Some(pipeline_id) = body.pipeline else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_pipeline",
            "pipeline: name the pipeline the deal is in",
        ));
    };
    let fields = body.fields()?;
    let now = state.now();
    let stage = body.stage;
    let work_state = state.clone();
    let work = async move {
        let database = work_state.database.clone();
        let moved = run(move || {
            pipeline::in_transaction(&database, |conn| {
                pipeline::create_deal(conn, tenant, pipeline_id, stage, &fields, now)
            })
        })
        .await?;
        let moved = fire(&work_state, moved).await?;
        Ok((StatusCode::CREATED, moved_json(&moved)))
    };
    Ok(idempotency::once(&state, tenant, "create deal", &headers, &bytes, work).await)
}

/// `GET /deals/{id}`: the deal, and each change of its stage with the
/// rules it fired.
pub(super) async fn get_deal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "deal")?;
    let database = state.database.clone();
    let (deal, history) = run(move || {
        let mut conn = database.get()?;
        Ok((
            pipeline::get_deal(&mut conn, tenant, id)?,
            pipeline::history(&mut conn, tenant, id)?,
        ))
    })
    .await?;
    let moves: Vec<Value> = history
        .iter()
        .map(|change| {
            json!({
                "id": change.id,
                "from_stage": change.from,
                "to_stage": change.to,
                "moved_at": change.at.to_string(),
                "fired": change.firings.iter().map(firing_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "deal": deal_json(&deal), "moves": moves })))
}

/// `PATCH /deals/{id}`: title, value, currency, owner, lead (each kept when
/// not given; `null` clears owner and lead).
pub(super) async fn update_deal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "deal")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let patch: serde_json::Map<String, Value> = json_body(&bytes)?;
    for name in patch.keys() {
        if !["title", "value", "currency", "owner", "lead"].contains(&name.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_input",
                format!(
                    "{name}: not a deal field that can be changed (move a deal with POST /deals/{{id}}/move)"
                ),
            ));
        }
    }
    let now = state.now();
    let database = state.database.clone();
    let deal = run(move || {
        pipeline::in_transaction(&database, |conn| {
            let deal = pipeline::get_deal(conn, tenant, id)?;
            let text = |name: &str| {
                patch
                    .get(name)
                    .map(|value| value.as_str().map(str::to_owned))
            };
            let invalid = |name: &str| PipelineError::Invalid(format!("{name}: expected a string"));
            let title = match text("title") {
                None => deal.title.clone(),
                Some(Some(title)) => title,
                Some(None) => return Err(invalid("title")),
            };
            let value = match patch.get("value") {
                None => rust_decimal::Decimal::new(deal.value_minor, 2).to_string(),
                Some(Value::String(value)) => value.clone(),
                Some(Value::Number(value)) => value.to_string(),
                Some(_) => return Err(invalid("value")),
            };
            let currency = match text("currency") {
                None => deal.currency.clone(),
                Some(Some(currency)) => currency,
                Some(None) => return Err(invalid("currency")),
            };
            let owner = match patch.get("owner") {
                None => deal.owner.clone(),
                Some(Value::Null) => None,
                Some(Value::String(owner)) => Some(owner.clone()),
                Some(_) => return Err(invalid("owner")),
            };
            let lead = match patch.get("lead") {
                None => deal.lead_id,
                Some(Value::Null) => None,
                Some(value) => Some(value.as_i64().ok_or_else(|| {
                    PipelineError::Invalid("lead: expected a lead id or null".into())
                })?),
            };
            let fields = DealFields {
                title,
                value: pipeline::money(&value, &currency)?,
                owner,
                lead,
            };
            pipeline::update_deal(conn, tenant, id, &fields, now)
        })
    })
    .await?;
    Ok(Json(json!({ "deal": deal_json(&deal) })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    stage: i64,
    #[serde(default)]
    position: i64,
}

/// `POST /deals/{id}/move` `{"stage": 3, "position": 0}`: what a drag and
/// drop sends. A change of stage fires the new stage's rules, once; the
/// same move again only keeps the deal where it is.
pub(super) async fn move_deal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let id = id_param(&id, "deal")?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: MoveBody = json_body(&bytes)?;
    let now = state.now();
    let work_state = state.clone();
    let work = async move {
        let database = work_state.database.clone();
        let moved = run(move || {
            pipeline::in_transaction(&database, |conn| {
                pipeline::move_deal(conn, tenant, id, body.stage, body.position, now)
            })
        })
        .await?;
        let moved = fire(&work_state, moved).await?;
        Ok((StatusCode::OK, moved_json(&moved)))
    };
    let route = format!("move deal {id}");
    Ok(idempotency::once(&state, tenant, &route, &headers, &bytes, work).await)
}
