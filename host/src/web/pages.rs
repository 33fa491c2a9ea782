//! The dashboard's pages and forms. Each page asks the API for what it
//! shows; each form sends the API what it takes, and on a refusal shows
//! the page again with the API's message beside the field it names.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::session::{self, Session};
use super::{Page, PageError, Web, charts, render};
use crate::auth::Role;

/// The templates, by name.
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("credits.html", include_str!("templates/credits.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("invoices.html", include_str!("templates/invoices.html")),
    ("revenue.html", include_str!("templates/revenue.html")),
    ("leads.html", include_str!("templates/leads.html")),
    ("lead.html", include_str!("templates/lead.html")),
    ("import.html", include_str!("templates/import.html")),
    ("sequences.html", include_str!("templates/sequences.html")),
    ("sequence.html", include_str!("templates/sequence.html")),
    ("pipelines.html", include_str!("templates/pipelines.html")),
    ("board.html", include_str!("templates/board.html")),
    ("plugins.html", include_str!("templates/plugins.html")),
];

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/app", get(home))
        .route("/app/credits", get(credits))
        .route("/app/credits/purchase", post(purchase))
        .route("/app/credits/payment-methods", post(add_method))
        .route("/app/credits/plan", post(change_plan))
        .route("/app/usage", get(usage))
        .route("/app/invoices", get(invoices))
        .route("/app/revenue", get(revenue))
        .route("/app/leads", get(leads))
        .route("/app/leads/import", get(import))
        .route("/app/leads/{id}", get(lead))
        .route("/app/leads/{id}/enroll", post(enroll))
        .route("/app/sequences", get(sequences))
        .route("/app/sequences/new", get(new_sequence))
        .route("/app/sequences/{id}", get(sequence))
        .route("/app/pipelines", get(pipelines))
        .route("/app/pipelines/{id}", get(board))
        .route("/app/pipelines/{id}/deals", post(create_deal))
        .route("/app/plugins", get(plugins))
}

/// A form's fields, as posted.
type Form = axum::extract::Form<BTreeMap<String, String>>;

fn field<'a>(form: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(|value| value.trim()).unwrap_or_default()
}

/// A form that was refused: which form, what was typed, and the message
/// for each field (`_form` for one that names none).
fn refused(name: &str, values: &BTreeMap<String, String>, field: &str, message: String) -> Value {
    let mut values = values.clone();
    values.remove("csrf");
    json!({ "name": name, "values": values, "errors": { field: message } })
}

/// The field of `fields` a message of the API is about: API messages that
/// concern one field begin with its name (`token: ...`, `package "x" ...`).
fn field_of<'a>(message: &str, fields: &[&'a str]) -> &'a str {
    fields
        .iter()
        .find(|name| {
            message
                .strip_prefix(**name)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(' '))
                || message.contains(&format!("{name} "))
                    && message.starts_with(&format!("the {name}"))
        })
        .copied()
        .unwrap_or("_form")
}

/// A page's status: 200, or 422 when it shows a refused form again.
fn form_status(form: &Value) -> StatusCode {
    match form.is_null() {
        true => StatusCode::OK,
        false => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// An object's id from a form's path; anything else is not found.
fn path_id(id: &str, what: &str) -> Result<i64, PageError> {
    id.parse()
        .map_err(|_| PageError::Status(StatusCode::NOT_FOUND, format!("{what} {id} not found")))
}

/// Checks a form's CSRF token; a form without the session's token changes
/// nothing.
fn check_csrf(session: &Session, form: &BTreeMap<String, String>) -> Result<(), PageError> {
    match session.csrf_matches(field(form, "csrf")) {
        true => Ok(()),
        false => Err(PageError::Status(
            StatusCode::FORBIDDEN,
            "this form lacks the page's CSRF token (it may be from an older page); reload the page and send it again".into(),
        )),
    }
}

fn tenant_only(session: &Session) -> Result<(), PageError> {
    match session.principal.role {
        Role::Admin | Role::Member => Ok(()),
        Role::Operator => Err(PageError::Status(
            StatusCode::FORBIDDEN,
            "this page is a tenant's; the operator's pages are Revenue, Usage and Plugins".into(),
        )),
        Role::Reseller => Err(PageError::Status(
            StatusCode::FORBIDDEN,
            "this page is a tenant's; a reseller manages its tenants through /api/v1/resellers"
                .into(),
        )),
    }
}

fn operator_only(session: &Session) -> Result<(), PageError> {
    match session.principal.role {
        Role::Operator => Ok(()),
        _ => Err(PageError::Status(
            StatusCode::FORBIDDEN,
            "this page is the operator's: sign in with an operator key".into(),
        )),
    }
}

/// Merges `extra` into the layout's context.
fn context(web: &Web, session: &Session, active: &str, extra: Value) -> Value {
    let mut context = web.base(session, active);
    if let (Some(base), Value::Object(extra)) = (context.as_object_mut(), extra) {
        base.extend(extra);
    }
    context
}

/// A query string of the filters given, for the API.
fn query_string(query: &BTreeMap<String, String>, names: &[&str]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for name in names {
        if let Some(value) = query.get(*name).map(|value| value.trim())
            && !value.is_empty()
        {
            serializer.append_pair(name, value);
        }
    }
    serializer.finish()
}

// ---- signing in and out ----

pub(super) async fn sign_in_page(State(web): State<Web>, headers: HeaderMap) -> Page {
    render(
        "sign_in.html",
        json!({ "brand": super::brand_of_host(&web, &headers).await }),
    )
}

/// `POST /sign-in` with the field `key`: a live API key opens a session.
pub(super) async fn sign_in(State(web): State<Web>, headers: HeaderMap, form: Form) -> Response {
    let brand = super::brand_of_host(&web, &headers).await;
    let key = field(&form, "key").to_owned();
    if key.is_empty() {
        return sign_in_refused(brand, "Paste an API key (tg_ and 64 hex digits).");
    }
    let now = web.state.now();
    let opened = web
        .state
        .database
        .run(move |conn| {
            let principal = match crate::auth::authenticate(conn, &key) {
                Ok(principal) => principal,
                Err(crate::auth::AuthError::BadKey) => return Ok(None),
                Err(crate::auth::AuthError::Suspended) => return Ok(Some(Err(()))),
                Err(error) => return Err(anyhow::Error::from(error)),
            };
            Ok(Some(Ok(session::open(conn, principal, now)?)))
        })
        .await;
    match opened {
        Ok(Some(Err(()))) => sign_in_refused(
            brand,
            "This account is suspended. Ask your provider to resume it, then sign in again.",
        ),
        Ok(Some(Ok((_, secret)))) => {
            let cookie = cookie::Cookie::build((session::COOKIE, secret))
                .path("/")
                .http_only(true)
                .same_site(cookie::SameSite::Lax)
                .secure(web.secure_cookies)
                .max_age(cookie::time::Duration::microseconds(
                    session::LIFETIME_MICROS,
                ))
                .build();
            (
                [(header::SET_COOKIE, cookie.to_string())],
                Redirect::to("/app"),
            )
                .into_response()
        }
        Ok(None) => sign_in_refused(
            brand,
            "That key is malformed, unknown or revoked. Ask your admin for a key.",
        ),
        Err(error) => PageError::internal(error).into_response(),
    }
}

fn sign_in_refused(brand: Value, message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        render(
            "sign_in.html",
            json!({ "brand": brand, "errors": { "key": message } }),
        ),
    )
        .into_response()
}

/// `POST /sign-out`: ends the session and clears its cookie.
pub(super) async fn sign_out(
    State(web): State<Web>,
    session: Session,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    web.state
        .database
        .run(move |conn| session::close(conn, session.id).map_err(anyhow::Error::from))
        .await
        .map_err(PageError::internal)?;
    let cookie = cookie::Cookie::build((session::COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    Ok((
        [(header::SET_COOKIE, cookie.to_string())],
        Redirect::to("/sign-in"),
    )
        .into_response())
}

async fn home(session: Session) -> Redirect {
    match session.principal.role {
        Role::Operator => Redirect::to("/app/revenue"),
        _ => Redirect::to("/app/credits"),
    }
}

// ---- credits ----

/// `GET /app/credits`: the balance and grants, the plan, packages to buy,
/// payment methods and the transaction history with its filters.
async fn credits(
    State(web): State<Web>,
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Page, PageError> {
    credits_page(&web, &session, &query, Value::Null)
        .await
        .map(|(_, html)| html)
}

async fn credits_page(
    web: &Web,
    session: &Session,
    query: &BTreeMap<String, String>,
    form: Value,
) -> Result<(StatusCode, Page), PageError> {
    tenant_only(session)?;
    let filters = query_string(query, &["kind", "from", "to", "before"]);
    let history = web
        .call(
            session,
            Method::GET,
            &format!("/billing/credits/transactions?limit=50&{filters}"),
            HeaderMap::new(),
            axum::body::Body::empty(),
        )
        .await?;
    // A bad filter is shown beside the filter, not as a broken page.
    let (transactions, filter_error) = match history.status.is_success() {
        true => (history.json(), Value::Null),
        false => (json!({ "transactions": [] }), history.message().into()),
    };
    let subscription = web
        .call(
            session,
            Method::GET,
            "/billing/subscriptions",
            HeaderMap::new(),
            axum::body::Body::empty(),
        )
        .await?;
    let subscription = match subscription.status.is_success() {
        true => subscription.json()["subscription"].clone(),
        false => Value::Null,
    };
    // One nonce per form: the Idempotency-Key of what it sends.
    let nonces = json!({ "purchase": hex_nonce(), "plan": hex_nonce() });
    let status = form_status(&form);
    let page = context(
        web,
        session,
        "credits",
        json!({
            "credits": web.get(session, "/billing/credits").await?,
            "plans": web.get(session, "/billing/plans").await?["plans"],
            "packages": web.get(session, "/billing/packages").await?["packages"],
            "methods": web.get(session, "/billing/payment-methods").await?["payment_methods"],
            "subscription": subscription,
            "transactions": transactions["transactions"],
            "next_cursor": transactions["next_cursor"],
            "filters": query,
            "filter_query": filters,
            "filter_error": filter_error,
            "form": form,
            "nonces": nonces,
            "notice": query.get("notice"),
        }),
    );
    Ok((status, render("credits.html", page)))
}

fn hex_nonce() -> String {
    let random: [u8; 16] = rand::random();
    random.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The answer to a form the API refused: the page again, the message
/// beside the field.
async fn credits_refused(web: &Web, session: &Session, form: Value) -> Result<Response, PageError> {
    let (status, html) = credits_page(web, session, &BTreeMap::new(), form).await?;
    Ok((status, html).into_response())
}

/// `POST /app/credits/purchase`: buys a credit package, paid at once with
/// the chosen payment method. The page's nonce is the Idempotency-Key, so
/// a form sent twice buys once.
async fn purchase(
    State(web): State<Web>,
    session: Session,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    let package = field(&form, "package");
    if package.is_empty() {
        let form = refused("purchase", &form, "package", "Choose a package.".into());
        return credits_refused(&web, &session, form).await;
    }
    let mut body = json!({ "package": package });
    match field(&form, "payment_method") {
        "" => {}
        method => match method.parse::<i64>() {
            Ok(method) => body["payment_method"] = method.into(),
            Err(_) => {
                let form = refused(
                    "purchase",
                    &form,
                    "payment_method",
                    "Choose one of your payment methods.".into(),
                );
                return credits_refused(&web, &session, form).await;
            }
        },
    }
    let key = format!("web-{}-{}", session.id, field(&form, "nonce"));
    let answer = web
        .send(
            &session,
            Method::POST,
            "/billing/purchases",
            &body,
            Some(&key),
        )
        .await?;
    if !answer.status.is_success() {
        let message = answer.message();
        let at = match answer.json()["error"]["code"].as_str() {
            Some("unknown_package") => "package",
            Some("not_found") => "payment_method",
            _ => field_of(&message, &["package", "payment_method"]),
        };
        let form = refused("purchase", &form, at, message);
        return credits_refused(&web, &session, form).await;
    }
    let paid = answer.json();
    let notice = match paid["payment"]["state"].as_str() {
        Some("succeeded") => "purchased",
        Some("failed") => "payment_failed",
        Some(_) => "payment_pending",
        None => "invoiced",
    };
    Ok(Redirect::to(&format!("/app/credits?notice={notice}")).into_response())
}

/// `POST /app/credits/payment-methods`: saves a payment method by the
/// provider's token (never a card number).
async fn add_method(
    State(web): State<Web>,
    session: Session,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    let (provider, method, token) = (
        field(&form, "provider"),
        field(&form, "method"),
        field(&form, "token"),
    );
    for (name, value, message) in [
        ("provider", provider, "Choose a payment provider."),
        ("method", method, "Choose card, PayPal or bank transfer."),
        (
            "token",
            token,
            "Paste the token the provider gave for this method.",
        ),
    ] {
        if value.is_empty() && !(name == "token" && method == "bank_transfer") {
            let form = refused("method", &form, name, message.into());
            return credits_refused(&web, &session, form).await;
        }
    }
    let mut body = json!({
        "provider": provider,
        "method": method,
        "token": token,
        "default": form.contains_key("default"),
    });
    if !field(&form, "label").is_empty() {
        body["label"] = field(&form, "label").into();
    }
    let answer = web
        .send(
            &session,
            Method::POST,
            "/billing/payment-methods",
            &body,
            None,
        )
        .await?;
    if !answer.status.is_success() {
        let message = answer.message();
        let at = match answer.json()["error"]["code"].as_str() {
            Some("unknown_provider") => "provider",
            _ => field_of(&message, &["provider", "method", "token", "label"]),
        };
        let at = if at == "_form" { "token" } else { at };
        let form = refused("method", &form, at, message);
        return credits_refused(&web, &session, form).await;
    }
    Ok(Redirect::to("/app/credits?notice=method_added").into_response())
}

/// `POST /app/credits/plan`: subscribes to a plan, or changes to another
/// (an upgrade at once, a downgrade at the period's end).
async fn change_plan(
    State(web): State<Web>,
    session: Session,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    let plan = field(&form, "plan");
    if plan.is_empty() {
        let form = refused("plan", &form, "plan", "Choose a plan.".into());
        return credits_refused(&web, &session, form).await;
    }
    let subscribed = web.get(&session, "/billing/subscriptions").await?["subscription"].is_object();
    let key = format!("web-{}-{}", session.id, field(&form, "nonce"));
    let (method, uri) = match subscribed {
        true => (Method::PUT, "/billing/subscriptions/plan"),
        false => (Method::POST, "/billing/subscriptions"),
    };
    let answer = web
        .send(&session, method, uri, &json!({ "plan": plan }), Some(&key))
        .await?;
    if !answer.status.is_success() {
        let form = refused("plan", &form, "plan", answer.message());
        return credits_refused(&web, &session, form).await;
    }
    Ok(Redirect::to("/app/credits?notice=plan_changed").into_response())
}

// ---- usage, invoices, revenue ----

/// `GET /app/usage`: credits and units by plugin and day.
async fn usage(
    State(web): State<Web>,
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Page, PageError> {
    let range = query_string(&query, &["from", "to"]);
    let uri = match session.principal.role {
        Role::Operator => format!("/analytics/usage?{range}"),
        _ => format!("/usage?{range}"),
    };
    let answer = web
        .call(
            &session,
            Method::GET,
            &uri,
            HeaderMap::new(),
            axum::body::Body::empty(),
        )
        .await?;
    // A bad range is shown beside the filter, with the last 30 days.
    let (usage, filter_error) = match answer.status.is_success() {
        true => (answer.json(), Value::Null),
        false => {
            let default = match session.principal.role {
                Role::Operator => "/analytics/usage",
                _ => "/usage",
            };
            (web.get(&session, default).await?, answer.message().into())
        }
    };
    let chart = charts::usage_by_day(&usage);
    let page = context(
        &web,
        &session,
        "usage",
        json!({
            "usage": usage,
            "chart": chart,
            "filters": query,
            "filter_error": filter_error,
        }),
    );
    Ok(render("usage.html", page))
}

/// `GET /app/invoices`: invoices with their status and PDFs, payments
/// with their receipts, credit notes.
async fn invoices(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let page = context(
        &web,
        &session,
        "invoices",
        json!({
            "invoices": web.get(&session, "/billing/invoices?limit=100").await?["invoices"],
            "credit_notes": web.get(&session, "/billing/credit-notes?limit=100").await?["credit_notes"],
            "payments": web.get(&session, "/billing/payments").await?["payments"],
        }),
    );
    Ok(render("invoices.html", page))
}

/// `GET /app/revenue` (the operator): MRR and its movements, growth, ARPU,
/// LTV, churn, segments, payment methods, the forecast, top customers.
async fn revenue(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    operator_only(&session)?;
    let revenue = web.get(&session, "/billing/revenue").await?;
    let page = context(
        &web,
        &session,
        "revenue",
        json!({
            "mrr_chart": charts::mrr(&revenue),
            "forecast_chart": charts::forecast(&revenue),
            "revenue": revenue,
        }),
    );
    Ok(render("revenue.html", page))
}

// ---- leads ----

/// `GET /app/leads`: the lead book with search, filters and scores.
async fn leads(
    State(web): State<Web>,
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let filters = query_string(
        &query,
        &[
            "q",
            "tag",
            "score_min",
            "score_max",
            "do_not_contact",
            "sort",
            "cursor",
        ],
    );
    let answer = web
        .call(
            &session,
            Method::GET,
            &format!("/leads?limit=100&{filters}"),
            HeaderMap::new(),
            axum::body::Body::empty(),
        )
        .await?;
    let (leads, filter_error) = match answer.status.is_success() {
        true => (answer.json(), Value::Null),
        false => (json!({ "leads": [] }), answer.message().into()),
    };
    let page = context(
        &web,
        &session,
        "leads",
        json!({
            "leads": leads["leads"],
            "next_cursor": leads["next_cursor"],
            "filters": query,
            "filter_error": filter_error,
        }),
    );
    Ok(render("leads.html", page))
}

/// `GET /app/leads/import`: the CSV import, mapped and sent in chunks by
/// the page's script.
async fn import(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    tenant_only(&session)?;
    Ok(render(
        "import.html",
        context(&web, &session, "leads", json!({})),
    ))
}

/// `GET /app/leads/{id}`: a lead with its timeline.
async fn lead(
    State(web): State<Web>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let notice = query.get("notice").cloned().map(Value::from);
    lead_page(&web, &session, &id, notice.unwrap_or_default(), Value::Null)
        .await
        .map(|(_, page)| page)
}

async fn lead_page(
    web: &Web,
    session: &Session,
    id: &str,
    notice: Value,
    form: Value,
) -> Result<(StatusCode, Page), PageError> {
    let mut lead = web.get(session, &format!("/leads/{}", encode(id))).await?;
    lead["sequences"] = web.get(session, "/sequences").await?["sequences"].take();
    lead["notice"] = notice;
    let status = form_status(&form);
    lead["form"] = form;
    Ok((
        status,
        render("lead.html", context(web, session, "leads", lead)),
    ))
}

/// `POST /app/leads/{id}/enroll`: enrolls the lead in a sequence.
async fn enroll(
    State(web): State<Web>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    tenant_only(&session)?;
    let lead = path_id(&id, "lead")?;
    let refuse = |message: String| refused("enroll", &form, "sequence", message);
    let Ok(sequence) = field(&form, "sequence").parse::<i64>() else {
        let form = refuse("Choose a sequence.".into());
        let (status, page) = lead_page(&web, &session, &id, Value::Null, form).await?;
        return Ok((status, page).into_response());
    };
    let answer = web
        .send(
            &session,
            Method::POST,
            &format!("/sequences/{sequence}/enrollments"),
            &json!({ "leads": [lead] }),
            None,
        )
        .await?;
    if !answer.status.is_success() {
        let form = refuse(answer.message());
        let (status, page) = lead_page(&web, &session, &id, Value::Null, form).await?;
        return Ok((status, page).into_response());
    }
    Ok(Redirect::to(&format!("/app/leads/{lead}?notice=enrolled")).into_response())
}

/// A path segment as the user typed it, made safe to put in a URI.
fn encode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

// ---- sequences ----

async fn sequences(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let page = context(
        &web,
        &session,
        "sequences",
        json!({
            "sequences": web.get(&session, "/sequences").await?["sequences"],
            "mailboxes": web.get(&session, "/mailboxes").await?["mailboxes"],
        }),
    );
    Ok(render("sequences.html", page))
}

/// `GET /app/sequences/{id}`: the step editor, enrollments and results.
async fn sequence(
    State(web): State<Web>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let id = encode(&id);
    let sequence = web.get(&session, &format!("/sequences/{id}")).await?;
    let enrollments = web
        .get(&session, &format!("/sequences/{id}/enrollments?limit=100"))
        .await?;
    let page = context(
        &web,
        &session,
        "sequences",
        json!({
            "sequence": sequence["sequence"],
            "results": sequence["results"],
            "enrollments": enrollments["enrollments"],
            "sequence_json": sequence["sequence"].to_string(),
            "mailboxes": web.get(&session, "/mailboxes").await?["mailboxes"],
        }),
    );
    Ok(render("sequence.html", page))
}

/// `GET /app/sequences/new`: the step editor, empty.
async fn new_sequence(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    tenant_only(&session)?;
    let sequence = json!({
        "name": "",
        "status": "paused",
        "version": 0,
        "time_zone": "UTC",
        "window": {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
        "tracking": false,
        "steps": [],
    });
    let page = context(
        &web,
        &session,
        "sequences",
        json!({
            "sequence": sequence,
            "new": true,
            "results": [],
            "enrollments": [],
            "sequence_json": sequence.to_string(),
            "mailboxes": web.get(&session, "/mailboxes").await?["mailboxes"],
        }),
    );
    Ok(render("sequence.html", page))
}

// ---- pipelines ----

async fn pipelines(State(web): State<Web>, session: Session) -> Result<Response, PageError> {
    tenant_only(&session)?;
    let list = web.get(&session, "/pipelines").await?;
    let page = context(
        &web,
        &session,
        "pipelines",
        json!({ "pipelines": list["pipelines"] }),
    );
    Ok(render("pipelines.html", page).into_response())
}

/// `GET /app/pipelines/{id}`: the kanban board; dragging a deal moves it.
async fn board(
    State(web): State<Web>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Page, PageError> {
    tenant_only(&session)?;
    board_page(&web, &session, &id, Value::Null)
        .await
        .map(|(_, page)| page)
}

async fn board_page(
    web: &Web,
    session: &Session,
    id: &str,
    form: Value,
) -> Result<(StatusCode, Page), PageError> {
    let mut board = web
        .get(session, &format!("/pipelines/{}", encode(id)))
        .await?;
    let status = form_status(&form);
    board["form"] = form;
    Ok((
        status,
        render("board.html", context(web, session, "pipelines", board)),
    ))
}

/// `POST /app/pipelines/{id}/deals`: a new deal at the top of a stage.
async fn create_deal(
    State(web): State<Web>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, PageError> {
    check_csrf(&session, &form)?;
    tenant_only(&session)?;
    let pipeline = path_id(&id, "pipeline")?;
    let mut body = json!({ "pipeline": pipeline, "title": field(&form, "title") });
    for name in ["value", "currency", "owner"] {
        if !field(&form, name).is_empty() {
            body[name] = field(&form, name).into();
        }
    }
    if let Ok(stage) = field(&form, "stage").parse::<i64>() {
        body["stage"] = stage.into();
    }
    let answer = web
        .send(&session, Method::POST, "/deals", &body, None)
        .await?;
    if !answer.status.is_success() {
        let message = answer.message();
        let at = field_of(&message, &["title", "value", "currency", "owner", "stage"]);
        let at = if at == "_form" { "title" } else { at };
        let form = refused("deal", &form, at, message);
        let (status, page) = board_page(&web, &session, &id, form).await?;
        return Ok((status, page).into_response());
    }
    Ok(Redirect::to(&format!("/app/pipelines/{pipeline}")).into_response())
}

// ---- plugins ----

/// `GET /app/plugins`: installed plugins, their settings forms and use;
/// the operator installs and upgrades.
async fn plugins(State(web): State<Web>, session: Session) -> Result<Page, PageError> {
    let plugins = web.get(&session, "/plugins").await?;
    let usage = match session.principal.role {
        Role::Operator => web.get(&session, "/analytics/usage").await?,
        _ => web.get(&session, "/usage").await?,
    };
    let page = context(
        &web,
        &session,
        "plugins",
        json!({ "plugins": plugins["plugins"], "usage": usage }),
    );
    Ok(render("plugins.html", page))
}
