//! The web dashboard: server-rendered pages (minijinja templates embedded
//! in the binary, a little plain JavaScript, charts as SVG drawn here) over
//! the REST API itself. A page asks `/api/v1` in process for what it shows,
//! as the signed-in key, and a form sends what the API takes, so the
//! dashboard can do nothing the key could not, every object is scoped to
//! the key's tenant by the API's own checks, and every error is the API's
//! own message. The scripts reach the API through `/app/api/...`, which
//! forwards a request as the session's key once its CSRF token checks out.
//!
//! Signing in exchanges an API key for a session cookie ([`session`]):
//! HttpOnly, SameSite=Lax, Secure when the public URL is https.

mod charts;
mod pages;
pub mod session;

use std::sync::LazyLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::api::AppState;
use crate::api::v1::SignedIn;
use crate::auth::Role;
use session::Session;

/// Largest answer of the API a page reads (a page of a list, a PDF).
const ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct Web {
    /// The REST API, served in process.
    api: Router,
    state: AppState,
    /// Cookies only over https, when the platform is reached over https.
    secure_cookies: bool,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// The dashboard's routes: `/` and `/sign-in`, the pages under `/app`, and
/// their static files.
pub fn router(api: Router, state: AppState) -> Router {
    let secure_cookies = state.engagement.public_url.starts_with("https://");
    let web = Web {
        api,
        state,
        secure_cookies,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/app") }))
        .route("/sign-in", get(pages::sign_in_page).post(pages::sign_in))
        .route("/sign-out", axum::routing::post(pages::sign_out))
        .route("/static/{file}", get(static_file))
        .route("/app/api/{*path}", any(forward))
        .merge(pages::routes())
        .layer(axum::middleware::from_fn(guard))
        .with_state(web)
}

/// What every dashboard answer gets, and what every request that may
/// change something must pass: it comes from one of our own pages, not
/// another site (a browser says so in `Sec-Fetch-Site` and `Origin`), which
/// also stops another site signing a browser in to its own tenant.
async fn guard(request: Request, next: axum::middleware::Next) -> Response {
    let safe = matches!(request.method(), &Method::GET | &Method::HEAD);
    if !safe && !same_origin(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "this request comes from another site; use Tollgate's own pages",
        )
            .into_response();
    }
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_static {
        // Pages show a tenant's figures and carry one-use form nonces.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether a request is from a page of this origin, as far as the browser
/// tells: `Sec-Fetch-Site` is not `cross-site`, and an `Origin`, when sent,
/// names this request's host.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return false;
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The templates, embedded at build time.
static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    // A field the API sends as null shows as nothing, not "none".
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        minijinja::escape_formatter(out, state, value)
    });
    for (name, source) in pages::TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|error| panic!("template {name}: {error:#}"));
    }
    env.add_filter("credits", filters::credits);
    env.add_filter("day", filters::day);
    env.add_filter("when", filters::when);
    env.add_filter("minor", filters::minor);
    env
});

mod filters {
    /// A decimal credit amount with thousands separated: `1,250.5`.
    pub fn credits(value: String) -> String {
        let (sign, digits) = match value.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", value.as_str()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let mut grouped = String::new();
        for (index, digit) in whole.chars().enumerate() {
            if index > 0 && (whole.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        match fraction.trim_end_matches('0') {
            "" => format!("{sign}{grouped}"),
            fraction => format!("{sign}{grouped}.{fraction}"),
        }
    }

    /// An RFC 3339 time's day: `2026-12-07`.
    pub fn day(value: String) -> String {
        value.get(..10).unwrap_or(&value).to_owned()
    }

    /// An RFC 3339 time to the minute, in UTC: `2026-12-07 14:05`.
    pub fn when(value: String) -> String {
        match chrono::DateTime::parse_from_rfc3339(&value) {
            Ok(time) => time.to_utc().format("%Y-%m-%d %H:%M").to_string(),
            Err(_) => value,
        }
    }

    /// An amount in minor units (cents) as a decimal: `1999` → `19.99`.
    pub fn minor(value: i64) -> String {
        let sign = if value < 0 { "-" } else { "" };
        let value = value.unsigned_abs();
        format!("{sign}{}.{:02}", value / 100, value % 100)
    }
}

/// A page that could not be shown: the API's status and message, or a
/// redirect to sign in.
#[derive(Debug)]
pub enum PageError {
    SignIn,
    Status(StatusCode, String),
}

impl PageError {
    fn internal(error: impl std::fmt::Display) -> PageError {
        tracing::error!(error = %error, "dashboard page failed");
        PageError::Status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the platform failed to answer; try again".into(),
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/sign-in").into_response(),
            PageError::Status(status, message) => {
                let body = render(
                    "error.html",
                    json!({ "status": status.as_u16(), "reason": status.canonical_reason(), "message": message }),
                );
                (status, body).into_response()
            }
        }
    }
}

/// A rendered page: 200 with the page, or, for a template error (a bug of
/// ours, logged), 500 with a plain page.
#[derive(Debug)]
pub struct Page(Result<String, ()>);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(html) => Html(html).into_response(),
            Err(()) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>This page failed to render; the error is in the server's log."),
            )
                .into_response(),
        }
    }
}

fn render(template: &str, context: Value) -> Page {
    let rendered = TEMPLATES
        .get_template(template)
        .and_then(|page| page.render(minijinja::value::Serde(&context)));
    Page(rendered.map_err(|error| {
        tracing::error!(template, error = %format!("{error:#}"), "template failed");
    }))
}

impl FromRequestParts<Web> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Session, PageError> {
        let secret = cookie_value(&parts.headers, session::COOKIE).ok_or(PageError::SignIn)?;
        let now = web.state.now();
        let host = host_of(&parts.headers);
        web.state
            .database
            .run(move |conn| {
                let Some(mut session) = session::find(conn, &secret, now)? else {
                    return Ok(None);
                };
                session.brand = match crate::branding::by_domain(conn, &host)? {
                    Some((_, brand)) => Some(brand),
                    None => match session.principal.tenant {
                        Some(tenant) => {
                            crate::branding::of_tenant(conn, tenant)?.map(|(_, brand)| brand)
                        }
                        None => None,
                    },
                };
                anyhow::Ok(Some(session))
            })
            .await
            .map_err(PageError::internal)?
            .ok_or(PageError::SignIn)
    }
}

/// The request's host name as its `Host` header gives it.
fn host_of(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// What a page shows of a brand: a reseller's, or the platform's.
pub fn brand_json(brand: Option<&crate::branding::Brand>) -> Value {
    match brand {
        Some(brand) => json!({
            "name": brand.name,
            "custom": true,
            "primary": brand.primary_color(),
            "accent": brand.accent_color(),
            "logo": brand.logo_url(),
            "support_email": brand.support_email,
        }),
        None => json!({ "name": "Tollgate", "custom": false }),
    }
}

/// The brand of the reseller whose domain a request without a session
/// came to (the sign-in page), else the platform's.
async fn brand_of_host(web: &Web, headers: &HeaderMap) -> Value {
    let host = host_of(headers);
    let brand = web
        .state
        .database
        .run(move |conn| crate::branding::by_domain(conn, &host).map_err(anyhow::Error::from))
        .await
        .unwrap_or_else(|error| {
            tracing::error!(error = %format!("{error:#}"), "could not read a domain's brand");
            None
        });
    brand_json(brand.as_ref().map(|(_, brand)| brand))
}

/// The value of the cookie `name`, if the request carries it.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// An answer of the API, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The API's error message, for a failed answer.
    fn message(&self) -> String {
        let value = self.json();
        value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the API answered {}", self.status))
    }
}

impl Web {
    /// Sends a request to the API as the session's key.
    async fn call(
        &self,
        session: &Session,
        method: Method,
        uri: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Answer, PageError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/api/v1{uri}"))
            .body(body)
            .map_err(PageError::internal)?;
        *request.headers_mut() = headers;
        request.extensions_mut().insert(SignedIn(session.principal));
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, ANSWER_BYTES_MAX)
            .await
            .map_err(PageError::internal)?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET` of the API as JSON; a failure is the page's failure, with the
    /// API's status and message (another tenant's object is a 404).
    async fn get(&self, session: &Session, uri: &str) -> Result<Value, PageError> {
        let answer = self
            .call(session, Method::GET, uri, HeaderMap::new(), Body::empty())
            .await?;
        if !answer.status.is_success() {
            return Err(PageError::Status(answer.status, answer.message()));
        }
        Ok(answer.json())
    }

    /// A JSON request of the API that changes something.
    async fn send(
        &self,
        session: &Session,
        method: Method,
        uri: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, PageError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = idempotency_key.and_then(|key| HeaderValue::from_str(key).ok()) {
            headers.insert("idempotency-key", key);
        }
        self.call(session, method, uri, headers, Body::from(body.to_string()))
            .await
    }

    /// What every page's layout needs: who is signed in and the form token.
    fn base(&self, session: &Session, active: &str) -> Value {
        let role = session.principal.role;
        json!({
            "csrf": session.csrf,
            "active": active,
            "brand": brand_json(session.brand.as_ref()),
            "user": {
                "role": role.as_str(),
                "tenant": session.principal.tenant.map(|tenant| tenant.0),
                "operator": role == Role::Operator,
                "admin": role == Role::Admin,
            },
        })
    }
}

/// `/app/api/...`: the API, for the pages' scripts, as the session's key.
/// A request that may change something must carry the session's CSRF token
/// in `X-CSRF-Token`.
async fn forward(
    State(web): State<Web>,
    session: Result<Session, PageError>,
    request: Request,
) -> Result<Response, PageError> {
    // A script's request answers as the API would, never with a redirect
    // to a page the script would take for success.
    let session = match session {
        Ok(session) => session,
        Err(PageError::SignIn) => {
            return Ok((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {
                    "code": "signed_out",
                    "message": "the session has ended; sign in again",
                }})),
            )
                .into_response());
        }
        Err(error) => return Err(error),
    };
    let (parts, body) = request.into_parts();
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !session.csrf_matches(token) {
            return Ok(forbidden_csrf());
        }
    }
    let uri = parts
        .uri
        .path_and_query()
        .map(|path| path.as_str())
        .unwrap_or("/")
        .strip_prefix("/app/api")
        .unwrap_or("/")
        .to_owned();
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Some(value) = parts.headers.get("idempotency-key") {
        headers.insert("idempotency-key", value.clone());
    }
    let answer = web
        .call(&session, parts.method, &uri, headers, body)
        .await?;
    let mut response = (answer.status, answer.body).into_response();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_DISPOSITION,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = answer.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

fn forbidden_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": {
            "code": "csrf",
            "message": "this request lacks the page's CSRF token; reload the page and try again",
        }})),
    )
        .into_response()
}

/// The stylesheet and the script, embedded.
async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.css" => (
            include_str!("web/static/app.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_str!("web/static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
