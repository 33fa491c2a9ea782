//! Dashboard sessions: an API key, presented once on the sign-in page, is
//! exchanged for a random session secret kept in an HttpOnly cookie. The
//! database keeps only the secret's SHA-256 and the key it stands for, so
//! revoking the key ends its sessions, and a leaked database opens none.
//! Each session has its own CSRF token, which every form and every script
//! request that changes something must send back.

use diesel::prelude::*;
use sha2::Digest as _;

use crate::auth::{Principal, Role};
use crate::db::DbConnection;
use crate::db::schema::{api_keys, web_sessions};
use crate::ids::TenantId;
use crate::units::Timestamp;

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_session";

/// How long a session lasts from sign-in, whatever it does meanwhile.
pub const LIFETIME_MICROS: i64 = 12 * 3_600 * 1_000_000;

/// A signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: i64,
    pub principal: Principal,
    /// The token its forms carry.
    pub csrf: String,
    pub expires_at: Timestamp,
    /// The brand its pages show: the reseller's whose domain the request
    /// came to, else its tenant's reseller's; `None` for the platform's.
    pub brand: Option<crate::branding::Brand>,
}

impl Session {
    /// Whether `presented` is this session's CSRF token. Both sides are
    /// hashed first, so the comparison's time says nothing of the token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        digest(presented) == digest(&self.csrf)
    }
}

fn digest(text: &str) -> [u8; 32] {
    sha2::Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn random_hex() -> String {
    let random: [u8; 32] = rand::random();
    hex(&random)
}

/// Opens a session for the holder of `principal`'s key; returns it and the
/// cookie's secret, which is never stored.
pub fn open(
    conn: &mut DbConnection,
    principal: Principal,
    now: Timestamp,
) -> Result<(Session, String), diesel::result::Error> {
    let secret = random_hex();
    let csrf = random_hex();
    let expires_at = now.saturating_add_micros(LIFETIME_MICROS);
    // Expired sessions go as new ones come.
    diesel::delete(web_sessions::table.filter(web_sessions::expires_at.le(now.micros())))
        .execute(conn)?;
    let id = diesel::insert_into(web_sessions::table)
        .values((
            web_sessions::secret_sha256.eq(hex(&digest(&secret))),
            web_sessions::key_id.eq(principal.key_id),
            web_sessions::csrf_token.eq(&csrf),
            web_sessions::created_at.eq(now.micros()),
            web_sessions::expires_at.eq(expires_at.micros()),
        ))
        .returning(web_sessions::id)
        .get_result(conn)?;
    let session = Session {
        id,
        principal,
        csrf,
        expires_at,
        brand: None,
    };
    Ok((session, secret))
}

/// The live session whose cookie holds `secret`: not expired, and its key
/// not revoked.
pub fn find(
    conn: &mut DbConnection,
    secret: &str,
    now: Timestamp,
) -> Result<Option<Session>, diesel::result::Error> {
    if secret.len() != 64 || !secret.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row: Option<(i64, String, i64, i64, Option<i64>, String)> = web_sessions::table
        .inner_join(api_keys::table.on(api_keys::id.eq(web_sessions::key_id)))
        .filter(web_sessions::secret_sha256.eq(hex(&digest(secret))))
        .filter(web_sessions::expires_at.gt(now.micros()))
        .filter(api_keys::revoked_at.is_null())
        .select((
            web_sessions::id,
            web_sessions::csrf_token,
            web_sessions::expires_at,
            api_keys::id,
            api_keys::tenant_id,
            api_keys::role,
        ))
        .first(conn)
        .optional()?;
    // A suspended tenant's sessions end with its keys.
    if let Some((.., Some(tenant), _)) = &row {
        match crate::tenants::is_suspended(conn, TenantId(*tenant)) {
            Ok(false) => {}
            Err(crate::tenants::TenantError::Database(error)) => return Err(error),
            Ok(true) | Err(_) => return Ok(None),
        }
    }
    Ok(
        row.map(|(id, csrf, expires_at, key_id, tenant, role)| Session {
            id,
            principal: Principal {
                key_id,
                role: Role::parse(&role).expect("roles are written by the auth module"),
                tenant: tenant.map(TenantId),
            },
            csrf,
            expires_at: Timestamp::from_micros(expires_at),
            brand: None,
        }),
    )
}

/// Ends a session (signing out).
pub fn close(conn: &mut DbConnection, id: i64) -> Result<(), diesel::result::Error> {
    diesel::delete(web_sessions::table.filter(web_sessions::id.eq(id))).execute(conn)?;
    Ok(())
}
