//! The leads endpoints: list (filtered, sorted by score, CSV), create
//! (merging into a lead its email, LinkedIn URL or name and domain
//! finds), read with its timeline, change, erase and export (GDPR),
//! do-not-contact, imports (CSV, or a lead-source plugin through the
//! metered path) and the tenant's scoring rules.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::admin::json_body;
use super::analytics::json_or_csv;
use super::error::ApiError;
use super::v1::{
    Caller, call_error, credits_json, id_param, limit_param, meter_error, number_param, params,
    read_body,
};
use crate::db;
use crate::engagement::import::{self, CsvImport, ImportError, SourceImport};
use crate::engagement::leads::{self, DoNotContact, Fields, Filter, Lead, LeadError, Sort};
use crate::engagement::scoring::{self, Rules};
use crate::engagement::{sequences, tasks};
use crate::ids::TenantId;
use crate::units::{Clock as _, SystemClock, Timestamp};

/// A CSV upload's size: 10,000 rows of a wide export fit several times.
pub const IMPORT_BYTES_MAX: usize = 16 << 20;

pub(super) fn lead_error(error: LeadError) -> ApiError {
    match error {
        LeadError::NotFound(_) => ApiError::not_found(error.to_string()),
        LeadError::Invalid { ref field, .. } => {
            let field = field.clone();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_lead",
                error.to_string(),
            )
            .with("field", field)
        }
        LeadError::NoIdentity => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "lead_unidentifiable",
            error.to_string(),
        ),
        LeadError::Ambiguous { first, second } => {
            ApiError::new(StatusCode::CONFLICT, "ambiguous_lead", error.to_string())
                .with("leads", json!([first, second]))
        }
        LeadError::TooMany => ApiError::new(StatusCode::CONFLICT, "lead_limit", error.to_string()),
        LeadError::NotManual { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "do_not_contact_locked",
            error.to_string(),
        ),
        LeadError::Database(_) | LeadError::Other(_) => ApiError::internal(error),
    }
}

fn import_error(error: ImportError) -> ApiError {
    match error {
        ImportError::NotCsv(_) => ApiError::bad_request("invalid_csv", error.to_string()),
        ImportError::Mapping(_) => ApiError::bad_request("invalid_mapping", error.to_string()),
        ImportError::TooManyRows => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            error.to_string(),
        ),
        ImportError::Lead(error) => lead_error(error),
        ImportError::Search { error, .. } => call_error(&error),
        ImportError::Meter(_) | ImportError::Other(_) => ApiError::internal(error),
    }
}

/// Runs blocking engagement work off the async workers.
pub(super) async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    error: fn(E) -> ApiError,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(error)
}

/// Runs `work` in a write transaction on a pooled connection.
pub(super) async fn in_transaction<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut db::DbConnection) -> Result<T, LeadError> + Send + 'static,
) -> Result<T, ApiError> {
    let database = state.database.clone();
    blocking(
        move || db::write_transaction(&mut *database.get()?, work),
        lead_error,
    )
    .await
}

/// Runs `work`, which only reads, on a pooled connection.
pub(super) async fn reading<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut db::DbConnection) -> Result<T, LeadError> + Send + 'static,
) -> Result<T, ApiError> {
    let database = state.database.clone();
    blocking(move || work(&mut *database.get()?), lead_error).await
}

pub(super) fn lead_json(lead: &Lead) -> Value {
    let fields = &lead.fields;
    let mut value = json!({ "id": lead.id });
    for name in leads::TEXT_FIELDS {
        value[name] = json!(fields.text(name));
    }
    value["company_size"] = json!(fields.company_size);
    value["custom_fields"] = json!(fields.custom_fields);
    value["tags"] = json!(fields.tags);
    value["do_not_contact"] = match (lead.do_not_contact, lead.do_not_contact_at) {
        (Some(reason), since) => json!({
            "reason": reason.as_str(),
            "since": since.map(|at| at.to_string()),
        }),
        (None, _) => Value::Null,
    };
    value["score"] = json!(lead.score);
    value["source"] = json!(lead.source);
    value["created_at"] = json!(lead.created_at.to_string());
    value["updated_at"] = json!(lead.updated_at.to_string());
    value
}

/// A lead as one CSV row: tags joined by `;`, custom fields as JSON.
fn lead_row(lead: &Lead) -> Value {
    let mut row = lead_json(lead);
    row["tags"] = json!(
        lead.fields
            .tags
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(";")
    );
    row["custom_fields"] =
        json!(serde_json::to_string(&lead.fields.custom_fields).unwrap_or_default());
    row["do_not_contact"] = json!(lead.do_not_contact.map(DoNotContact::as_str));
    row
}

const CSV_COLUMNS: [&str; 19] = [
    "id",
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
    "company_size",
    "custom_fields",
    "tags",
    "do_not_contact",
    "score",
    "source",
    "created_at",
    "updated_at",
];

/// `GET /leads?q=&tag=&score_min=&score_max=&do_not_contact=&sort=&limit=&cursor=&format=`
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    params(
        &query,
        &[
            "q",
            "tag",
            "score_min",
            "score_max",
            "do_not_contact",
            "sort",
            "limit",
            "cursor",
            "format",
        ],
    )?;
    let filter = Filter {
        text: query
            .get("q")
            .cloned()
            .filter(|text| !text.trim().is_empty()),
        tag: query.get("tag").cloned(),
        score_min: number_param(&query, "score_min")?,
        score_max: number_param(&query, "score_max")?,
        do_not_contact: match query.get("do_not_contact").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "do_not_contact must be true or false",
                ));
            }
        },
    };
    let sort = match query.get("sort") {
        None => Sort::ScoreDesc,
        Some(text) => Sort::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                "sort must be -score (the default), score, -created or created",
            )
        })?,
    };
    let cursor = query
        .get("cursor")
        .map(|text| {
            leads::Cursor::parse(text).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this listing returned")
            })
        })
        .transpose()?;
    let limit = limit_param(&query, leads::PAGE_LIMIT_MAX)?;
    let page = reading(&state, move |conn| {
        leads::list(conn, tenant, &filter, sort, cursor, limit)
    })
    .await?;
    let csv = matches!(query.get("format").map(String::as_str), Some("csv"));
    let rows: Vec<Value> = page
        .leads
        .iter()
        .map(|lead| if csv { lead_row(lead) } else { lead_json(lead) })
        .collect();
    let body = json!({
        "leads": rows,
        "next_cursor": page.next.map(|cursor| cursor.to_string()),
    });
    json_or_csv(&query, body, "leads", &CSV_COLUMNS, "leads")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingBody {
    columns: Vec<String>,
}

/// `POST /leads/import/mapping` `{"columns": ["E-mail Address", ...]}`:
/// where an import without a mapping would put each column, and every
/// target a mapping may name, for a form that lets the user choose.
pub(super) async fn guess_mapping(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.tenant()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let body: MappingBody = json_body(&bytes)?;
    let mapping = import::guessed_mapping(&body.columns).map_err(import_error)?;
    Ok(Json(json!({
        "mapping": mapping,
        "targets": import::targets(),
    })))
}

/// A lead as the API takes it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadBody {
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
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    #[serde(default)]
    tags: BTreeSet<String>,
}

impl LeadBody {
    fn into_fields(self) -> Fields {
        Fields {
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
            custom_fields: self.custom_fields,
            tags: self.tags,
        }
    }
}

/// `POST /leads`: creates a lead, or merges into the one its email,
/// LinkedIn URL or name and domain finds (200 then, 201 when created).
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let fields = json_body::<LeadBody>(&bytes)?
        .into_fields()
        .validated()
        .map_err(lead_error)?;
    let now = SystemClock.now();
    let (saved, lead) = in_transaction(&state, move |conn| {
        leads::ensure_room(conn, tenant, 1)?;
        let rules = scoring::rules_of(conn, tenant)?;
        let saved = leads::save(conn, tenant, &rules, &fields, "api", now)?;
        Ok((saved, leads::get(conn, tenant, saved.id)?))
    })
    .await?;
    let status = match saved.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({ "lead": lead_json(&lead), "created": saved.created })),
    )
        .into_response())
}

pub(super) fn lead_id(text: &str) -> Result<i64, ApiError> {
    id_param(text, "lead")
}

fn event_json(event: &leads::Event) -> Value {
    json!({
        "id": event.id,
        "kind": event.kind,
        "occurred_at": event.occurred_at.to_string(),
        "detail": event.detail,
        "step_run": event.step_run,
    })
}

/// `GET /leads/{id}`: the lead and its timeline, newest first.
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = lead_id(&id)?;
    let (lead, events) = reading(&state, move |conn| {
        Ok((
            leads::get(conn, tenant, id)?,
            leads::events(conn, tenant, id)?,
        ))
    })
    .await?;
    let mut answer = json!({ "lead": lead_json(&lead) });
    answer["events"] = events.iter().map(event_json).collect();
    Ok(Json(answer))
}

/// `PATCH /leads/{id}`: sets the fields the body names; `null` clears one.
/// `custom_fields` merges (a `null` value removes that field); `tags`
/// replaces the tags.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = lead_id(&id)?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let patch: serde_json::Map<String, Value> = json_body(&bytes)?;
    let change = Patch::parse(patch)?;
    let now = SystemClock.now();
    let lead = in_transaction(&state, move |conn| {
        let rules = scoring::rules_of(conn, tenant)?;
        leads::update(conn, tenant, &rules, id, now, |fields| change.apply(fields))
    })
    .await?;
    Ok(Json(json!({ "lead": lead_json(&lead) })))
}

/// A checked `PATCH` body.
struct Patch {
    text: Vec<(&'static str, Option<String>)>,
    company_size: Option<Option<i64>>,
    custom_fields: Vec<(String, Option<String>)>,
    tags: Option<BTreeSet<String>>,
}

impl Patch {
    fn parse(body: serde_json::Map<String, Value>) -> Result<Patch, ApiError> {
        let invalid = |name: &str, what: &str| {
            ApiError::bad_request("invalid_input", format!("{name}: expected {what}"))
        };
        let mut patch = Patch {
            text: Vec::new(),
            company_size: None,
            custom_fields: Vec::new(),
            tags: None,
        };
        for (name, value) in body {
            if let Some(field) = leads::TEXT_FIELDS.iter().find(|field| **field == name) {
                let value = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text),
                    _ => return Err(invalid(&name, "a string or null")),
                };
                patch.text.push((field, value));
                continue;
            }
            match (name.as_str(), value) {
                ("company_size", Value::Null) => patch.company_size = Some(None),
                ("company_size", Value::Number(number)) => {
                    let size = number
                        .as_i64()
                        .ok_or_else(|| invalid(&name, "a whole number or null"))?;
                    patch.company_size = Some(Some(size));
                }
                ("custom_fields", Value::Object(fields)) => {
                    for (field, value) in fields {
                        match value {
                            Value::Null => patch.custom_fields.push((field, None)),
                            Value::String(text) => patch.custom_fields.push((field, Some(text))),
                            _ => {
                                return Err(invalid(
                                    &format!("custom_fields.{field}"),
                                    "a string or null",
                                ));
                            }
                        }
                    }
                }
                ("tags", Value::Array(tags)) => {
                    let tags = tags
                        .into_iter()
                        .map(|tag| match tag {
                            Value::String(tag) => Ok(tag),
                            _ => Err(invalid("tags", "an array of strings")),
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    patch.tags = Some(tags);
                }
                ("company_size" | "custom_fields" | "tags", _) => {
                    return Err(invalid(&name, "a value of its type"));
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_input",
                        format!("{name}: not a lead field"),
                    ));
                }
            }
        }
        Ok(patch)
    }

    fn apply(self, fields: &mut Fields) {
        for (name, value) in self.text {
            fields.set_text(name, value);
        }
        if let Some(size) = self.company_size {
            fields.company_size = size;
        }
        for (name, value) in self.custom_fields {
            match value {
                Some(value) => fields.custom_fields.insert(name, value),
                None => fields.custom_fields.remove(&name),
            };
        }
        if let Some(tags) = self.tags {
            fields.tags = tags;
        }
    }
}

/// `DELETE /leads/{id}`: erases the lead and what is stored about it; an
/// unsubscribe or bounce stays suppressed (as a hash of the address).
pub(super) async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_admin()?;
    let id = lead_id(&id)?;
    in_transaction(&state, move |conn| leads::erase(conn, tenant, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /leads/{id}/export`: everything stored about the lead, as one JSON
/// document (GDPR art. 15 and 20).
pub(super) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    let id = lead_id(&id)?;
    let (lead, events, enrollments, tasks) = reading(&state, move |conn| {
        let lead = leads::get(conn, tenant, id)?;
        let events = leads::events(conn, tenant, id)?;
        let enrollments = sequences::enrollments_of_lead(conn, tenant, id)?;
        let filter = tasks::Filter {
            status: None,
            lead: Some(id),
        };
        let (tasks, _) = tasks::list(conn, tenant, &filter, None, tasks::PAGE_LIMIT_MAX)
            .map_err(|error| LeadError::Other(anyhow::anyhow!("{error}")))?;
        Ok((lead, events, enrollments, tasks))
    })
    .await?;
    let document = json!({
        "exported_at": SystemClock.now().to_string(),
        "lead": lead_json(&lead),
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
        "enrollments": enrollments.iter().map(super::sequences::enrollment_json).collect::<Vec<_>>(),
        "tasks": tasks.iter().map(super::sequences::task_json).collect::<Vec<_>>(),
    });
    let disposition = format!("attachment; filename=\"lead-{id}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(document)).into_response())
}

/// `PUT /leads/{id}/do-not-contact`: marks the lead do-not-contact by hand.
pub(super) async fn set_do_not_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = lead_id(&id)?;
    let now = SystemClock.now();
    let lead = in_transaction(&state, move |conn| {
        leads::set_do_not_contact(conn, tenant, id, DoNotContact::Manual, now)?;
        leads::get(conn, tenant, id)
    })
    .await?;
    Ok(Json(json!({ "lead": lead_json(&lead) })))
}

/// `DELETE /leads/{id}/do-not-contact`: lifts a manual do-not-contact.
pub(super) async fn clear_do_not_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = lead_id(&id)?;
    let now = SystemClock.now();
    let lead = in_transaction(&state, move |conn| {
        leads::clear_do_not_contact(conn, tenant, id, now)?;
        leads::get(conn, tenant, id)
    })
    .await?;
    Ok(Json(json!({ "lead": lead_json(&lead) })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvBody {
    csv: String,
    #[serde(default)]
    mapping: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    source: String,
    query: crate::runtime::SearchQuery,
    #[serde(default)]
    enrich_with: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /leads/import`: a CSV file (`Content-Type: text/csv`, each header
/// mapped to the field it names; or JSON `{"csv": ..., "mapping": {...},
/// "tags": [...]}`), or a lead source (`{"source": "http-leads", "query":
/// {...}, "enrich_with": "linkedin"}`), whose calls are metered.
pub(super) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?;
    params(&query, &["tags"])?;
    let bytes = read_body(body, IMPORT_BYTES_MAX).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_lowercase();
    let now = SystemClock.now();
    if content_type.starts_with("text/csv") {
        let tags = query
            .get("tags")
            .map(|tags| {
                tags.split(',')
                    .map(|tag| tag.trim().to_owned())
                    .filter(|tag| !tag.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let request = CsvImport {
            csv: bytes.to_vec(),
            mapping: None,
            tags,
        };
        return csv_import(&state, tenant, request, now).await;
    }
    let value: Value = json_body(&bytes)?;
    if value.get("source").is_some() {
        let body: SourceBody = json_body(&bytes)?;
        return source_import(&state, tenant, body, now).await;
    }
    let body: CsvBody = json_body(&bytes).map_err(|error| {
        let (_, answer) = error.into_parts();
        ApiError::bad_request(
            "invalid_input",
            format!(
                "send a CSV file as text/csv, or JSON with \"csv\" (and \"mapping\") or with \"source\" and \"query\": {}",
                answer["error"]["message"].as_str().unwrap_or_default()
            ),
        )
    })?;
    let request = CsvImport {
        csv: body.csv.into_bytes(),
        mapping: body.mapping,
        tags: body.tags,
    };
    csv_import(&state, tenant, request, now).await
}

async fn csv_import(
    state: &AppState,
    tenant: TenantId,
    request: CsvImport,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let database = state.database.clone();
    let report = blocking(
        move || import::import_csv(&database, tenant, &request, now),
        import_error,
    )
    .await?;
    Ok(Json(json!({
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "skipped": report.skipped,
        "skips": report.skips.iter().map(|skip| json!({ "line": skip.line, "reason": skip.reason })).collect::<Vec<_>>(),
        "ignored_columns": report.ignored_columns,
    }))
    .into_response())
}

async fn source_import(
    state: &AppState,
    tenant: TenantId,
    body: SourceBody,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let request = SourceImport {
        plugin: body.source,
        query: body.query,
        enrich_with: body.enrich_with,
        tags: body.tags,
    };
    let plugin = request.plugin.clone();
    let (meter, database) = (state.meter.clone(), state.database.clone());
    let report = tokio::task::spawn_blocking(move || {
        import::import_from_source(&meter, &database, tenant, &request, now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|error| match error {
        ImportError::Meter(error) => meter_error(&plugin, error),
        error => import_error(error),
    })?;
    Ok(Json(json!({
        "found": report.found,
        "enriched": report.enriched,
        "created": report.created,
        "updated": report.updated,
        "skipped": report.skips.len(),
        "skips": report.skips.iter().map(|skip| json!({ "index": skip.line, "reason": skip.reason })).collect::<Vec<_>>(),
        "charged": credits_json(report.charged),
        "next_cursor": report.next_cursor,
        "stopped": report.stopped,
    }))
    .into_response())
}

/// `GET /leads/scoring`: the tenant's scoring rules.
pub(super) async fn get_scoring(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let rules = reading(&state, move |conn| Ok(scoring::rules_of(conn, tenant)?)).await?;
    Ok(Json(serde_json::to_value(&rules).expect("rules serialise")))
}

/// `PUT /leads/scoring` (a tenant admin): replaces the rules and rescores
/// every lead, a batch per transaction.
pub(super) async fn put_scoring(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let bytes = read_body(body, state.body_bytes_max).await?;
    let rules: Rules = json_body(&bytes)?;
    rules.validate().map_err(|reason| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules", reason)
    })?;
    let now = SystemClock.now();
    let stored = rules.clone();
    in_transaction(&state, move |conn| {
        Ok(scoring::set_rules(conn, tenant, &stored, now)?)
    })
    .await?;
    let mut after = 0;
    let mut rescored = 0_usize;
    loop {
        let batch_rules = rules.clone();
        let batch = in_transaction(&state, move |conn| {
            scoring::rescore_batch(conn, tenant, &batch_rules, after, now)
        })
        .await?;
        match batch {
            Some((last, count)) => {
                rescored += count;
                after = last;
            }
            None => break,
        }
    }
    let mut answer = serde_json::to_value(&rules).expect("rules serialise");
    answer["rescored"] = json!(rescored);
    Ok(Json(answer))
}
