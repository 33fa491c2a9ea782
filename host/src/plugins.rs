//! Plugins as the operator manages them: manifests (`plugin.toml`), the
//! checks a plugin must pass to be installed, installed versions kept in the
//! database (so every host can load them), and each tenant's enablement with
//! its settings.
//!
//! What runs a plugin is `runtime`; what a call costs is metering's. This
//! module decides which plugin versions exist and who may use them.

pub mod kv;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use serde::Deserialize;
use sha2::Digest as _;

use crate::db::DbConnection;
use crate::db::schema::{plugin_enablements, plugin_versions, plugins};
use crate::ids::TenantId;
use crate::runtime::{self, Limits, LoadError, LoadedPlugin, PluginKind, Runtime};
use crate::secrets::SecretBox;
use crate::units::Timestamp;

/// The manifest's file name, beside the component.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Largest component the host accepts.
pub const WASM_BYTES_MAX: usize = 32 << 20;

/// Largest manifest.
const MANIFEST_BYTES_MAX: usize = 64 << 10;

/// Most settings a manifest may declare, and their sizes.
const SETTINGS_MAX: usize = 64;
const SETTING_VALUE_BYTES_MAX: usize = 8 << 10;

/// Most HTTP hosts a manifest may declare.
const HTTP_HOSTS_MAX: usize = 32;

/// Plugin names are ids: short, stable, lower case.
const NAME_BYTES_MAX: usize = 64;

/// A plugin's manifest, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: semver::Version,
    pub kind: PluginKind,
    /// The WIT version it was built against: `0.1`.
    pub api_version: String,
    pub description: String,
    pub author: String,
    /// Hosts it may send HTTP requests to, once the operator approves them.
    pub http_hosts: Vec<String>,
    pub settings: Vec<SettingSpec>,
    /// What it asks for; the host caps each at its own maximum.
    pub limits: Limits,
}

/// A setting a tenant supplies when enabling the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Enabling refuses a tenant that leaves it out.
    #[serde(default)]
    pub required: bool,
    /// Never shown back once set (an API key, a password).
    #[serde(default)]
    pub secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    kind: String,
    api_version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    settings: Vec<SettingSpec>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    http_hosts: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    memory_bytes: Option<usize>,
    timeout_ms: Option<u64>,
    output_bytes: Option<usize>,
}

/// Why a plugin could not be installed (or enabled). Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{MANIFEST_FILE}: {0}")]
    Manifest(String),
    #[error(
        "plugin {name} was built against API {api_version}; this host runs {}",
        runtime::API_VERSIONS.join(", ")
    )]
    UnsupportedApiVersion { name: String, api_version: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "plugin {plugin}: the manifest says {manifest}, but the component is a {component} plugin"
    )]
    KindMismatch {
        plugin: String,
        manifest: PluginKind,
        component: PluginKind,
    },
    #[error(
        "plugin {plugin}: the component implements none of the plugin worlds (lead-source, channel, payment-provider, pricing-rule); build it with tollgate-plugin-sdk"
    )]
    NoWorld { plugin: String },
    #[error(
        "plugin {name}: the manifest says API {manifest}, but the component imports API {component}; rebuild it or fix api_version"
    )]
    ApiVersionMismatch {
        name: String,
        manifest: String,
        component: String,
    },
    #[error(
        "plugin {name} declares HTTP host {host:?}, which the operator did not approve (approve it with --allow-host {host})"
    )]
    HostNotApproved { name: String, host: String },
    #[error(
        "plugin {name} is a {kind} plugin; the operator approved this reseller's plugins of {approved} only"
    )]
    KindNotApproved {
        name: String,
        kind: PluginKind,
        approved: String,
    },
    #[error("a reseller's plugins may be lead sources or channels, not {0} plugins")]
    KindNotResold(PluginKind),
    #[error("the component is {size} bytes; at most {WASM_BYTES_MAX} are accepted")]
    TooLarge { size: usize },
    #[error(
        "plugin {name} {version} is already installed with different contents; give the new build a new version"
    )]
    VersionConflict { name: String, version: String },
    #[error(
        "plugin {0} is installed already; install the new version with `tollgate plugin upgrade`"
    )]
    AlreadyInstalled(String),
    #[error("plugin {0} is not installed")]
    NotInstalled(String),
    #[error("plugin {name} {version} is not newer than the active version {active}")]
    NotNewer {
        name: String,
        version: String,
        active: String,
    },
    #[error("plugin {plugin} needs the setting {setting:?}: {description}")]
    MissingSetting {
        plugin: String,
        setting: String,
        description: String,
    },
    #[error("plugin {plugin} has no setting {setting:?}; it takes {}", .known.join(", "))]
    UnknownSetting {
        plugin: String,
        setting: String,
        known: Vec<String>,
    },
    #[error("setting {0:?} is longer than {SETTING_VALUE_BYTES_MAX} bytes")]
    SettingTooLong(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, PluginError> {
        let invalid = |message: String| PluginError::Manifest(message);
        if text.len() > MANIFEST_BYTES_MAX {
            return Err(invalid(format!("longer than {MANIFEST_BYTES_MAX} bytes")));
        }
        let deserializer =
            toml::Deserializer::parse(text).map_err(|error| invalid(error.to_string()))?;
        let raw: RawManifest = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| invalid(format!("{}: {}", error.path(), error.inner())))?;
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= NAME_BYTES_MAX
            && raw
                .name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !name_ok {
            return Err(invalid(format!(
                "name: {:?} is not a plugin name: use 1 to {NAME_BYTES_MAX} of a-z, 0-9 and -",
                raw.name
            )));
        }
        let version = semver::Version::parse(&raw.version).map_err(|error| {
            invalid(format!(
                "version: {:?} is not a semantic version: {error}",
                raw.version
            ))
        })?;
        let kind = PluginKind::parse(&raw.kind).ok_or_else(|| {
            invalid(format!(
                "kind: {:?} is not lead-source, channel, payment-provider or pricing-rule",
                raw.kind
            ))
        })?;
        if !runtime::API_VERSIONS.contains(&raw.api_version.as_str()) {
            return Err(PluginError::UnsupportedApiVersion {
                name: raw.name,
                api_version: raw.api_version,
            });
        }
        let http_hosts = raw.capabilities.http_hosts;
        if http_hosts.len() > HTTP_HOSTS_MAX {
            return Err(invalid(format!(
                "capabilities.http_hosts: more than {HTTP_HOSTS_MAX}"
            )));
        }
        if let Some(host) = http_hosts.iter().find(|host| !valid_host(host)) {
            return Err(invalid(format!(
                "capabilities.http_hosts: {host:?} is not a host name (with an optional :port) or *"
            )));
        }
        if raw.settings.len() > SETTINGS_MAX {
            return Err(invalid(format!("settings: more than {SETTINGS_MAX}")));
        }
        let mut names = std::collections::HashSet::new();
        for setting in &raw.settings {
            if setting.name.is_empty() || !names.insert(setting.name.as_str()) {
                return Err(invalid(format!(
                    "settings: {:?} is empty or declared twice",
                    setting.name
                )));
            }
        }
        let limits = Limits {
            fuel: raw.limits.fuel.unwrap_or(Limits::DEFAULT.fuel),
            memory_bytes: raw
                .limits
                .memory_bytes
                .unwrap_or(Limits::DEFAULT.memory_bytes),
            timeout: raw
                .limits
                .timeout_ms
                .map_or(Limits::DEFAULT.timeout, Duration::from_millis),
            output_bytes: raw
                .limits
                .output_bytes
                .unwrap_or(Limits::DEFAULT.output_bytes),
        };
        Ok(Manifest {
            name: raw.name,
            version,
            kind,
            api_version: raw.api_version,
            description: raw.description,
            author: raw.author,
            http_hosts,
            settings: raw.settings,
            limits,
        })
    }
}

fn valid_host(host: &str) -> bool {
    // Any public host the tenant names; see `runtime::outbound`.
    if host == "*" {
        return true;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
    name_ok && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

/// Checks a plugin as install does, without storing anything: the manifest,
/// the component, that the component is of the manifest's kind and API
/// version, and that the operator approved every host it may reach.
pub fn check(
    runtime: &Runtime,
    manifest_text: &str,
    wasm: &[u8],
    approved_hosts: &[String],
) -> Result<(Manifest, LoadedPlugin), PluginError> {
    let manifest = Manifest::parse(manifest_text)?;
    if wasm.len() > WASM_BYTES_MAX {
        return Err(PluginError::TooLarge { size: wasm.len() });
    }
    let version = manifest.version.to_string();
    let loaded = match runtime.load(
        &manifest.name,
        &version,
        manifest.kind,
        wasm,
        manifest.limits,
    ) {
        Ok(loaded) => loaded,
        Err(LoadError::WrongWorld { plugin, kind, .. }) => {
            // Say what the component is, if it is any kind of plugin at all.
            let actual = PluginKind::ALL.into_iter().find(|other| {
                *other != kind
                    && runtime
                        .load(&manifest.name, &version, *other, wasm, manifest.limits)
                        .is_ok()
            });
            return Err(match actual {
                Some(actual) => PluginError::KindMismatch {
                    plugin,
                    manifest: kind,
                    component: actual,
                },
                None => PluginError::NoWorld { plugin },
            });
        }
        Err(error) => return Err(error.into()),
    };
    if let Some(component) = &loaded.api_version
        && *component != manifest.api_version
    {
        return Err(PluginError::ApiVersionMismatch {
            name: manifest.name,
            manifest: manifest.api_version,
            component: component.clone(),
        });
    }
    if let Some(host) = manifest.http_hosts.iter().find(|host| {
        !approved_hosts
            .iter()
            .any(|approved| approved.eq_ignore_ascii_case(host))
    }) {
        return Err(PluginError::HostNotApproved {
            name: manifest.name.clone(),
            host: host.clone(),
        });
    }
    Ok((manifest, loaded))
}

/// An installed plugin version, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledVersion {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub api_version: String,
    pub wasm_sha256: String,
    pub active: bool,
    /// The reseller whose own plugin it is; `None`: the platform's.
    pub owner: Option<TenantId>,
}

/// Installs a plugin that is not installed yet. Installing the same
/// version with the same component again changes nothing.
pub fn install(
    conn: &mut DbConnection,
    runtime: &Runtime,
    manifest_text: &str,
    wasm: &[u8],
    approved_hosts: &[String],
    now: Timestamp,
) -> Result<InstalledVersion, PluginError> {
    install_owned(
        conn,
        runtime,
        manifest_text,
        wasm,
        approved_hosts,
        None,
        now,
    )
}

/// [`install`] for the platform (`owner` `None`) or as one reseller's own
/// plugin.
fn install_owned(
    conn: &mut DbConnection,
    runtime: &Runtime,
    manifest_text: &str,
    wasm: &[u8],
    approved_hosts: &[String],
    owner: Option<TenantId>,
    now: Timestamp,
) -> Result<InstalledVersion, PluginError> {
    let (manifest, _) = check(runtime, manifest_text, wasm, approved_hosts)?;
    let digest = sha256_hex(wasm);
    let version = manifest.version.to_string();
    crate::db::write_transaction(conn, |conn| {
        let existing = active_version(conn, &manifest.name)?
            .map(|active| (active.version, active.wasm_sha256, active.owner));
        match existing {
            Some((.., installed_by)) if installed_by != owner => {
                return Err(PluginError::AlreadyInstalled(manifest.name.clone()));
            }
            Some((active, active_digest, _)) if active == version && active_digest == digest => {}
            Some((active, ..)) if active == version => {
                return Err(PluginError::VersionConflict {
                    name: manifest.name.clone(),
                    version: version.clone(),
                });
            }
            Some(_) => return Err(PluginError::AlreadyInstalled(manifest.name.clone())),
            None => {
                store_version(
                    conn,
                    &manifest,
                    manifest_text,
                    wasm,
                    &digest,
                    approved_hosts,
                    now,
                )?;
                diesel::insert_into(plugins::table)
                    .values((
                        plugins::name.eq(&manifest.name),
                        plugins::active_version.eq(&version),
                        plugins::updated_at.eq(now.micros()),
                        plugins::reseller_id.eq(owner.map(|owner| owner.0)),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(InstalledVersion {
            name: manifest.name.clone(),
            version: version.clone(),
            kind: manifest.kind.as_str().to_owned(),
            api_version: manifest.api_version.clone(),
            wasm_sha256: digest.clone(),
            active: true,
            owner,
        })
    })
}

/// Keeps a version's component and manifest. A version stored before (and
/// since removed) may come back only with the same component.
fn store_version(
    conn: &mut DbConnection,
    manifest: &Manifest,
    manifest_text: &str,
    wasm: &[u8],
    digest: &str,
    approved_hosts: &[String],
    now: Timestamp,
) -> Result<(), PluginError> {
    let version = manifest.version.to_string();
    let stored: Option<String> = plugin_versions::table
        .find((&manifest.name, &version))
        .select(plugin_versions::wasm_sha256)
        .first(conn)
        .optional()?;
    match stored {
        Some(stored) if stored == digest => Ok(()),
        Some(_) => Err(PluginError::VersionConflict {
            name: manifest.name.clone(),
            version,
        }),
        None => {
            diesel::insert_into(plugin_versions::table)
                .values((
                    plugin_versions::name.eq(&manifest.name),
                    plugin_versions::version.eq(&version),
                    plugin_versions::kind.eq(manifest.kind.as_str()),
                    plugin_versions::api_version.eq(&manifest.api_version),
                    plugin_versions::manifest.eq(manifest_text),
                    plugin_versions::wasm.eq(wasm),
                    plugin_versions::wasm_sha256.eq(digest),
                    plugin_versions::approved_hosts.eq(approved_hosts.join("\n")),
                    plugin_versions::installed_at.eq(now.micros()),
                ))
                .execute(conn)?;
            Ok(())
        }
    }
}

/// Installs a newer version of an installed plugin and makes it the one
/// that serves new calls. Calls already running finish on the old version.
pub fn upgrade(
    conn: &mut DbConnection,
    runtime: &Runtime,
    manifest_text: &str,
    wasm: &[u8],
    approved_hosts: &[String],
    now: Timestamp,
) -> Result<InstalledVersion, PluginError> {
    let (manifest, _) = check(runtime, manifest_text, wasm, approved_hosts)?;
    let current = active_manifest(conn, &manifest.name)?;
    let owner = owner(conn, &manifest.name)?;
    if current.kind != manifest.kind {
        return Err(PluginError::Manifest(format!(
            "kind: {} cannot replace a {} plugin",
            manifest.kind, current.kind
        )));
    }
    if manifest.version <= current.version {
        return Err(PluginError::NotNewer {
            name: manifest.name,
            version: manifest.version.to_string(),
            active: current.version.to_string(),
        });
    }
    let digest = sha256_hex(wasm);
    let version = manifest.version.to_string();
    crate::db::write_transaction(conn, |conn| {
        store_version(
            conn,
            &manifest,
            manifest_text,
            wasm,
            &digest,
            approved_hosts,
            now,
        )?;
        diesel::update(plugins::table.find(&manifest.name))
            .set((
                plugins::active_version.eq(&version),
                plugins::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
        Ok::<(), PluginError>(())
    })?;
    Ok(InstalledVersion {
        name: manifest.name,
        version,
        kind: manifest.kind.as_str().to_owned(),
        api_version: manifest.api_version,
        wasm_sha256: digest,
        active: true,
        owner,
    })
}

/// Which reseller's own plugin `name` is; `None`: the platform's.
pub fn owner(conn: &mut DbConnection, name: &str) -> Result<Option<TenantId>, PluginError> {
    let owner: Option<Option<i64>> = plugins::table
        .find(name)
        .select(plugins::reseller_id)
        .first(conn)
        .optional()?;
    owner
        .map(|owner| owner.map(TenantId))
        .ok_or_else(|| PluginError::NotInstalled(name.to_owned()))
}

/// Whether `tenant` may see and use a plugin `owner` installed: everyone
/// may use the platform's; a reseller's own, only it and its tenants.
pub fn usable_by(
    conn: &mut DbConnection,
    tenant: TenantId,
    owner: Option<TenantId>,
) -> Result<bool, PluginError> {
    if owner.is_none_or(|owner| owner == tenant) {
        return Ok(true);
    }
    let parent: Option<Option<i64>> = crate::db::schema::tenants::table
        .find(tenant.0)
        .select(crate::db::schema::tenants::parent_tenant_id)
        .first(conn)
        .optional()?;
    Ok(usable(owner, tenant, parent.flatten().map(TenantId)))
}

/// [`usable_by`] for a tenant whose reseller (`parent`) is known.
pub fn usable(owner: Option<TenantId>, tenant: TenantId, parent: Option<TenantId>) -> bool {
    owner.is_none_or(|owner| owner == tenant || Some(owner) == parent)
}

/// What the operator approved for one reseller's own plugins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approval {
    pub kinds: Vec<PluginKind>,
    pub http_hosts: Vec<String>,
}

/// The kinds a reseller's plugin may be: a payment provider or a pricing
/// rule is the platform's alone.
pub const RESOLD_KINDS: [PluginKind; 2] = [PluginKind::LeadSource, PluginKind::Channel];

/// What the operator approved for `reseller`'s plugins; nothing until it
/// approves something.
pub fn approval(conn: &mut DbConnection, reseller: TenantId) -> Result<Approval, PluginError> {
    use crate::db::schema::reseller_approvals;
    let row: Option<(String, String)> = reseller_approvals::table
        .find(reseller.0)
        .select((reseller_approvals::kinds, reseller_approvals::http_hosts))
        .first(conn)
        .optional()?;
    let Some((kinds, hosts)) = row else {
        return Ok(Approval::default());
    };
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(Approval {
        kinds: lines(&kinds)
            .iter()
            .filter_map(|kind| {
                RESOLD_KINDS
                    .into_iter()
                    .find(|known| known.as_str() == kind)
            })
            .collect(),
        http_hosts: lines(&hosts),
    })
}

/// Replaces what the operator approved for `reseller`'s plugins. Kinds
/// must be lead sources or channels; hosts, host names (with an optional
/// port). Plugins already installed keep the hosts they were approved.
pub fn set_approval(
    conn: &mut DbConnection,
    reseller: TenantId,
    approval: &Approval,
    now: Timestamp,
) -> Result<(), PluginError> {
    use crate::db::schema::reseller_approvals;
    if let Some(kind) = approval
        .kinds
        .iter()
        .find(|kind| !RESOLD_KINDS.contains(kind))
    {
        return Err(PluginError::KindNotResold(*kind));
    }
    if approval.http_hosts.len() > HTTP_HOSTS_MAX {
        return Err(PluginError::Manifest(format!(
            "http_hosts: more than {HTTP_HOSTS_MAX}"
        )));
    }
    if let Some(host) = approval
        .http_hosts
        .iter()
        .find(|host| host.as_str() == "*" || !valid_host(host))
    {
        return Err(PluginError::Manifest(format!(
            "http_hosts: {host:?} is not a host name (with an optional :port)"
        )));
    }
    let kinds: Vec<&str> = approval.kinds.iter().map(|kind| kind.as_str()).collect();
    let values = (
        reseller_approvals::kinds.eq(kinds.join("\n")),
        reseller_approvals::http_hosts.eq(approval.http_hosts.join("\n")),
        reseller_approvals::updated_at.eq(now.micros()),
    );
    crate::db::write_transaction(conn, |conn| {
        let updated = diesel::update(reseller_approvals::table.find(reseller.0))
            .set(values.clone())
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(reseller_approvals::table)
                .values((reseller_approvals::reseller_id.eq(reseller.0), values))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Installs or upgrades one of `reseller`'s own plugins: of a kind the
/// operator approved for it, reaching only hosts approved for it. A name
/// the platform or another reseller has is refused.
pub fn install_for_reseller(
    conn: &mut DbConnection,
    runtime: &Runtime,
    reseller: TenantId,
    manifest_text: &str,
    wasm: &[u8],
    now: Timestamp,
) -> Result<InstalledVersion, PluginError> {
    let approval = approval(conn, reseller)?;
    let manifest = Manifest::parse(manifest_text)?;
    if !approval.kinds.contains(&manifest.kind) {
        let approved: Vec<&str> = approval.kinds.iter().map(|kind| kind.as_str()).collect();
        return Err(PluginError::KindNotApproved {
            name: manifest.name,
            kind: manifest.kind,
            approved: match approved.is_empty() {
                true => "no kind".into(),
                false => approved.join(" and "),
            },
        });
    }
    // The platform's own names stay its own: the plugins it ships, and any
    // it installed once, even if removed since.
    let bundled = runtime::artifacts::FIRST_PARTY
        .iter()
        .any(|(name, ..)| *name == manifest.name);
    let active = active_version(conn, &manifest.name)?;
    let stored: i64 = plugin_versions::table
        .filter(plugin_versions::name.eq(&manifest.name))
        .count()
        .get_result(conn)?;
    if bundled || (active.is_none() && stored > 0) {
        return Err(PluginError::AlreadyInstalled(manifest.name));
    }
    let hosts = &approval.http_hosts;
    match active {
        Some(active) if active.owner != Some(reseller) => {
            Err(PluginError::AlreadyInstalled(manifest.name))
        }
        Some(active) if active.version != manifest.version.to_string() => {
            upgrade(conn, runtime, manifest_text, wasm, hosts, now)
        }
        _ => install_owned(
            conn,
            runtime,
            manifest_text,
            wasm,
            hosts,
            Some(reseller),
            now,
        ),
    }
}

/// Removes a plugin: no tenant can use it any more. Its versions stay on
/// record, because usage and invoices refer to them.
pub fn remove(conn: &mut DbConnection, name: &str) -> Result<(), PluginError> {
    crate::db::write_transaction(conn, |conn| {
        diesel::delete(plugin_enablements::table.filter(plugin_enablements::plugin.eq(name)))
            .execute(conn)?;
        kv::delete_all(conn, name)?;
        match diesel::delete(plugins::table.find(name)).execute(conn)? {
            0 => Err(PluginError::NotInstalled(name.to_owned())),
            _ => Ok(()),
        }
    })
}

/// Installs each first-party plugin that was never installed here, and
/// upgrades those whose bundled version is newer than the active one. A
/// plugin the operator removed stays removed. Returns what it installed.
pub fn install_first_party(
    conn: &mut DbConnection,
    runtime: &Runtime,
    now: Timestamp,
) -> Result<Vec<InstalledVersion>, PluginError> {
    let mut installed = Vec::new();
    for (name, manifest_text, wasm) in runtime::artifacts::FIRST_PARTY {
        let bundled = Manifest::parse(manifest_text)?;
        // Shipping a first-party plugin in the binary approves the hosts
        // its bundled manifest declares; the operator can remove it.
        let approved = &bundled.http_hosts;
        let n_versions: i64 = plugin_versions::table
            .filter(plugin_versions::name.eq(name))
            .count()
            .get_result(conn)?;
        if n_versions == 0 {
            installed.push(install(conn, runtime, manifest_text, wasm, approved, now)?);
            continue;
        }
        match active_manifest(conn, name) {
            Ok(active) if active.version < bundled.version => {
                installed.push(upgrade(conn, runtime, manifest_text, wasm, approved, now)?);
            }
            Ok(_) | Err(PluginError::NotInstalled(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(installed)
}

/// The loaded plugins of one host, by name: the active version of each,
/// loaded from the database on first use and after an upgrade. A caller
/// keeps the `Arc` it got for the whole call, so an upgrade never pulls a
/// version out from under a running call.
pub struct Registry {
    runtime: Arc<Runtime>,
    loaded: Mutex<HashMap<String, Arc<ActivePlugin>>>,
}

/// A loaded plugin version with its manifest: what a call needs besides
/// the tenant's settings.
#[derive(Debug)]
pub struct ActivePlugin {
    pub loaded: LoadedPlugin,
    /// Its manifest; the HTTP hosts it declares were all approved at
    /// install, so they are the hosts its calls may reach.
    pub manifest: Manifest,
    /// The reseller whose own plugin it is; `None`: the platform's.
    pub owner: Option<TenantId>,
}

impl std::ops::Deref for ActivePlugin {
    type Target = LoadedPlugin;

    fn deref(&self) -> &LoadedPlugin {
        &self.loaded
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>) -> Registry {
        Registry {
            runtime,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The active version of `name`, loading it if this host has not yet.
    pub fn get(
        &self,
        conn: &mut DbConnection,
        name: &str,
    ) -> Result<Arc<ActivePlugin>, PluginError> {
        let ActiveVersion {
            version,
            manifest: manifest_text,
            owner,
            ..
        } = active_version(conn, name)?
            .ok_or_else(|| PluginError::NotInstalled(name.to_owned()))?;
        if let Some(loaded) = self.loaded.lock().expect("registry lock").get(name)
            && loaded.version == version
        {
            return Ok(loaded.clone());
        }
        let manifest = Manifest::parse(&manifest_text)?;
        let wasm: Vec<u8> = plugin_versions::table
            .find((name, &version))
            .select(plugin_versions::wasm)
            .first(conn)?;
        let loaded = Arc::new(ActivePlugin {
            loaded: self
                .runtime
                .load(name, &version, manifest.kind, &wasm, manifest.limits)?,
            manifest,
            owner,
        });
        self.loaded
            .lock()
            .expect("registry lock")
            .insert(name.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Every installed version, by name, then by version.
pub fn list(conn: &mut DbConnection) -> Result<Vec<InstalledVersion>, PluginError> {
    let mut rows: Vec<(String, String, String, String, String, Option<String>)> =
        plugin_versions::table
            .left_join(
                plugins::table.on(plugins::name
                    .eq(plugin_versions::name)
                    .and(plugins::active_version.eq(plugin_versions::version))),
            )
            .select((
                plugin_versions::name,
                plugin_versions::version,
                plugin_versions::kind,
                plugin_versions::api_version,
                plugin_versions::wasm_sha256,
                plugins::name.nullable(),
            ))
            .load(conn)?;
    let owners: HashMap<String, Option<i64>> = plugins::table
        .select((plugins::name, plugins::reseller_id))
        .load::<(String, Option<i64>)>(conn)?
        .into_iter()
        .collect();
    // Versions in semantic order, not as text: 0.10.0 comes after 0.9.0.
    rows.sort_by_cached_key(|(name, version, ..)| {
        (name.clone(), semver::Version::parse(version).ok())
    });
    Ok(rows
        .into_iter()
        .map(
            |(name, version, kind, api_version, wasm_sha256, active)| InstalledVersion {
                owner: owners.get(&name).copied().flatten().map(TenantId),
                name,
                version,
                kind,
                api_version,
                wasm_sha256,
                active: active.is_some(),
            },
        )
        .collect())
}

/// The manifest of a plugin's active version.
pub fn active_manifest(conn: &mut DbConnection, name: &str) -> Result<Manifest, PluginError> {
    let active =
        active_version(conn, name)?.ok_or_else(|| PluginError::NotInstalled(name.to_owned()))?;
    Manifest::parse(&active.manifest)
}

/// The version of a plugin that serves new calls.
struct ActiveVersion {
    version: String,
    manifest: String,
    wasm_sha256: String,
    owner: Option<TenantId>,
}

fn active_version(
    conn: &mut DbConnection,
    name: &str,
) -> Result<Option<ActiveVersion>, PluginError> {
    let row: Option<(String, String, String, Option<i64>)> = plugins::table
        .find(name)
        .inner_join(
            plugin_versions::table.on(plugin_versions::name
                .eq(plugins::name)
                .and(plugin_versions::version.eq(plugins::active_version))),
        )
        .select((
            plugin_versions::version,
            plugin_versions::manifest,
            plugin_versions::wasm_sha256,
            plugins::reseller_id,
        ))
        .first(conn)
        .optional()?;
    Ok(
        row.map(|(version, manifest, wasm_sha256, owner)| ActiveVersion {
            version,
            manifest,
            wasm_sha256,
            owner: owner.map(TenantId),
        }),
    )
}

/// Enables a plugin for a tenant with its settings, replacing any earlier
/// settings. Refuses settings the manifest does not declare and leaves out
/// none it requires.
pub fn enable(
    conn: &mut DbConnection,
    secrets: &SecretBox,
    tenant: TenantId,
    name: &str,
    settings: &BTreeMap<String, String>,
    now: Timestamp,
) -> Result<(), PluginError> {
    let manifest = active_manifest(conn, name)?;
    // Another reseller's own plugin is unknown to this tenant.
    let owner = owner(conn, name)?;
    if !usable_by(conn, tenant, owner)? {
        return Err(PluginError::NotInstalled(name.to_owned()));
    }
    for (setting, value) in settings {
        if !manifest.settings.iter().any(|spec| spec.name == *setting) {
            return Err(PluginError::UnknownSetting {
                plugin: name.to_owned(),
                setting: setting.clone(),
                known: manifest
                    .settings
                    .iter()
                    .map(|spec| spec.name.clone())
                    .collect(),
            });
        }
        if value.len() > SETTING_VALUE_BYTES_MAX {
            return Err(PluginError::SettingTooLong(setting.clone()));
        }
    }
    // A secret setting left out keeps its stored value: it is never shown
    // back, so a settings form cannot send it again.
    let kept: BTreeMap<String, String> = match stored_settings(conn, tenant, name)? {
        None => BTreeMap::new(),
        Some(previous) => manifest
            .settings
            .iter()
            .filter(|spec| spec.secret && !settings.contains_key(&spec.name))
            .filter_map(|spec| {
                previous
                    .get(&spec.name)
                    .map(|sealed| (spec.name.clone(), sealed.clone()))
            })
            .collect(),
    };
    if let Some(missing) = manifest.settings.iter().find(|spec| {
        spec.required && !settings.contains_key(&spec.name) && !kept.contains_key(&spec.name)
    }) {
        return Err(PluginError::MissingSetting {
            plugin: name.to_owned(),
            setting: missing.name.clone(),
            description: missing.description.clone(),
        });
    }
    // Secrets are stored sealed, each bound to its tenant, plugin and name.
    let stored: BTreeMap<&String, String> = kept
        .iter()
        .map(|(setting, sealed)| (setting, sealed.clone()))
        .chain(settings.iter().map(|(setting, value)| {
            let secret = manifest
                .settings
                .iter()
                .any(|spec| spec.name == *setting && spec.secret);
            let value = match secret {
                true => secrets.seal(value, &secret_context(tenant, name, setting)),
                false => value.clone(),
            };
            (setting, value)
        }))
        .collect();
    let settings_json = serde_json::to_string(&stored).expect("a string map serializes");
    crate::db::write_transaction(conn, |conn| {
        diesel::delete(
            plugin_enablements::table
                .filter(plugin_enablements::tenant_id.eq(tenant.0))
                .filter(plugin_enablements::plugin.eq(name)),
        )
        .execute(conn)?;
        diesel::insert_into(plugin_enablements::table)
            .values((
                plugin_enablements::tenant_id.eq(tenant.0),
                plugin_enablements::plugin.eq(name),
                plugin_enablements::settings.eq(&settings_json),
                plugin_enablements::enabled.eq(true),
                plugin_enablements::updated_at.eq(now.micros()),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// Stops a tenant's use of a plugin; its settings are kept for re-enabling.
/// Returns whether it was enabled.
pub fn disable(
    conn: &mut DbConnection,
    tenant: TenantId,
    name: &str,
    now: Timestamp,
) -> Result<bool, PluginError> {
    let n_rows = diesel::update(
        plugin_enablements::table
            .filter(plugin_enablements::tenant_id.eq(tenant.0))
            .filter(plugin_enablements::plugin.eq(name))
            .filter(plugin_enablements::enabled.eq(true)),
    )
    .set((
        plugin_enablements::enabled.eq(false),
        plugin_enablements::updated_at.eq(now.micros()),
    ))
    .execute(conn)?;
    Ok(n_rows > 0)
}

/// Whether a tenant has the plugin enabled.
pub fn is_enabled(
    conn: &mut DbConnection,
    tenant: TenantId,
    name: &str,
) -> Result<bool, PluginError> {
    let n_rows: i64 = plugin_enablements::table
        .filter(plugin_enablements::tenant_id.eq(tenant.0))
        .filter(plugin_enablements::plugin.eq(name))
        .filter(plugin_enablements::enabled.eq(true))
        .count()
        .get_result(conn)?;
    Ok(n_rows > 0)
}

/// A tenant's settings for a plugin as stored (secrets sealed), enabled or
/// not; `None` when it never enabled it.
pub fn stored_settings(
    conn: &mut DbConnection,
    tenant: TenantId,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, PluginError> {
    let row: Option<String> = plugin_enablements::table
        .filter(plugin_enablements::tenant_id.eq(tenant.0))
        .filter(plugin_enablements::plugin.eq(name))
        .select(plugin_enablements::settings)
        .first(conn)
        .optional()?;
    Ok(row.map(|json| serde_json::from_str(&json).expect("settings were stored as a JSON object")))
}

/// Where a sealed setting belongs: opening it anywhere else fails.
fn secret_context(tenant: TenantId, plugin: &str, setting: &str) -> String {
    format!(
        "plugin setting: tenant {}, plugin {plugin}, {setting}",
        tenant.0
    )
}

/// A tenant's settings for a plugin it has enabled, secrets opened; `None`
/// when it has not enabled it.
pub fn tenant_settings(
    conn: &mut DbConnection,
    secrets: &SecretBox,
    tenant: TenantId,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, PluginError> {
    let row: Option<String> = plugin_enablements::table
        .filter(plugin_enablements::tenant_id.eq(tenant.0))
        .filter(plugin_enablements::plugin.eq(name))
        .filter(plugin_enablements::enabled.eq(true))
        .select(plugin_enablements::settings)
        .first(conn)
        .optional()?;
    let Some(json) = row else {
        return Ok(None);
    };
    let manifest = active_manifest(conn, name)?;
    open_settings(secrets, tenant, &manifest, &json).map(Some)
}

/// A tenant's settings for the plugin of `manifest` (its active version),
/// secrets opened; `None` when it has not enabled it.
pub fn tenant_settings_of(
    conn: &mut DbConnection,
    secrets: &SecretBox,
    tenant: TenantId,
    manifest: &Manifest,
) -> Result<Option<BTreeMap<String, String>>, PluginError> {
    let row: Option<String> = plugin_enablements::table
        .filter(plugin_enablements::tenant_id.eq(tenant.0))
        .filter(plugin_enablements::plugin.eq(&manifest.name))
        .filter(plugin_enablements::enabled.eq(true))
        .select(plugin_enablements::settings)
        .first(conn)
        .optional()?;
    row.map(|json| open_settings(secrets, tenant, manifest, &json))
        .transpose()
}

fn open_settings(
    secrets: &SecretBox,
    tenant: TenantId,
    manifest: &Manifest,
    json: &str,
) -> Result<BTreeMap<String, String>, PluginError> {
    let name = &manifest.name;
    let mut settings: BTreeMap<String, String> =
        serde_json::from_str(json).expect("settings were stored as a JSON object");
    for spec in manifest.settings.iter().filter(|spec| spec.secret) {
        if let Some(value) = settings.get_mut(&spec.name)
            // Stored before the setting became secret: plain, as it was.
            && value.starts_with(crate::secrets::SEALED_PREFIX)
        {
            *value = secrets.open(value, &secret_context(tenant, name, &spec.name))?;
        }
    }
    Ok(settings)
}
