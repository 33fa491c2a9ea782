//! The database: one connection type over SQLite and PostgreSQL, a pool of
//! read connections, embedded migrations, and fresh databases for tests.
//!
//! Everything above this module writes diesel queries once against
//! [`DbConnection`]; only this module (and the ledger writer's locking) ever
//! asks which backend it is talking to. Diesel is synchronous, so async code
//! reaches the database through [`Database::run`], which moves the work onto
//! tokio's blocking threads and never stalls a runtime worker.

pub mod schema;
pub mod testing;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{self, ConnectionManager, CustomizeConnection};
use diesel::{Connection as _, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// How long a caller waits for a pooled connection.
const POOL_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbConnection::Postgres(_) => "DbConnection::Postgres",
            DbConnection::Sqlite(_) => "DbConnection::Sqlite",
        })
    }
}

/// Runs `work` in a transaction that writes. On SQLite it takes the write
/// lock at BEGIN (`BEGIN IMMEDIATE`): a transaction that reads first and
/// then writes would otherwise fail at once with "database is locked"
/// when another writer holds the lock, instead of waiting its turn. On
/// PostgreSQL it is an ordinary transaction. `work` must not open
/// transactions of its own.
pub fn write_transaction<T, E>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    if let DbConnection::Postgres(_) = conn {
        return conn.transaction(work);
    }
    conn.batch_execute("BEGIN IMMEDIATE")?;
    // A panic must not return the connection to the pool mid-transaction.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *conn)));
    match outcome {
        Ok(Ok(value)) => match conn.batch_execute("COMMIT") {
            Ok(()) => Ok(value),
            Err(error) => {
                let _ = conn.batch_execute("ROLLBACK");
                Err(error.into())
            }
        },
        Ok(Err(error)) => {
            let _ = conn.batch_execute("ROLLBACK");
            Err(error)
        }
        Err(panic) => {
            let _ = conn.batch_execute("ROLLBACK");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Which database a URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// `postgres://` or `postgresql://` URLs go to PostgreSQL; `sqlite://path`
    /// or an empty string (the embedded default in `data_dir`) to SQLite.
    pub fn parse(url: &str, data_dir: &Path) -> anyhow::Result<DatabaseUrl> {
        if url.is_empty() {
            return Ok(DatabaseUrl::Sqlite(data_dir.join("tollgate.db")));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            anyhow::ensure!(!path.is_empty(), "database URL {url:?} names no file");
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        anyhow::bail!(
            "database URL {url:?} is neither postgres://... nor sqlite://<path>; leave it empty for the embedded SQLite database"
        )
    }

    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Postgres(_) => Backend::Postgres,
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The URL with any password masked, for logs.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
                    let user_end = scheme + 3 + url[scheme + 3..at].find(':').unwrap_or(0);
                    format!("{}:***{}", &url[..user_end], &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Opens a single connection, configured for Tollgate.
pub fn connect(url: &DatabaseUrl) -> anyhow::Result<DbConnection> {
    match url {
        DatabaseUrl::Postgres(text) => {
            let conn = PgConnection::establish(text)
                .with_context(|| format!("connecting to {}", url.redacted()))?;
            Ok(DbConnection::Postgres(conn))
        }
        DatabaseUrl::Sqlite(path) => {
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let path_text = path
                .to_str()
                .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
            let mut conn = SqliteConnection::establish(path_text)
                .with_context(|| format!("opening {}", path.display()))?;
            configure_sqlite(&mut conn)
                .with_context(|| format!("configuring {}", path.display()))?;
            Ok(DbConnection::Sqlite(conn))
        }
    }
}

/// WAL lets readers run beside the one writer; `synchronous = FULL` makes
/// every commit durable before it returns, which is what the ledger promises.
fn configure_sqlite(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;"
    ))
}

#[derive(Debug)]
struct Customizer;

impl CustomizeConnection<DbConnection, r2d2::Error> for Customizer {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        match conn {
            DbConnection::Sqlite(sqlite) => {
                configure_sqlite(sqlite).map_err(r2d2::Error::QueryError)
            }
            DbConnection::Postgres(_) => Ok(()),
        }
    }
}

pub type PooledConnection = r2d2::PooledConnection<ConnectionManager<DbConnection>>;

/// A pool of connections to one database.
#[derive(Clone)]
pub struct Database {
    url: DatabaseUrl,
    pool: r2d2::Pool<ConnectionManager<DbConnection>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url.redacted())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the pool. The first connection is made at once, so a database
    /// that cannot be reached is reported here rather than on first use.
    pub fn open(url: &DatabaseUrl, pool_size: u32) -> anyhow::Result<Database> {
        // Creates the SQLite file (and its folder) and proves the URL works.
        drop(connect(url)?);
        let manager_url = match url {
            DatabaseUrl::Postgres(text) => text.clone(),
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(POOL_CHECKOUT_TIMEOUT)
            .connection_customizer(Box::new(Customizer))
            .build(ConnectionManager::<DbConnection>::new(manager_url))
            .with_context(|| format!("opening a connection pool to {}", url.redacted()))?;
        Ok(Database {
            url: url.clone(),
            pool,
        })
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.url.backend()
    }

    /// A pooled connection, for blocking code (the CLI, tests, the writer's
    /// setup). Async code uses [`Database::run`].
    pub fn get(&self) -> anyhow::Result<PooledConnection> {
        self.pool
            .get()
            .with_context(|| format!("getting a connection to {}", self.url.redacted()))
    }

    /// Runs blocking database work on tokio's blocking pool.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let database = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = database.get()?;
            work(&mut conn)
        })
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    }

    /// Applies every migration not yet applied; returns their names.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.get()?;
        let applied = match &mut *conn {
            DbConnection::Postgres(pg) => names(pg.run_pending_migrations(POSTGRES_MIGRATIONS)),
            DbConnection::Sqlite(sqlite) => names(sqlite.run_pending_migrations(SQLITE_MIGRATIONS)),
        };
        applied.map_err(|error| anyhow::anyhow!("migrating {}: {error}", self.url.redacted()))
    }

    /// Reverts the newest applied migration; returns its name. For tests
    /// that check a migration against what the code maintains.
    pub fn revert_last(&self) -> anyhow::Result<String> {
        let mut conn = self.get()?;
        let reverted = match &mut *conn {
            DbConnection::Postgres(pg) => pg
                .revert_last_migration(POSTGRES_MIGRATIONS)
                .map(|version| version.to_string()),
            DbConnection::Sqlite(sqlite) => sqlite
                .revert_last_migration(SQLITE_MIGRATIONS)
                .map(|version| version.to_string()),
        };
        reverted.map_err(|error| anyhow::anyhow!("reverting {}: {error}", self.url.redacted()))
    }

    /// Reverts every applied migration, newest first.
    pub fn revert_all(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.get()?;
        let reverted = match &mut *conn {
            DbConnection::Postgres(pg) => names(pg.revert_all_migrations(POSTGRES_MIGRATIONS)),
            DbConnection::Sqlite(sqlite) => names(sqlite.revert_all_migrations(SQLITE_MIGRATIONS)),
        };
        reverted.map_err(|error| anyhow::anyhow!("reverting {}: {error}", self.url.redacted()))
    }
}

type MigrationResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn names(
    versions: MigrationResult<Vec<diesel::migration::MigrationVersion<'_>>>,
) -> MigrationResult<Vec<String>> {
    versions.map(|versions| versions.iter().map(ToString::to_string).collect())
}

/// Rows per multi-row statement at most: well under SQLite's and
/// PostgreSQL's limits on bound parameters (32,766 and 65,535) for our
/// widest row (usage records, 19 columns).
pub const ROWS_PER_INSERT_MAX: usize = 1_000;

/// A query diesel would prepare afresh every time it runs (an `IN` list),
/// kept in the connection's statement cache under its SQL text instead.
/// Only for queries of a bounded number of shapes, since the cache keeps
/// every text it sees: an `IN` list goes through [`padded`] first. The
/// text and the types of its binds are the whole statement, so a cached
/// one is always the right one. It holds for queries loaded through
/// [`DbConnection`], which holds the query itself; a statement diesel runs
/// by reference (`execute`) loses the word, and needs [`Keyed`].
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(pub Q);

impl<Q> diesel::query_builder::QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Cached<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q, Conn> diesel::RunQueryDsl<Conn> for Cached<Q> {}

/// A statement kept in the connection's statement cache under the type `K`
/// instead of its SQL text, and run without building its text again. `K`
/// must stand for one SQL text with one list of bind types, so a call site
/// names a type of its own (an `enum Site {}` declared beside it) and adds
/// to it whatever varies the text, such as an array's length (`(Site, [();
/// 16])`). The rows of an insert must not turn `None` into `DEFAULT`
/// (`treat_none_as_default_value = false`), which would vary the text.
///
/// Diesel prepares an `UPDATE` or an upsert afresh every time it runs (it
/// marks them unsafe to cache, as their text may vary), and a wrapper's
/// word that it is safe is lost on the way: diesel asks a reference to the
/// query, whose answer walks the query, so until 2026-12-08 these
/// statements were prepared at every run after all (17% of the ledger
/// writer's CPU; docs/BENCHMARKS.md). So a `Keyed` statement renders its
/// text once per `K` and backend and hands diesel only that text, and the
/// query's own walk only to collect its binds. It runs on a concrete
/// connection only ([`Concrete`]): through [`DbConnection`] one backend type
/// would stand for both texts. It is a whole statement, never part of
/// another (PostgreSQL's placeholders in its text are numbered from `$1`).
/// It leans on diesel's hidden `AstPassHelper`; Cargo.lock pins diesel.
pub struct Keyed<Q, K>(pub Q, std::marker::PhantomData<fn() -> K>);

impl<Q: std::fmt::Debug, K> std::fmt::Debug for Keyed<Q, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Keyed").field(&self.0).finish()
    }
}

impl<Q, K> Keyed<Q, K> {
    pub fn new(query: Q) -> Keyed<Q, K> {
        Keyed(query, std::marker::PhantomData)
    }

    /// Runs the statement on `conn`'s own backend; the rows it changed.
    pub fn run(self, conn: &mut DbConnection) -> diesel::QueryResult<usize>
    where
        Self: diesel::query_dsl::methods::ExecuteDsl<SqliteConnection>
            + diesel::query_dsl::methods::ExecuteDsl<PgConnection>,
    {
        match conn {
            DbConnection::Sqlite(conn) => diesel::RunQueryDsl::execute(self, conn),
            DbConnection::Postgres(conn) => diesel::RunQueryDsl::execute(self, conn),
        }
    }
}

impl<Q, K: 'static> diesel::query_builder::QueryId for Keyed<Q, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q: diesel::query_builder::Query, K> diesel::query_builder::Query for Keyed<Q, K> {
    type SqlType = Q::SqlType;
}

/// The backends a [`Keyed`] statement runs on: each has one text per
/// statement.
pub trait Concrete: diesel::backend::Backend + 'static {}

impl Concrete for diesel::sqlite::Sqlite {}
impl Concrete for diesel::pg::Pg {}

/// The text of each [`Keyed`] statement by its key and backend: a few
/// dozen, built once each and kept for the life of the process.
static KEYED_TEXTS: std::sync::LazyLock<
    std::sync::RwLock<
        std::collections::HashMap<(std::any::TypeId, std::any::TypeId), &'static str>,
    >,
> = std::sync::LazyLock::new(Default::default);

impl<Q, K, DB> diesel::query_builder::QueryFragment<DB> for Keyed<Q, K>
where
    DB: Concrete,
    DB::QueryBuilder: Default,
    Q: diesel::query_builder::QueryFragment<DB>,
    K: 'static,
{
    fn walk_ast<'b>(
        &'b self,
        mut pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        use diesel::internal::derives::multiconnection::AstPassHelper as _;
        use diesel::query_builder::QueryBuilder as _;
        // Collecting binds (or showing them): the query's own walk.
        if pass.bind_collector().is_some() || pass.debug_binds().is_some() {
            return self.0.walk_ast(pass);
        }
        // Its text, or whether it may be cached: the text, which says
        // nothing against caching it.
        let key = (std::any::TypeId::of::<K>(), std::any::TypeId::of::<DB>());
        let known = KEYED_TEXTS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .copied();
        let text = match known {
            Some(text) => text,
            None => {
                let mut builder = DB::QueryBuilder::default();
                self.0.to_sql(&mut builder, pass.backend())?;
                let text: &'static str = Box::leak(builder.finish().into_boxed_str());
                *KEYED_TEXTS
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(key)
                    .or_insert(text)
            }
        };
        pass.push_sql(text);
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q, K, Conn> diesel::RunQueryDsl<Conn> for Keyed<Q, K> {}

/// `values` for an `IN` list of a few fixed lengths, so its statement is
/// [`Cached`] once per length: the length rounded up to a power of two,
/// the last value repeated (which changes nothing a list means).
pub fn padded<T: Clone>(values: &[T]) -> Vec<T> {
    let mut padded = values.to_vec();
    if let Some(last) = values.last() {
        padded.resize(values.len().next_power_of_two(), last.clone());
    }
    padded
}

/// Inserts rows many per statement. On SQLite, in chunks of powers of two
/// up to 128 rows (37 rows: 32, 4 and 1) passed as arrays:
/// diesel caches the statement of an array, whose length is part of its
/// type, and prepares that of a `Vec` afresh every time, which cost more
/// than running three statements. On PostgreSQL, where each statement is a
/// round trip, as one statement per [`ROWS_PER_INSERT_MAX`] rows. Diesel
/// builds multi-row INSERTs for SQLite only on a concrete
/// `SqliteConnection`, so this picks the backend.
macro_rules! insert_all {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let rows = &$rows[..];
        match &mut *$conn {
            $crate::db::DbConnection::Postgres(conn) => {
                for chunk in rows.chunks($crate::db::ROWS_PER_INSERT_MAX) {
                    diesel::insert_into($table).values(chunk).execute(conn)?;
                }
            }
            $crate::db::DbConnection::Sqlite(conn) => {
                let mut rest = rows;
                while !rest.is_empty() {
                    // A power of two from 1 to 128: one of the arms below.
                    let n = 1_usize << rest.len().ilog2().min(7);
                    let (chunk, tail) = rest.split_at(n);
                    rest = tail;
                    macro_rules! insert_array {
                        ($n:literal) => {{
                            let array: &[_; $n] = chunk.try_into().expect("n rows");
                            diesel::insert_into($table).values(array).execute(conn)?
                        }};
                    }
                    match n {
                        128 => insert_array!(128),
                        64 => insert_array!(64),
                        32 => insert_array!(32),
                        16 => insert_array!(16),
                        8 => insert_array!(8),
                        4 => insert_array!(4),
                        2 => insert_array!(2),
                        _ => insert_array!(1),
                    };
                }
            }
        }
    }};
}

/// Inserts one row, or, when it conflicts on `key`, updates the columns
/// `set` names: a [`Keyed`] statement, run on the connection's backend.
macro_rules! upsert {
    ($conn:expr, $table:expr, $values:expr, $key:expr, $set:expr) => {{
        enum Site {}
        $crate::db::Keyed::<_, Site>::new(
            diesel::insert_into($table)
                .values($values)
                .on_conflict($key)
                .do_update()
                .set($set),
        )
        .run(&mut *$conn)?
    }};
}

/// Updates rows that exist: each row is inserted, and as it conflicts with
/// itself, the columns `set` names are updated from it. On SQLite a
/// [`Keyed`] statement a row (so the rows must not turn `None` into
/// `DEFAULT`); on PostgreSQL, where each statement is a round trip, one
/// statement per [`ROWS_PER_INSERT_MAX`] rows.
macro_rules! update_all {
    ($conn:expr, $table:expr, $rows:expr, $key:expr, $set:expr) => {{
        enum Site {}
        let rows = &$rows[..];
        match &mut *$conn {
            $crate::db::DbConnection::Postgres(conn) => {
                for chunk in rows.chunks($crate::db::ROWS_PER_INSERT_MAX) {
                    diesel::insert_into($table)
                        .values(chunk)
                        .on_conflict($key)
                        .do_update()
                        .set($set)
                        .execute(conn)?;
                }
            }
            // A statement a row, each the same cached one: diesel
            // builds SQLite's multi-row upserts only through a wrapper of
            // its own, which a `Keyed` statement cannot hold, and prepares
            // them afresh every time.
            $crate::db::DbConnection::Sqlite(conn) => {
                for row in rows {
                    diesel::RunQueryDsl::execute(
                        $crate::db::Keyed::<_, Site>::new(
                            diesel::insert_into($table)
                                .values(row)
                                .on_conflict($key)
                                .do_update()
                                .set($set),
                        ),
                        conn,
                    )?;
                }
            }
        }
    }};
}

pub(crate) use {insert_all, update_all, upsert};
