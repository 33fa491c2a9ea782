//! API keys and who holds them: the operator (the platform), and each
//! tenant's admins and members. A key is `tg_` and 64 hex digits (256
//! random bits), shown once when it is created; the database keeps only
//! its SHA-256, so a leaked database leaks no key.

use diesel::prelude::*;
use sha2::Digest as _;

use crate::db::DbConnection;
use crate::db::schema::api_keys;
use crate::ids::TenantId;
use crate::tenants::{self, TenantError};
use crate::units::Timestamp;

/// What every key starts with, so a leaked one is easy to recognise (and
/// for secret scanners to find).
pub const KEY_PREFIX: &str = "tg_";

const KEY_RANDOM_BYTES: usize = 32;

/// Characters of a key kept in the clear, to tell keys apart in lists.
const SHOWN_PREFIX_CHARS: usize = 11;

const KEY_NAME_BYTES_MAX: usize = 100;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The platform: every tenant, plugins, grants.
    Operator,
    /// A tenant's administrator: its keys, plugin settings, everything a
    /// member may do.
    Admin,
    /// A tenant's member: calls, its own usage and balance.
    Member,
    /// A reseller's administrator: the reseller's own tenants (creating
    /// them, their keys), never another reseller's, and no tenant's data.
    Reseller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Reseller => "reseller",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Operator, Role::Admin, Role::Member, Role::Reseller]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request comes from, once its key checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: i64,
    pub role: Role,
    /// The tenant it acts for; `None` for the operator.
    pub tenant: Option<TenantId>,
}

/// A key as listed: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub tenant: Option<TenantId>,
    pub role: Role,
    pub name: String,
    /// `tg_` and the key's first 8 hex digits.
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the API key is missing, malformed, unknown or revoked")]
    BadKey,
    #[error(
        "an operator key belongs to no tenant, a reseller key to a reseller, and a tenant admin's or member's key to a tenant"
    )]
    TenantMismatch,
    #[error(
        "this account is suspended, so its keys are refused; its reseller or the operator can resume it"
    )]
    Suspended,
    #[error("a key name must be 1 to {KEY_NAME_BYTES_MAX} bytes and not blank")]
    InvalidName,
    #[error("no API key {0}")]
    NotFound(i64),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

type KeyRow = (i64, Option<i64>, String, String, String, i64, Option<i64>);

fn from_row((id, tenant, role, name, prefix, created_at, revoked_at): KeyRow) -> ApiKey {
    ApiKey {
        id,
        tenant: tenant.map(TenantId),
        role: Role::parse(&role).expect("roles are written by this module"),
        name,
        prefix,
        created_at: Timestamp::from_micros(created_at),
        revoked_at: revoked_at.map(Timestamp::from_micros),
    }
}

/// Creates a key and returns it with the key itself, which is never shown
/// again.
pub fn create_key(
    conn: &mut DbConnection,
    tenant: Option<TenantId>,
    role: Role,
    name: &str,
    now: Timestamp,
) -> Result<(ApiKey, String), AuthError> {
    let name = name.trim();
    if name.is_empty() || name.len() > KEY_NAME_BYTES_MAX {
        return Err(AuthError::InvalidName);
    }
    if (role == Role::Operator) != tenant.is_none() {
        return Err(AuthError::TenantMismatch);
    }
    if let Some(tenant) = tenant {
        let kind = tenants::find(conn, tenant)?.kind;
        if (role == Role::Reseller) != (kind == tenants::Kind::Reseller) {
            return Err(AuthError::TenantMismatch);
        }
    }
    let random: [u8; KEY_RANDOM_BYTES] = rand::random();
    let secret: String = std::iter::once(KEY_PREFIX.to_owned())
        .chain(random.iter().map(|byte| format!("{byte:02x}")))
        .collect();
    let prefix = secret[..SHOWN_PREFIX_CHARS].to_owned();
    let id: i64 = diesel::insert_into(api_keys::table)
        .values((
            api_keys::tenant_id.eq(tenant.map(|tenant| tenant.0)),
            api_keys::role.eq(role.as_str()),
            api_keys::name.eq(name),
            api_keys::prefix.eq(&prefix),
            api_keys::secret_sha256.eq(sha256_hex(&secret)),
            api_keys::created_at.eq(now.micros()),
        ))
        .returning(api_keys::id)
        .get_result(conn)?;
    let key = ApiKey {
        id,
        tenant,
        role,
        name: name.to_owned(),
        prefix,
        created_at: now,
        revoked_at: None,
    };
    Ok((key, secret))
}

/// What this host last read of the keys presented to it, each for
/// [`crate::metering::CACHE_TTL`] (unknown keys too, so guessing costs no
/// database reads): a key revoked through this host stops working at once
/// ([`KeyCache::forget`]), one revoked elsewhere within that time. Keyed by
/// the key's SHA-256, never the key.
#[derive(Debug)]
pub struct KeyCache {
    principals: moka::sync::Cache<[u8; 32], Option<Principal>>,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache {
            principals: crate::metering::ttl_cache(),
        }
    }
}

impl KeyCache {
    /// What the cache knows of `presented`: `Some(None)` for a key known
    /// not to be live, `None` when the database must be asked.
    pub fn get(&self, presented: &str) -> Option<Option<Principal>> {
        self.principals.get(&digest(presented))
    }

    /// Asks the database who holds `presented`, and remembers the answer.
    pub fn authenticate(
        &self,
        conn: &mut DbConnection,
        presented: &str,
    ) -> Result<Principal, AuthError> {
        let principal = match authenticate(conn, presented) {
            Ok(principal) => Some(principal),
            Err(AuthError::BadKey) => None,
            Err(error) => return Err(error),
        };
        self.principals.insert(digest(presented), principal);
        principal.ok_or(AuthError::BadKey)
    }

    /// Forgets every key, after this host created or revoked one.
    pub fn forget(&self) {
        self.principals.invalidate_all();
    }
}

fn digest(text: &str) -> [u8; 32] {
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// Who holds `presented`, if it is a live key.
pub fn authenticate(conn: &mut DbConnection, presented: &str) -> Result<Principal, AuthError> {
    let well_formed = presented.len() == KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES
        && presented.starts_with(KEY_PREFIX)
        && presented[KEY_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !well_formed {
        return Err(AuthError::BadKey);
    }
    let row: Option<(i64, Option<i64>, String)> = api_keys::table
        .filter(api_keys::secret_sha256.eq(sha256_hex(presented)))
        .filter(api_keys::revoked_at.is_null())
        .select((api_keys::id, api_keys::tenant_id, api_keys::role))
        .first(conn)
        .optional()?;
    let (key_id, tenant, role) = row.ok_or(AuthError::BadKey)?;
    if let Some(tenant) = tenant
        && tenants::is_suspended(conn, TenantId(tenant))?
    {
        return Err(AuthError::Suspended);
    }
    Ok(Principal {
        key_id,
        role: Role::parse(&role).expect("roles are written by this module"),
        tenant: tenant.map(TenantId),
    })
}

/// The keys of a tenant, or the operator's keys for `None`, oldest first.
pub fn list_keys(
    conn: &mut DbConnection,
    tenant: Option<TenantId>,
) -> Result<Vec<ApiKey>, AuthError> {
    let query = api_keys::table
        .select((
            api_keys::id,
            api_keys::tenant_id,
            api_keys::role,
            api_keys::name,
            api_keys::prefix,
            api_keys::created_at,
            api_keys::revoked_at,
        ))
        .order(api_keys::id)
        .into_boxed();
    let query = match tenant {
        Some(tenant) => query.filter(api_keys::tenant_id.eq(tenant.0)),
        None => query.filter(api_keys::tenant_id.is_null()),
    };
    Ok(query
        .load::<KeyRow>(conn)?
        .into_iter()
        .map(from_row)
        .collect())
}

/// Revokes a key of `tenant` (of the operator's for `None`): it stops
/// working at once. Revoking a revoked key changes nothing; another
/// tenant's key is not found.
pub fn revoke_key(
    conn: &mut DbConnection,
    tenant: Option<TenantId>,
    id: i64,
    now: Timestamp,
) -> Result<(), AuthError> {
    let owned = api_keys::table
        .find(id)
        .select(api_keys::tenant_id)
        .first::<Option<i64>>(conn)
        .optional()?
        .is_some_and(|owner| owner == tenant.map(|tenant| tenant.0));
    if !owned {
        return Err(AuthError::NotFound(id));
    }
    diesel::update(
        api_keys::table
            .find(id)
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(now.micros()))
    .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDatabase;
    use crate::units::Credits;

    const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

    #[test]
    fn a_key_works_until_revoked_and_only_its_hash_is_kept() {
        let db = TestDatabase::new();
        let database = db.open();
        let mut conn = database.get().unwrap();
        let (acme, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
        let (key, secret) = create_key(&mut conn, Some(acme.id), Role::Admin, "ci", NOW).unwrap();
        assert!(secret.starts_with("tg_") && secret.len() == 67, "{secret}");
        assert_eq!(key.prefix, secret[..11]);
        assert_eq!(
            authenticate(&mut conn, &secret).unwrap(),
            Principal {
                key_id: key.id,
                role: Role::Admin,
                tenant: Some(acme.id),
            }
        );
        let stored: Vec<String> = api_keys::table
            .select(api_keys::secret_sha256)
            .load(&mut conn)
            .unwrap();
        assert_eq!(stored, [sha256_hex(&secret)]);
        assert!(!stored[0].contains(&secret[3..]));

        // A near miss, garbage, or a key of the right shape that was never
        // issued: all the same refusal.
        let mut near = secret.clone();
        near.replace_range(66.., if secret.ends_with('0') { "1" } else { "0" });
        for presented in [near.as_str(), "", "tg_", "Bearer x", &secret.to_uppercase()] {
            assert!(
                matches!(authenticate(&mut conn, presented), Err(AuthError::BadKey)),
                "{presented:?}"
            );
        }

        // Another tenant cannot revoke it, nor can the operator's scope.
        let (globex, _) = tenants::create(&mut conn, "Globex", None, Credits::ZERO, NOW).unwrap();
        assert!(matches!(
            revoke_key(&mut conn, Some(globex.id), key.id, NOW),
            Err(AuthError::NotFound(_))
        ));
        assert!(matches!(
            revoke_key(&mut conn, None, key.id, NOW),
            Err(AuthError::NotFound(_))
        ));
        revoke_key(&mut conn, Some(acme.id), key.id, NOW).unwrap();
        assert!(matches!(
            authenticate(&mut conn, &secret),
            Err(AuthError::BadKey)
        ));
        let listed = list_keys(&mut conn, Some(acme.id)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_at, Some(NOW));
        assert!(list_keys(&mut conn, Some(globex.id)).unwrap().is_empty());
    }

    #[test]
    fn roles_and_tenants_go_together() {
        let db = TestDatabase::new();
        let database = db.open();
        let mut conn = database.get().unwrap();
        let (acme, _) = tenants::create(&mut conn, "Acme", None, Credits::ZERO, NOW).unwrap();
        assert!(matches!(
            create_key(&mut conn, Some(acme.id), Role::Operator, "x", NOW),
            Err(AuthError::TenantMismatch)
        ));
        assert!(matches!(
            create_key(&mut conn, None, Role::Member, "x", NOW),
            Err(AuthError::TenantMismatch)
        ));
        assert!(matches!(
            create_key(&mut conn, Some(TenantId(999)), Role::Member, "x", NOW),
            Err(AuthError::Tenant(TenantError::NotFound(_)))
        ));
        assert!(matches!(
            create_key(&mut conn, None, Role::Operator, "  ", NOW),
            Err(AuthError::InvalidName)
        ));
        let (_, operator) = create_key(&mut conn, None, Role::Operator, "ops", NOW).unwrap();
        let principal = authenticate(&mut conn, &operator).unwrap();
        assert_eq!((principal.role, principal.tenant), (Role::Operator, None));
        assert_eq!(list_keys(&mut conn, None).unwrap().len(), 1);
    }
}
