//! Managing the platform through `/api/v1`: tenants (operator), API keys
//! (operator, or a tenant's admin for its own), plugins (listed to all,
//! enabled by a tenant's admin), and credit grants (operator). Another
//! tenant's object is a 404, never a 403: its existence is not revealed.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::v1::{Caller, credits_json, read_body};
use crate::auth::{self, AuthError, Role};
use crate::ids::TenantId;
use crate::ledger::{Command, GrantSource, LedgerError, TransferId, queries};
use crate::plugins::{self, PluginError};
use crate::tenants::{self, TenantError};
use crate::units::{Clock as _, Credits, SystemClock, Timestamp};

impl Caller {
    pub(super) fn operator(self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::forbidden("this endpoint is the operator's")),
        }
    }

    /// The operator, or an admin of `tenant`; another tenant's key finds
    /// nothing there.
    pub(super) fn admin_of(self, tenant: TenantId) -> Result<(), ApiError> {
        match (self.0.role, self.0.tenant) {
            (Role::Operator, _) => Ok(()),
            (_, Some(own)) if own != tenant => Err(tenant_not_found(tenant)),
            (Role::Admin, Some(_)) => Ok(()),
            _ => Err(ApiError::forbidden(
                "this endpoint is for the tenant's admins",
            )),
        }
    }
}

fn tenant_not_found(tenant: TenantId) -> ApiError {
    ApiError::not_found(format!("no tenant {tenant}"))
}

/// Parses a JSON body, answering 400 `invalid_input` with the field at
/// fault.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let reason = match error.path().to_string().as_str() {
            "." => error.inner().to_string(),
            path => format!("{path}: {}", error.inner()),
        };
        ApiError::bad_request("invalid_input", reason)
    })
}

pub(super) fn tenant_error(error: TenantError) -> ApiError {
    match error {
        TenantError::NotFound(tenant) => tenant_not_found(tenant),
        TenantError::InvalidName | TenantError::InvalidEmail(..) => {
            ApiError::bad_request("invalid_input", error.to_string())
        }
        TenantError::NotAReseller(tenant) => ApiError::not_found(format!("no reseller {tenant}")),
        TenantError::SuspendedByOperator(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "suspended_by_operator",
            error.to_string(),
        ),
        TenantError::Ledger(LedgerError::NegativeCreditLimit(_)) => {
            ApiError::bad_request("invalid_input", error.to_string())
        }
        error => ApiError::internal(error),
    }
}

pub(super) fn tenant_json(tenant: &tenants::Tenant) -> serde_json::Value {
    serde_json::json!({
        "id": tenant.id.0,
        "name": tenant.name,
        "parent": tenant.parent.map(|parent| parent.0),
        "kind": tenant.kind.as_str(),
        "created_at": tenant.created_at.to_string(),
        "suspended_at": tenant.suspended_at.map(|at| at.to_string()),
        "suspended_by": tenant.suspended_by.map(|by| by.as_str()),
        "email": tenant.email,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    credit_limit: Option<String>,
    #[serde(default)]
    parent: Option<i64>,
}

/// `POST /tenants` (operator): a tenant and its credit wallet.
pub(super) async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: NewTenant = json_body(&body)?;
    let credit_limit = match &new.credit_limit {
        None => Credits::ZERO,
        Some(text) => Credits::parse(text).map_err(|error| {
            ApiError::bad_request("invalid_input", format!("credit_limit: {error}"))
        })?,
    };
    let tenant = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(tenants::create(
                conn,
                &new.name,
                new.parent.map(TenantId),
                credit_limit,
                SystemClock.now(),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(tenant_error)?
        .0;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))).into_response())
}

/// `GET /tenants?after=&limit=` (operator).
pub(super) async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.operator()?;
    super::v1::params(&query, &["after", "limit"])?;
    let limit = super::v1::limit_param(&query, tenants::TENANTS_PAGE_MAX as i64)?;
    let after = super::resellers::after_param(&query)?;
    let page = state
        .database
        .run(move |conn| tenants::list(conn, after, limit as usize).map_err(anyhow::Error::from))
        .await
        .map_err(ApiError::internal)?;
    let next = (page.len() as i64 == limit).then(|| page.last().map(|tenant| tenant.id.0));
    Ok(Json(serde_json::json!({
        "tenants": page.iter().map(tenant_json).collect::<Vec<_>>(),
        "next_cursor": next.flatten().map(|id| id.to_string()),
    })))
}

fn key_json(key: &auth::ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "tenant": key.tenant.map(|tenant| tenant.0),
        "role": key.role.as_str(),
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.to_string(),
        "revoked_at": key.revoked_at.map(|at| at.to_string()),
    })
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Tenant(error) => tenant_error(error),
        AuthError::NotFound(id) => ApiError::not_found(format!("no API key {id}")),
        AuthError::InvalidName | AuthError::TenantMismatch => {
            ApiError::bad_request("invalid_input", error.to_string())
        }
        error => ApiError::internal(error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    role: String,
    name: String,
}

/// `POST /tenants/{tenant}/keys` (operator, or the tenant's admin): a key,
/// shown in this answer only.
pub(super) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<i64>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = TenantId(tenant);
    super::resellers::manages_keys(&state, caller, tenant).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: NewKey = json_body(&body)?;
    let role = match Role::parse(&new.role) {
        Some(role @ (Role::Admin | Role::Member | Role::Reseller)) => role,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_input",
                format!(
                    "role: {:?} is not admin or member (or reseller, for a reseller)",
                    new.role
                ),
            ));
        }
    };
    let (key, secret) = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(auth::create_key(
                conn,
                Some(tenant),
                role,
                &new.name,
                SystemClock.now(),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(auth_error)?;
    let mut answer = key_json(&key);
    answer["key"] = secret.into();
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /tenants/{tenant}/keys` (operator, or the tenant's admin).
pub(super) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = TenantId(tenant);
    super::resellers::manages_keys(&state, caller, tenant).await?;
    let keys = state
        .database
        .run(move |conn| {
            tenants::find(conn, tenant)?;
            Ok::<_, anyhow::Error>(auth::list_keys(conn, Some(tenant)))
        })
        .await
        .map_err(|error| match error.downcast::<TenantError>() {
            Ok(error) => tenant_error(error),
            Err(error) => ApiError::internal(error),
        })?
        .map_err(auth_error)?;
    Ok(Json(serde_json::json!({
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
    })))
}

/// The latest system emails a contact answer shows.
const CONTACT_EMAILS_SHOWN: i64 = 20;

/// `errors`: whether the SMTP server's words are shown (to the operator
/// and the reseller; a tenant sees only what became of each email).
fn contact_json(
    tenant: &tenants::Tenant,
    emails: &[crate::mail::Outgoing],
    errors: bool,
) -> serde_json::Value {
    let at = |micros: i64| Timestamp::from_micros(micros).to_string();
    serde_json::json!({
        "tenant": tenant.id.0,
        "email": tenant.email,
        "emails": emails.iter().map(|email| serde_json::json!({
            "id": email.id,
            "topic": email.topic,
            "subject_id": email.subject_id,
            "recipient": email.recipient,
            "state": email.state,
            "attempts": email.attempts,
            "last_error": if errors { email.last_error.clone() } else { None },
            "created_at": at(email.created_at),
            "sent_at": email.sent_at.map(at),
        })).collect::<Vec<_>>(),
    })
}

/// `GET /tenants/{tenant}/contact` and `PUT` with `{"email": ...}` (or
/// `null` to stop them): where the tenant's system emails go, and the
/// latest of them with what became of each. The operator, the tenant's
/// admin, or its reseller (a reseller for itself too).
pub(super) async fn get_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = TenantId(tenant);
    super::resellers::manages_keys(&state, caller, tenant).await?;
    contact(state, caller, tenant, None).await
}

pub(super) async fn put_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<i64>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = TenantId(tenant);
    super::resellers::manages_keys(&state, caller, tenant).await?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: serde_json::Value = json_body(&body)?;
    let invalid = || {
        ApiError::bad_request(
            "invalid_input",
            r#"give {"email": "billing@example.com"}, or {"email": null} for no system emails"#,
        )
    };
    let fields = new.as_object().ok_or_else(invalid)?;
    let email = match (fields.len(), fields.get("email")) {
        (1, Some(serde_json::Value::String(email))) => Some(email.clone()),
        (1, Some(serde_json::Value::Null)) => None,
        _ => return Err(invalid()),
    };
    contact(state, caller, tenant, Some(email)).await
}

/// The tenant's contact, set first to `new` (an address or none) if given.
async fn contact(
    state: AppState,
    caller: Caller,
    tenant: TenantId,
    new: Option<Option<String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let errors = matches!(caller.0.role, Role::Operator | Role::Reseller);
    let (found, emails) = state
        .database
        .run(move |conn| {
            let found = match new {
                Some(new) => tenants::set_email(conn, tenant, new.as_deref()),
                None => tenants::find(conn, tenant),
            };
            let emails = crate::mail::list(conn, tenant, CONTACT_EMAILS_SHOWN)?;
            Ok::<_, anyhow::Error>((found, emails))
        })
        .await
        .map_err(ApiError::internal)?;
    let found = found.map_err(tenant_error)?;
    Ok(Json(contact_json(&found, &emails, errors)))
}

/// `DELETE /tenants/{tenant}/keys/{key}` (operator, or the tenant's admin).
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(i64, i64)>,
) -> Result<Response, ApiError> {
    let tenant = TenantId(tenant);
    super::resellers::manages_keys(&state, caller, tenant).await?;
    state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(auth::revoke_key(conn, Some(tenant), id, SystemClock.now()))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(auth_error)?;
    state.forget_cached();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /plugins`: the installed plugins, what settings each takes, and
/// whether the caller's tenant has enabled it.
pub(super) async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.0.tenant;
    let plugins = state
        .database
        .run(move |conn| {
            // A reseller's tenant sees the platform's plugins as its
            // reseller's: under the reseller's brand.
            let brand = match tenant {
                Some(tenant) => crate::branding::of_tenant(conn, tenant)?
                    .filter(|(reseller, _)| *reseller != tenant)
                    .map(|(_, brand)| brand.name),
                None => None,
            };
            let parent = match tenant {
                Some(tenant) => crate::tenants::find(conn, tenant)?.parent,
                None => None,
            };
            let mut answer = Vec::new();
            for version in plugins::list(conn)?
                .into_iter()
                .filter(|version| version.active)
            {
                // A reseller's own plugin exists for it and its tenants alone.
                if let Some(tenant) = tenant
                    && !plugins::usable(version.owner, tenant, parent)
                {
                    continue;
                }
                let manifest = plugins::active_manifest(conn, &version.name)?;
                let enabled = match tenant {
                    Some(tenant) => plugins::is_enabled(conn, tenant, &version.name)?,
                    None => false,
                };
                // The tenant's settings, secrets only as "set".
                let stored = match tenant {
                    Some(tenant) => plugins::stored_settings(conn, tenant, &version.name)?,
                    None => None,
                }
                .unwrap_or_default();
                let setting = |spec: &plugins::SettingSpec| {
                    let value = stored.get(&spec.name);
                    serde_json::json!({
                        "name": spec.name,
                        "description": spec.description,
                        "required": spec.required,
                        "secret": spec.secret,
                        "value": if spec.secret { None } else { value },
                        "set": value.is_some(),
                    })
                };
                answer.push(serde_json::json!({
                    "name": version.name,
                    "version": version.version,
                    "kind": version.kind,
                    "api_version": version.api_version,
                    "description": manifest.description,
                    "author": match (&brand, version.owner) {
                        (Some(brand), None) => brand.clone(),
                        _ => manifest.author.clone(),
                    },
                    "settings": manifest.settings.iter().map(setting).collect::<Vec<_>>(),
                    "enabled": enabled,
                    "reseller": version.owner.map(|owner| owner.0),
                }));
            }
            anyhow::Ok(answer)
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "plugins": plugins })))
}

fn plugin_error(error: PluginError) -> ApiError {
    match error {
        PluginError::NotInstalled(name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!("no plugin {name:?} is installed"),
        ),
        PluginError::MissingSetting { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_setting",
            error.to_string(),
        ),
        PluginError::UnknownSetting { .. } | PluginError::SettingTooLong(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_setting",
            error.to_string(),
        ),
        error => ApiError::internal(error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enablement {
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

/// `PUT /plugins/{plugin}/enablement` (a tenant admin): enables the plugin
/// for the tenant with its settings, replacing earlier ones. Secret
/// settings are stored sealed and never shown again.
pub(super) async fn enable_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(plugin): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let body = read_body(body, state.body_bytes_max).await?;
    let enablement: Enablement = json_body(&body)?;
    let secrets = state.secrets.clone();
    let name = plugin.clone();
    state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(plugins::enable(
                conn,
                &secrets,
                tenant,
                &name,
                &enablement.settings,
                SystemClock.now(),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(plugin_error)?;
    state.forget_cached();
    Ok(Json(
        serde_json::json!({ "plugin": plugin, "enabled": true }),
    ))
}

/// `DELETE /plugins/{plugin}/enablement` (a tenant admin): disables it; its
/// settings are kept for enabling again.
pub(super) async fn disable_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(plugin): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_admin()?;
    let name = plugin.clone();
    let was_enabled = state
        .database
        .run(move |conn| {
            Ok::<_, anyhow::Error>(plugins::disable(conn, tenant, &name, SystemClock.now()))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(plugin_error)?;
    state.forget_cached();
    if !was_enabled {
        return Err(ApiError::not_found(format!(
            "plugin {plugin:?} is not enabled for this tenant"
        )));
    }
    Ok(Json(
        serde_json::json!({ "plugin": plugin, "enabled": false }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    tenant: i64,
    amount: String,
    source: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    memo: String,
}

/// `POST /billing/credits/grants` (operator): credits for a tenant. The
/// `Idempotency-Key` (required) is the grant's transfer id, so a retry
/// grants once, and the key with another grant is refused.
pub(super) async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let key = super::v1::idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "a grant moves credits: send an Idempotency-Key, and the same one on a retry",
        )
    })?;
    let body = read_body(body, state.body_bytes_max).await?;
    let new: NewGrant = json_body(&body)?;
    let invalid = |reason: String| ApiError::bad_request("invalid_input", reason);
    let amount =
        Credits::parse(&new.amount).map_err(|error| invalid(format!("amount: {error}")))?;
    let source = GrantSource::parse(&new.source).ok_or_else(|| {
        invalid(format!(
            "source: {:?} is not allowance, purchase, promotion or adjustment",
            new.source
        ))
    })?;
    let expires_at = new
        .expires_at
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .ok_or_else(|| invalid(format!("expires_at: {text:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let id = TransferId::new(format!("grant:{key}"))
        .map_err(|error| invalid(format!("Idempotency-Key: {error}")))?;
    let tenant = TenantId(new.tenant);
    let wallet = state
        .database
        .run(move |conn| Ok::<_, anyhow::Error>(queries::wallet_of(conn, tenant)))
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| tenant_not_found(tenant))?;
    let receipt = state
        .ledger
        .submit(Command::Grant {
            id,
            account: wallet,
            source,
            amount,
            expires_at,
            priority: None,
            memo: new.memo,
        })
        .await
        .map_err(|error| match error {
            LedgerError::TransferIdConflict(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different grant; use a new key",
            ),
            LedgerError::Database(_) | LedgerError::Unavailable => ApiError::internal(error),
            error => invalid(error.to_string()),
        })?;
    let status = match receipt.replayed {
        true => StatusCode::OK,
        false => StatusCode::CREATED,
    };
    Ok((
        status,
        Json(serde_json::json!({
            "id": receipt.transfer.id.as_str(),
            "tenant": tenant.0,
            "amount": credits_json(receipt.transfer.amount),
            "source": source.as_str(),
            "expires_at": expires_at.map(|at| at.to_string()),
            "replayed": receipt.replayed,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPlugin {
    /// The `plugin.toml`, as text.
    pub(super) manifest: String,
    /// The component, base64-encoded.
    pub(super) wasm_base64: String,
    /// The HTTP hosts of the manifest the operator approves.
    #[serde(default)]
    approved_hosts: Vec<String>,
}

/// Largest install request: a component of the largest size, base64-encoded,
/// with its manifest.
pub(super) const INSTALL_BODY_BYTES_MAX: usize = plugins::WASM_BYTES_MAX / 3 * 4 + (128 << 10);

pub(super) fn install_error(error: PluginError) -> ApiError {
    let code = match &error {
        PluginError::Manifest(_) => "invalid_manifest",
        PluginError::UnsupportedApiVersion { .. } => "unsupported_api_version",
        PluginError::Load(crate::runtime::LoadError::NotAComponent { .. }) => "not_a_component",
        PluginError::Load(crate::runtime::LoadError::WrongWorld { .. })
        | PluginError::KindMismatch { .. }
        | PluginError::NoWorld { .. } => "wrong_world",
        PluginError::ApiVersionMismatch { .. } => "api_version_mismatch",
        PluginError::HostNotApproved { .. } => "host_not_approved",
        PluginError::KindNotApproved { .. } => "kind_not_approved",
        PluginError::KindNotResold(_) => "invalid_input",
        PluginError::TooLarge { .. } => "too_large",
        PluginError::NotNewer { .. } => "not_newer",
        PluginError::NotInstalled(_) => {
            return ApiError::new(StatusCode::NOT_FOUND, "unknown_plugin", error.to_string());
        }
        PluginError::AlreadyInstalled(_) | PluginError::VersionConflict { .. } => {
            return ApiError::new(StatusCode::CONFLICT, "plugin_conflict", error.to_string());
        }
        _ => return ApiError::internal(error),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, error.to_string())
}

/// `POST /plugins` (operator): checks a plugin and installs it;
/// `POST /plugins/{plugin}/versions` installs a newer version of an
/// installed one, which serves new calls while running calls finish on the
/// old one.
async fn install_or_upgrade(
    state: AppState,
    caller: Caller,
    body: Body,
    upgrade: Option<String>,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    caller.operator()?;
    let body = read_body(body, INSTALL_BODY_BYTES_MAX).await?;
    let new: NewPlugin = json_body(&body)?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(new.wasm_base64.as_bytes())
        .map_err(|error| ApiError::bad_request("invalid_input", format!("wasm_base64: {error}")))?;
    if let Some(name) = &upgrade {
        let manifest = plugins::Manifest::parse(&new.manifest).map_err(install_error)?;
        if manifest.name != *name {
            return Err(ApiError::bad_request(
                "invalid_input",
                format!("the manifest is plugin {:?}, not {name:?}", manifest.name),
            ));
        }
    }
    let meter = state.meter.clone();
    let database = state.database.clone();
    // Checking compiles the component: work for a blocking thread.
    let installed = tokio::task::spawn_blocking(move || {
        let mut conn = database.get().map_err(ApiError::internal)?;
        let runtime = meter.registry().runtime();
        let now = SystemClock.now();
        let result = match upgrade {
            None => plugins::install(
                &mut conn,
                runtime,
                &new.manifest,
                &wasm,
                &new.approved_hosts,
                now,
            ),
            Some(_) => plugins::upgrade(
                &mut conn,
                runtime,
                &new.manifest,
                &wasm,
                &new.approved_hosts,
                now,
            ),
        };
        result.map_err(install_error)
    })
    .await
    .map_err(ApiError::internal)??;
    state.forget_cached();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "name": installed.name,
            "version": installed.version,
            "kind": installed.kind,
            "api_version": installed.api_version,
            "wasm_sha256": installed.wasm_sha256,
        })),
    )
        .into_response())
}

pub(super) async fn install_plugin(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    install_or_upgrade(state, caller, body, None).await
}

pub(super) async fn upgrade_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(plugin): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    install_or_upgrade(state, caller, body, Some(plugin)).await
}
