//! Each plugin's key-value store in the database, one per (tenant,
//! plugin), and the files a tenant uploads for a plugin (a CSV of leads),
//! which live in that store in chunks the plugin reads back.
//!
//! Files are laid out for plugins to read with `kv-get` alone:
//! - `files`: a JSON array of `{"name", "size", "chunks", "sha256",
//!   "uploaded_at_ms"}`, one per file, in upload order;
//! - `file/<name>/<n>`: the file's bytes, chunk `n` (five digits, from
//!   00000), each at most [`KV_VALUE_BYTES_MAX`] bytes.
//!
//! An upload replaces a file of the same name in one transaction, so a
//! plugin sees the old file or the new one, never a mix.

use std::sync::Arc;

use diesel::dsl::{count_star, sql};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::db::schema::plugin_kv;
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::runtime::{KV_VALUE_BYTES_MAX, KvStore, kv_quota_check};
use crate::units::{Clock, Timestamp};

/// The key of the file index.
pub const FILES_KEY: &str = "files";

/// Largest file a tenant may upload for a plugin.
pub const FILE_BYTES_MAX: usize = 16 << 20;

/// Most files one (tenant, plugin) may hold.
pub const FILES_MAX: usize = 100;

const FILE_NAME_BYTES_MAX: usize = 100;

/// One uploaded file, as the index lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub chunks: u32,
    pub sha256: String,
    pub uploaded_at_ms: u64,
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "file name {0:?} is not allowed: use 1 to {FILE_NAME_BYTES_MAX} of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    BadName(String),
    #[error("the file is {size} bytes; at most {FILE_BYTES_MAX} may be uploaded")]
    TooLarge { size: usize },
    #[error("the plugin already holds {FILES_MAX} files; delete one first")]
    TooMany,
    #[error("{0}")]
    StoreFull(String),
    #[error("no file {0:?} is uploaded for this plugin")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

/// The store of one (tenant, plugin) in the database.
#[derive(Clone)]
pub struct DbKv {
    database: Database,
    tenant: TenantId,
    plugin: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbKv")
            .field("tenant", &self.tenant)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl DbKv {
    pub fn new(database: Database, tenant: TenantId, plugin: &str, clock: Arc<dyn Clock>) -> DbKv {
        DbKv {
            database,
            tenant,
            plugin: plugin.to_owned(),
            clock,
        }
    }
}

impl KvStore for DbKv {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut conn = self.database.get()?;
        Ok(get(&mut conn, self.tenant, &self.plugin, key)?)
    }

    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<Result<(), String>> {
        let mut conn = self.database.get()?;
        let now = self.clock.now();
        let outcome = db::write_transaction(&mut conn, |conn| {
            let (n_keys, n_bytes) = usage(conn, self.tenant, &self.plugin, &[key])?;
            if let Err(refusal) = kv_quota_check(n_keys, n_bytes, value.len()) {
                return Ok(Err(refusal));
            }
            put(conn, self.tenant, &self.plugin, key, value, now)?;
            Ok::<_, diesel::result::Error>(Ok(()))
        })?;
        Ok(outcome)
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        let mut conn = self.database.get()?;
        delete(&mut conn, self.tenant, &self.plugin, &[key.to_owned()])?;
        Ok(())
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> anyhow::Result<Vec<String>> {
        let mut conn = self.database.get()?;
        // A store holds at most KV_KEYS_MAX keys, so sorting them here, in
        // byte order on every backend (PostgreSQL's text order follows its
        // collation), costs little.
        let mut keys: Vec<String> = plugin_kv::table
            .filter(plugin_kv::tenant_id.eq(self.tenant.0))
            .filter(plugin_kv::plugin.eq(&self.plugin))
            .select(plugin_kv::key)
            .load(&mut conn)?;
        keys.retain(|key| {
            key.starts_with(prefix) && after.is_none_or(|after| key.as_str() > after)
        });
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }
}

fn get(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    key: &str,
) -> QueryResult<Option<Vec<u8>>> {
    plugin_kv::table
        .find((tenant.0, plugin, key))
        .select(plugin_kv::value)
        .first(conn)
        .optional()
}

/// Keys and bytes stored for (tenant, plugin), leaving out `except`.
fn usage(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    except: &[&str],
) -> QueryResult<(u64, u64)> {
    let (n_keys, n_bytes): (i64, i64) = plugin_kv::table
        .filter(plugin_kv::tenant_id.eq(tenant.0))
        .filter(plugin_kv::plugin.eq(plugin))
        .filter(plugin_kv::key.ne_all(except))
        .select((
            count_star(),
            sql::<BigInt>("CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT)"),
        ))
        .first(conn)?;
    Ok((n_keys as u64, n_bytes as u64))
}

/// Writes one key, replacing its value: one upsert, so two calls writing
/// the same key at once both succeed and the later one wins.
fn put(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    key: &str,
    value: &[u8],
    now: Timestamp,
) -> QueryResult<()> {
    use diesel::upsert::excluded;
    db::upsert!(
        conn,
        plugin_kv::table,
        (
            plugin_kv::tenant_id.eq(tenant.0),
            plugin_kv::plugin.eq(plugin),
            plugin_kv::key.eq(key),
            plugin_kv::value.eq(value),
            plugin_kv::size_bytes.eq(value.len() as i64),
            plugin_kv::updated_at.eq(now.micros()),
        ),
        (plugin_kv::tenant_id, plugin_kv::plugin, plugin_kv::key),
        (
            plugin_kv::value.eq(excluded(plugin_kv::value)),
            plugin_kv::size_bytes.eq(excluded(plugin_kv::size_bytes)),
            plugin_kv::updated_at.eq(excluded(plugin_kv::updated_at)),
        )
    );
    Ok(())
}

fn delete(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    keys: &[String],
) -> QueryResult<usize> {
    diesel::delete(
        plugin_kv::table
            .filter(plugin_kv::tenant_id.eq(tenant.0))
            .filter(plugin_kv::plugin.eq(plugin))
            .filter(plugin_kv::key.eq_any(keys)),
    )
    .execute(conn)
}

/// Removes everything a plugin stored, for every tenant: nothing else can
/// read it once the plugin is gone.
pub fn delete_all(conn: &mut DbConnection, plugin: &str) -> QueryResult<usize> {
    diesel::delete(plugin_kv::table.filter(plugin_kv::plugin.eq(plugin))).execute(conn)
}

fn chunk_key(name: &str, index: u32) -> String {
    format!("file/{name}/{index:05}")
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// The files uploaded for (tenant, plugin), in upload order.
pub fn list_files(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
) -> QueryResult<Vec<FileEntry>> {
    Ok(get(conn, tenant, plugin, FILES_KEY)?
        // The host alone writes the index; a plugin that overwrote it with
        // something else has no files as far as the host is concerned.
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default())
}

/// Uploads a file for a plugin, replacing one of the same name.
pub fn put_file(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    name: &str,
    bytes: &[u8],
    now: Timestamp,
) -> Result<FileEntry, FileError> {
    if !valid_file_name(name) {
        return Err(FileError::BadName(name.to_owned()));
    }
    if bytes.len() > FILE_BYTES_MAX {
        return Err(FileError::TooLarge { size: bytes.len() });
    }
    let chunks: Vec<&[u8]> = bytes.chunks(KV_VALUE_BYTES_MAX).collect();
    let entry = FileEntry {
        name: name.to_owned(),
        size: bytes.len() as u64,
        chunks: chunks.len() as u32,
        sha256: sha2::Sha256::digest(bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
        uploaded_at_ms: (now.micros() / 1_000).max(0) as u64,
    };
    db::write_transaction(conn, |conn| {
        let mut files = list_files(conn, tenant, plugin)?;
        let replaced = files.iter().position(|file| file.name == name);
        if replaced.is_none() && files.len() >= FILES_MAX {
            return Err(FileError::TooMany);
        }
        let old_keys: Vec<String> = replaced
            .map(|index| {
                (0..files[index].chunks)
                    .map(|n| chunk_key(name, n))
                    .collect()
            })
            .unwrap_or_default();
        match replaced {
            Some(index) => files[index] = entry.clone(),
            None => files.push(entry.clone()),
        }
        let index_json = serde_json::to_vec(&files).expect("file entries serialize");
        let mut except: Vec<&str> = old_keys.iter().map(String::as_str).collect();
        except.push(FILES_KEY);
        let (n_keys, n_bytes) = usage(conn, tenant, plugin, &except)?;
        // The new chunks and the index, as if they were one value.
        let adding = chunks.len() as u64 + 1;
        if n_keys + adding > crate::runtime::KV_KEYS_MAX {
            return Err(FileError::StoreFull(format!(
                "the plugin's store holds {n_keys} keys; this file needs {adding} more, past its limit of {}; delete some first",
                crate::runtime::KV_KEYS_MAX
            )));
        }
        kv_quota_check(0, n_bytes, bytes.len() + index_json.len()).map_err(FileError::StoreFull)?;
        delete(conn, tenant, plugin, &old_keys)?;
        for (n, chunk) in chunks.iter().enumerate() {
            put(conn, tenant, plugin, &chunk_key(name, n as u32), chunk, now)?;
        }
        put(conn, tenant, plugin, FILES_KEY, &index_json, now)?;
        Ok(entry)
    })
}

/// Deletes an uploaded file.
pub fn delete_file(
    conn: &mut DbConnection,
    tenant: TenantId,
    plugin: &str,
    name: &str,
    now: Timestamp,
) -> Result<(), FileError> {
    db::write_transaction(conn, |conn| {
        let mut files = list_files(conn, tenant, plugin)?;
        let index = files
            .iter()
            .position(|file| file.name == name)
            .ok_or_else(|| FileError::NotFound(name.to_owned()))?;
        let removed = files.remove(index);
        let keys: Vec<String> = (0..removed.chunks).map(|n| chunk_key(name, n)).collect();
        delete(conn, tenant, plugin, &keys)?;
        let index_json = serde_json::to_vec(&files).expect("file entries serialize");
        put(conn, tenant, plugin, FILES_KEY, &index_json, now)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests;
