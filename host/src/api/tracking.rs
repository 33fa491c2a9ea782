//! What the people a tenant contacts reach without a key: the open pixel
//! and click redirects of tracked emails, the unsubscribe page, and
//! channels' callbacks (inbound mail, bounces, one-click unsubscribes).
//! Each link is signed by the host, so none can be forged or pointed
//! elsewhere; each answer to a bad signature is a plain 404.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::v1::{call_error, meter_error, read_body};
use crate::db;
use crate::engagement::events;
use crate::metering::Request;
use crate::runtime::{Call, Callback, ErrorKind, EventKind, Field, Reply};

/// An inbound email may carry attachments; the email channel reads up to
/// 10 MiB of it.
pub const CALLBACK_BYTES_MAX: usize = 10 << 20;

/// A 1×1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The routes outside `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/o/{run}/{sig}", get(open))
        .route("/t/c/{run}/{sig}", get(click))
        .route("/u/{run}/{sig}", get(unsubscribe_page).post(unsubscribe))
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><title>Not found</title><p>This link is not valid.</p>"),
    )
        .into_response()
}

/// Records the work on a blocking thread; a failure is logged, since the
/// person who opened or clicked must still get their answer.
async fn record(
    state: &AppState,
    work: impl FnOnce(&mut db::DbConnection) -> Result<bool, crate::engagement::leads::LeadError>
    + Send
    + 'static,
) -> bool {
    let database = state.database.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut conn = database.get()?;
        db::write_transaction(&mut conn, work).map_err(anyhow::Error::from)
    })
    .await;
    match done {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(error)) => {
            tracing::warn!(%error, "recording an engagement failed");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "recording an engagement failed");
            false
        }
    }
}

/// `GET /t/o/{run}/{sig}`: the open pixel.
async fn open(State(state): State<AppState>, Path((run, sig)): Path<(i64, String)>) -> Response {
    if state.secrets.verify("open", &run.to_string(), &sig) {
        let now = state.now();
        record(&state, move |conn| {
            events::track(conn, run, EventKind::Opened, None, now)
        })
        .await;
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response()
}

/// `GET /t/c/{run}/{sig}?u=URL`: records the click, then sends the reader
/// on to the link, which the signature covers.
async fn click(
    State(state): State<AppState>,
    Path((run, sig)): Path<(i64, String)>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    let Some(url) = query.get("u").cloned() else {
        return not_found();
    };
    if !state
        .secrets
        .verify("click", &format!("{run}\n{url}"), &sig)
    {
        return not_found();
    }
    let now = state.now();
    let target = url.clone();
    record(&state, move |conn| {
        events::track(conn, run, EventKind::Clicked, Some(&target), now)
    })
    .await;
    Redirect::to(&url).into_response()
}

/// `GET /u/{run}/{sig}`: asks to confirm, so that a mail scanner following
/// links does not unsubscribe anyone.
async fn unsubscribe_page(
    State(state): State<AppState>,
    Path((run, sig)): Path<(i64, String)>,
) -> Response {
    if !state.secrets.verify("unsubscribe", &run.to_string(), &sig) {
        return not_found();
    }
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Unsubscribe</title></head>\
<body style=\"font-family: sans-serif; max-width: 32rem; margin: 4rem auto\"><h1>Unsubscribe</h1>\
<p>Receive no more emails from this sender?</p>\
<form method=\"post\" action=\"/u/{run}/{sig}\"><button type=\"submit\">Unsubscribe</button></form></body></html>"
    ))
    .into_response()
}

/// `POST /u/{run}/{sig}`: unsubscribes (the page's button, or a mail
/// client's RFC 8058 one-click POST).
async fn unsubscribe(
    State(state): State<AppState>,
    Path((run, sig)): Path<(i64, String)>,
) -> Response {
    if !state.secrets.verify("unsubscribe", &run.to_string(), &sig) {
        return not_found();
    }
    let now = state.now();
    let done = record(&state, move |conn| events::unsubscribe(conn, run, now)).await;
    match done {
        true => Html(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribed</title></head>\
<body style=\"font-family: sans-serif; max-width: 32rem; margin: 4rem auto\"><h1>Unsubscribed</h1>\
<p>You will receive no more emails from this sender.</p></body></html>",
        )
        .into_response(),
        false => not_found(),
    }
}

/// `POST /api/v1/channels/{plugin}/callbacks/{token}`: a channel's
/// callback (an inbound email, a bounce, a provider's webhook, a one-click
/// unsubscribe) for the tenant the token names. The plugin reads it,
/// through the metered path, and the host applies the events it finds.
pub(super) async fn channel_callback(
    State(state): State<AppState>,
    Path((plugin, token)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let links = state.links();
    let Some(tenant) = links.tenant_of(&token) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the callback URL's token is not one this host issued; use the URL of the tenant's List-Unsubscribe header or its channel settings",
        ));
    };
    // Unauthenticated: the tenant's callbacks share its request rate.
    if state.rate_limits.check_key(&tenant.0).is_err() {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "callbacks are arriving faster than this host takes them; retry later",
        );
        error.retry_after = Some(1);
        return Err(error);
    }
    let body = read_body(body, CALLBACK_BYTES_MAX).await?;
    let mut fields: Vec<Field> = headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION)
        .filter_map(|(name, value)| {
            Some(Field {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect();
    let path = uri
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    fields.push(Field {
        name: "x-tollgate-callback-url".into(),
        value: path,
    });
    let callback = Callback {
        headers: fields,
        body: body.to_vec(),
    };
    let request = Request {
        tenant,
        plugin: plugin.clone(),
        call: Call::ChannelCallback(callback),
        idempotency_key: None,
    };
    let defaults = links.unsubscribe_settings(tenant, &plugin);
    let meter = state.meter.clone();
    let metered =
        tokio::task::spawn_blocking(move || meter.invoke_with_defaults(request, &defaults))
            .await
            .map_err(ApiError::internal)?
            .map_err(|error| meter_error(&plugin, error))?;
    let found = match metered.result {
        Ok(Reply::Events(events)) => events.events,
        Ok(_) => Vec::new(),
        Err(crate::runtime::CallError::Plugin { error, .. })
            if error.kind == ErrorKind::Unauthorized =>
        {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                error.message,
            ));
        }
        Err(error) => return Err(call_error(&error)),
    };
    let now = state.now();
    let n_events = found.len();
    let database = state.database.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let mut conn = database.get()?;
        db::write_transaction(&mut conn, |conn| events::apply(conn, tenant, &found, now))
            .map_err(anyhow::Error::from)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(axum::Json(json!({
        "events": n_events,
        "recorded": applied.recorded,
        "stopped": applied.stopped,
        "suppressed": applied.suppressed,
        "unmatched": applied.unmatched,
    })))
}
