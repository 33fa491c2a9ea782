//! The HTTP interface: liveness and readiness, and the REST API under
//! `/api/v1` (`api/v1.rs`), whose every error has one shape:
//! `{"error": {"code": "...", "message": "..."}}`. This module and the
//! dashboard (`crate::web`, which serves its pages over this API) are the
//! only ones that serve HTTP.

mod admin;
pub mod analytics;
mod billing;
mod error;
mod idempotency;
mod leads;
mod pipelines;
mod resellers;
pub mod sequences;
mod tracking;
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

/// What every handler can reach: one allocation that every request shares
/// (axum clones the state for each request, which for the fields of
/// [`Services`] one by one was 2% of the workers' CPU on the metering bench).
#[derive(Clone, Debug)]
pub struct AppState(std::sync::Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(std::sync::Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub database: Database,
    pub ledger: Ledger,
    pub meter: std::sync::Arc<crate::metering::Meter>,
    /// Seals secret plugin settings as tenants enable plugins.
    pub secrets: std::sync::Arc<crate::secrets::SecretBox>,
    /// Largest request body, in bytes.
    pub body_bytes_max: usize,
    /// Each tenant's request rate.
    pub rate_limits: std::sync::Arc<RateLimits>,
    /// The API keys this host has seen lately.
    pub keys: std::sync::Arc<crate::auth::KeyCache>,
    /// Who issues invoices, as `[billing]` says.
    pub issuer: std::sync::Arc<crate::billing::invoices::Issuer>,
    /// Plans and subscriptions.
    pub subscriptions: std::sync::Arc<crate::billing::subscriptions::Subscriptions>,
    /// The credit packages on sale.
    pub packages: std::sync::Arc<Vec<crate::config::CreditPackage>>,
    /// Payment methods, payments and providers' notifications.
    pub payments: std::sync::Arc<crate::billing::payments::Payments>,
    /// What the analytics reports assume.
    pub analytics: std::sync::Arc<analytics::Analytics>,
    /// The public URL and clock of leads, sequences and tasks.
    pub engagement: std::sync::Arc<sequences::Engagement>,
}

impl AppState {
    /// Forgets what this host cached of keys, plugins and settings: called
    /// after each change made through the admin API.
    pub fn forget_cached(&self) {
        self.keys.forget();
        self.meter.forget_cached();
    }
}

/// Requests per tenant, per second, with a burst; kept per host.
pub type RateLimits = governor::DefaultKeyedRateLimiter<i64>;

/// A limiter allowing `per_second` requests per tenant, sustained, and
/// `burst` at once.
pub fn rate_limits(per_second: u32, burst: u32) -> RateLimits {
    let per_second = std::num::NonZeroU32::new(per_second.max(1)).expect("at least 1");
    let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least 1");
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// A limiter with any quota (tests use one an hour, which no pause of the
/// machine can replenish mid-test).
pub fn rate_limits_with(quota: governor::Quota) -> RateLimits {
    governor::RateLimiter::keyed(quota)
}

/// Every route: probes, metrics, the REST API, tracking links and the
/// dashboard (`crate::web`), which calls the same API in process.
pub fn router(state: AppState) -> Router {
    let api: Router = Router::new()
        .nest("/api/v1", v1::router(&state))
        .with_state(state.clone());
    Router::new()
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/ready", get(ready))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(tracking::router())
        .with_state(state.clone())
        .merge(api.clone())
        .merge(crate::web::router(api, state))
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
