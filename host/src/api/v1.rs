//! `/api/v1`: authenticated by API key (`Authorization: Bearer tg_...`),
//! scoped to the key's tenant.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::idempotency::{self, Claim};
use crate::auth::{self, Principal, Role};
use crate::ids::TenantId;
use crate::ledger::queries;
use crate::metering::{MeterError, Request};
use crate::plugins::{self, PluginError};
use crate::runtime::{CallError, ErrorKind, Field};
use crate::sandbox::{self, CallInputError};
use crate::units::{Clock as _, Credits, SystemClock};

/// Longest `Idempotency-Key` kept.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;

pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/billing/credits", get(credits))
        .route("/plugins/{plugin}/invoke/{function}", post(invoke))
}

/// The holder of a valid API key.
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim()
            .to_owned();
        let principal = state
            .database
            .run(move |conn| match auth::authenticate(conn, &presented) {
                Ok(principal) => Ok(Some(principal)),
                Err(auth::AuthError::BadKey) => Ok(None),
                Err(error) => Err(anyhow::Error::from(error)),
            })
            .await
            .map_err(ApiError::internal)?;
        principal.map(Caller).ok_or_else(ApiError::unauthorized)
    }
}

impl Caller {
    /// The tenant a tenant key acts for; the operator acts for none.
    fn tenant(self) -> Result<TenantId, ApiError> {
        match (self.0.role, self.0.tenant) {
            (Role::Admin | Role::Member, Some(tenant)) => Ok(tenant),
            _ => Err(ApiError::forbidden(
                "this endpoint acts for a tenant: use a tenant admin's or member's key",
            )),
        }
    }
}

fn credits_json(credits: Credits) -> serde_json::Value {
    credits.to_string().into()
}

fn balance_json(balance: &queries::Balance) -> serde_json::Value {
    serde_json::json!({
        "posted": credits_json(balance.posted),
        "pending": credits_json(balance.pending),
        "available": credits_json(balance.available),
        "credit_limit": balance.credit_limit.map(credits_json),
    })
}

/// `GET /billing/credits`: the tenant's balance.
async fn credits(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant()?;
    let balance = state
        .database
        .run(move |conn| {
            let wallet = queries::wallet_of(conn, tenant)?;
            queries::balance(conn, wallet).map_err(anyhow::Error::from)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({
        "tenant": tenant.0,
        "balance": balance_json(&balance),
    })))
}

/// Reads a body up to the limit, answering 413 in the API's shape beyond.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    })
}

/// `POST /plugins/{plugin}/invoke/{function}`: one metered call. The body is
/// the function's input as JSON; for `parse-callback`, the callback's raw
/// body (its headers are passed on). With an `Idempotency-Key`, a retry
/// gets the first answer and is not charged again.
async fn invoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((plugin, function)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match caller.tenant() {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let body = match read_body(body, state.body_bytes_max).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    if let Some(key) = &key {
        let request = idempotency::fingerprint(&format!("invoke {plugin} {function}"), &body);
        match idempotency::claim(&state.database, tenant, key, &request, SystemClock.now()).await {
            Ok(Claim::Run) => {}
            Ok(Claim::Replay { status, body }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut response = (status, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Err(error) => return error.into_response(),
        }
    }
    let (status, answer, ran) = call_plugin(
        &state,
        tenant,
        &plugin,
        &function,
        &headers,
        &body,
        key.clone(),
    )
    .await;
    if let Some(key) = &key {
        let kept = match ran {
            true => {
                idempotency::finish(&state.database, tenant, key, status.as_u16(), &answer).await
            }
            false => idempotency::release(&state.database, tenant, key).await,
        };
        if let Err(error) = kept {
            return error.into_response();
        }
    }
    (status, Json(answer)).into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX => {
                Ok(Some(key.to_owned()))
            }
            _ => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
                ),
            )),
        },
    }
}

/// Makes the call; returns the answer, and whether the plugin ran (so the
/// answer is the one to keep for its idempotency key).
async fn call_plugin(
    state: &AppState,
    tenant: TenantId,
    plugin: &str,
    function: &str,
    headers: &HeaderMap,
    body: &[u8],
    idempotency_key: Option<String>,
) -> (StatusCode, serde_json::Value, bool) {
    let refused = |error: ApiError| {
        let (status, body) = error.into_parts();
        (status, body, false)
    };
    let forwarded: Vec<Field> = headers
        .iter()
        .filter(|(name, _)| *name != axum::http::header::AUTHORIZATION)
        .map(|(name, value)| Field {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();
    let name = plugin.to_owned();
    let kind = state
        .database
        .run(move |conn| match plugins::active_manifest(conn, &name) {
            Ok(manifest) => Ok(Some(manifest.kind)),
            Err(PluginError::NotInstalled(_)) => Ok(None),
            Err(error) => Err(anyhow::Error::from(error)),
        })
        .await;
    let kind = match kind {
        Ok(Some(kind)) => kind,
        Ok(None) => return refused(unknown_plugin(plugin)),
        Err(error) => return refused(ApiError::internal(error)),
    };
    let call = match sandbox::parse_call(kind, function, body, forwarded) {
        Ok(call) => call,
        Err(error @ CallInputError::UnknownFunction { .. }) => {
            return refused(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_function",
                error.to_string(),
            ));
        }
        Err(error @ CallInputError::Input { .. }) => {
            return refused(ApiError::bad_request("invalid_input", error.to_string()));
        }
    };
    let meter = state.meter.clone();
    let request = Request {
        tenant,
        plugin: plugin.to_owned(),
        call,
        idempotency_key,
    };
    let metered = match tokio::task::spawn_blocking(move || meter.invoke(request)).await {
        Ok(Ok(metered)) => metered,
        Ok(Err(error)) => return refused(meter_error(plugin, error)),
        Err(error) => return refused(ApiError::internal(error)),
    };
    let balance = state
        .database
        .run(move |conn| {
            let wallet = queries::wallet_of(conn, tenant)?;
            queries::balance(conn, wallet).map_err(anyhow::Error::from)
        })
        .await;
    let balance = match balance {
        Ok(balance) => balance_json(&balance),
        // The call was made and charged; say so even if the balance
        // cannot be read back.
        Err(_) => serde_json::Value::Null,
    };
    let charge = serde_json::json!({
        "call_id": metered.call_id,
        "plugin": plugin,
        "version": metered.version,
        "function": function,
        "units": metered.units,
        "charged": credits_json(metered.charged),
        "balance": balance,
    });
    match metered.result {
        Ok(reply) => {
            let mut answer = charge;
            answer["result"] = sandbox::reply_json(&reply);
            (StatusCode::OK, answer, true)
        }
        Err(error) => {
            let mut answer = call_error(&error);
            for (name, value) in charge.as_object().expect("built as an object") {
                answer = answer.with(name, value.clone());
            }
            let (status, body) = answer.into_parts();
            (status, body, true)
        }
    }
}

fn unknown_plugin(plugin: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_plugin",
        format!("no plugin {plugin:?} is installed"),
    )
}

/// Why a call was not made: nothing was charged.
fn meter_error(plugin: &str, error: MeterError) -> ApiError {
    match error {
        MeterError::Plugin(PluginError::NotInstalled(_)) => unknown_plugin(plugin),
        MeterError::NotEnabled(_) => ApiError::new(
            StatusCode::CONFLICT,
            "plugin_not_enabled",
            error.to_string(),
        ),
        MeterError::WrongFunction { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_function", error.to_string())
        }
        MeterError::Unpriced(_) => {
            ApiError::new(StatusCode::CONFLICT, "unpriced", error.to_string())
        }
        MeterError::InsufficientCredits {
            available,
            required,
        } => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            error.to_string(),
        )
        .with("available", credits_json(available))
        .with("required", credits_json(required)),
        error => ApiError::internal(error),
    }
}

/// A call that ran and failed: the plugin's own report, or the sandbox
/// stopping it.
fn call_error(error: &CallError) -> ApiError {
    let message = error.to_string();
    match error {
        CallError::Plugin { error, .. } => {
            let (status, code) = match error.kind {
                ErrorKind::InvalidInput => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "plugin_invalid_input")
                }
                ErrorKind::Misconfigured => (StatusCode::CONFLICT, "plugin_misconfigured"),
                ErrorKind::Unauthorized => (StatusCode::BAD_GATEWAY, "plugin_unauthorized"),
                ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "plugin_rate_limited"),
                ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "plugin_upstream"),
                ErrorKind::NotFound => (StatusCode::NOT_FOUND, "plugin_not_found"),
                ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_internal"),
            };
            ApiError::new(status, code, message).with("retryable", error.retryable)
        }
        CallError::Timeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "plugin_timeout", message)
        }
        CallError::FuelExhausted { .. }
        | CallError::MemoryLimit { .. }
        | CallError::OutputTooLarge { .. }
        | CallError::Trap { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "plugin_crashed", message)
        }
        CallError::WrongFunction { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_function", message)
        }
        CallError::Host { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "platform_unavailable",
            message,
        ),
    }
}
