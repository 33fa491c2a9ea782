//! `Idempotency-Key`: the first request with a key runs and its answer is
//! kept; a retry with the key and the same request gets that answer and
//! moves nothing more, even while the first is still running (it waits for
//! it); the key with another request is refused. A plugin call's answer
//! is kept once the call ran; a call refused before that (no credits, say)
//! keeps nothing, so it can be retried with the same key once the cause is
//! fixed. A billing request ([`once`]) keeps its answer whatever it was,
//! since a refusal may come after an invoice was issued.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use sha2::Digest as _;

use super::error::ApiError;
use crate::db::Database;
use crate::db::schema::idempotency_keys;
use crate::ids::TenantId;
use crate::units::Timestamp;

/// How long a retry waits for the first request with its key.
const WAIT_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

const RUNNING: &str = "running";
const DONE: &str = "done";

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Claim {
    /// The first with its key: run it, then `finish` or `release`.
    Run,
    /// Answer as the first request was answered.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
}

/// A request's fingerprint: what it asks, not who or when.
pub fn fingerprint(route: &str, body: &[u8]) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Claims `key` for a request, or finds the answer to its first use.
pub async fn claim(
    database: &Database,
    tenant: TenantId,
    key: &str,
    request_sha256: &str,
    now: Timestamp,
) -> Result<Claim, ApiError> {
    let started = Instant::now();
    loop {
        let (key, request) = (key.to_owned(), request_sha256.to_owned());
        let found = database
            .run(move |conn| {
                let inserted = diesel::insert_into(idempotency_keys::table)
                    .values((
                        idempotency_keys::tenant_id.eq(tenant.0),
                        idempotency_keys::key.eq(&key),
                        idempotency_keys::request_sha256.eq(&request),
                        idempotency_keys::state.eq(RUNNING),
                        idempotency_keys::created_at.eq(now.micros()),
                    ))
                    .execute(conn);
                match inserted {
                    Ok(_) => Ok(None),
                    Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                        let row: (String, String, Option<i32>, Option<String>) =
                            idempotency_keys::table
                                .find((tenant.0, &key))
                                .select((
                                    idempotency_keys::request_sha256,
                                    idempotency_keys::state,
                                    idempotency_keys::status,
                                    idempotency_keys::response,
                                ))
                                .first(conn)?;
                        Ok(Some(row))
                    }
                    Err(error) => Err(anyhow::Error::from(error)),
                }
            })
            .await
            .map_err(ApiError::internal)?;
        let Some((stored_sha256, state, status, response)) = found else {
            return Ok(Claim::Run);
        };
        if stored_sha256 != request_sha256 {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key for a new request",
            ));
        }
        if state == DONE {
            let body = response
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            return Ok(Claim::Replay {
                status: status.unwrap_or(200) as u16,
                body,
            });
        }
        if started.elapsed() > WAIT_MAX {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "the first request with this Idempotency-Key has not finished; retry later with the same key",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Keeps the answer to the request that claimed `key`.
pub async fn finish(
    database: &Database,
    tenant: TenantId,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    let (key, body) = (key.to_owned(), body.to_string());
    database
        .run(move |conn| {
            diesel::update(idempotency_keys::table.find((tenant.0, &key)))
                .set((
                    idempotency_keys::state.eq(DONE),
                    idempotency_keys::status.eq(i32::from(status)),
                    idempotency_keys::response.eq(&body),
                ))
                .execute(conn)
                .map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Gives `key` up: the request was refused before anything ran.
pub async fn release(database: &Database, tenant: TenantId, key: &str) -> Result<(), ApiError> {
    let key = key.to_owned();
    database
        .run(move |conn| {
            diesel::delete(
                idempotency_keys::table
                    .find((tenant.0, &key))
                    .filter(idempotency_keys::state.eq(RUNNING)),
            )
            .execute(conn)
            .map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Runs a billing request once per `Idempotency-Key` when it carries one:
/// the first runs and its answer, success or refusal, is kept; a retry with
/// the key and the same body gets that answer and runs nothing (no second
/// invoice, no second payment). `route` names what is asked, so one key
/// cannot answer two kinds of request.
pub async fn once<Work>(
    state: &super::AppState,
    tenant: TenantId,
    route: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    work: Work,
) -> axum::response::Response
where
    Work: Future<Output = Result<(axum::http::StatusCode, serde_json::Value), ApiError>>,
{
    use axum::response::IntoResponse as _;
    let answer = |(status, body): (axum::http::StatusCode, serde_json::Value)| {
        (status, axum::Json(body)).into_response()
    };
    let key = match super::v1::idempotency_key(headers) {
        Ok(Some(key)) => key,
        Ok(None) => return answer(work.await.unwrap_or_else(ApiError::into_parts)),
        Err(error) => return error.into_response(),
    };
    let request = fingerprint(route, body);
    let now = crate::units::Clock::now(&crate::units::SystemClock);
    match claim(&state.database, tenant, &key, &request, now).await {
        Ok(Claim::Run) => {}
        Ok(Claim::Replay { status, body }) => {
            let status =
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
            let mut response = answer((status, body));
            response.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return response;
        }
        Err(error) => return error.into_response(),
    }
    let (status, body) = work.await.unwrap_or_else(ApiError::into_parts);
    if let Err(error) = finish(&state.database, tenant, &key, status.as_u16(), &body).await {
        return error.into_response();
    }
    answer((status, body))
}
