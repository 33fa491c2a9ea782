//! The HTTP interface: liveness and readiness, and the REST API under
//! `/api/v1` (`api/v1.rs`), whose every error has one shape:
//! `{"error": {"code": "...", "message": "..."}}`. This is the only module
//! that serves HTTP.

mod admin;
mod error;
mod idempotency;
pub mod v1;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection as _;

use crate::db::Database;
use crate::ledger::Ledger;

/// Longest a readiness probe waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub database: Database,
    pub ledger: Ledger,
    pub meter: std::sync::Arc<crate::metering::Meter>,
    /// Seals secret plugin settings as tenants enable plugins.
    pub secrets: std::sync::Arc<crate::secrets::SecretBox>,
    /// Largest request body, in bytes.
    pub body_bytes_max: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/ready", get(ready))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1::router(&state))
        .with_state(state)
}

/// Prometheus metrics, in the text exposition format.
async fn metrics() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().encode(),
    )
}

/// The process is up and serving.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The process can reach its database: a load balancer may send it work.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let probe = state
        .database
        .run(|conn| conn.batch_execute("SELECT 1").map_err(anyhow::Error::from));
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        ),
        Ok(Err(error)) => unavailable(format!("database: {error:#}")),
        Err(_) => unavailable("database did not answer in time".to_owned()),
    }
}

fn unavailable(message: String) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({
            "error": { "code": "not_ready", "message": message }
        })),
    )
}
