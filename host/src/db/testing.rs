//! Fresh, empty databases for tests: a SQLite file in a temporary folder, or,
//! when `TEST_DATABASE_URL` names a PostgreSQL server, a new database on it
//! that is dropped afterwards. Every test gets its own, so tests run in
//! parallel without seeing each other's rows.

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::Connection as _;
use diesel::PgConnection;
use diesel::connection::SimpleConnection as _;

use super::{Database, DatabaseUrl};

/// Names the PostgreSQL server tests run against; unset means SQLite.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// Creates an empty database. Panics when `TEST_DATABASE_URL` is set but
    /// the server cannot be reached: a test run that was asked for PostgreSQL
    /// must fail, not quietly fall back to SQLite.
    pub fn new() -> TestDatabase {
        match std::env::var(TEST_DATABASE_URL) {
            Ok(admin_url) if !admin_url.is_empty() => TestDatabase::postgres(admin_url),
            _ => TestDatabase::sqlite(),
        }
    }

    /// A fresh SQLite database in a temporary folder.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("creating a temporary folder");
        let url = DatabaseUrl::Sqlite(dir.path().join("tollgate.db"));
        TestDatabase {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh database on the PostgreSQL server `admin_url` points at.
    pub fn postgres(admin_url: String) -> TestDatabase {
        let name = format!(
            "tollgate_test_{}_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut admin = PgConnection::establish(&admin_url).unwrap_or_else(|error| {
            panic!("{TEST_DATABASE_URL}={admin_url} cannot be reached: {error}")
        });
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let server = &base[..base.rfind('/').expect("a postgres URL has a path")];
        TestDatabase {
            url: DatabaseUrl::Postgres(format!("{server}/{name}")),
            _dir: None,
            postgres: Some((admin_url, name)),
        }
    }

    /// Opens the database and applies every migration.
    pub fn open(&self) -> Database {
        let database = Database::open(&self.url, 4).expect("opening the test database");
        database.migrate().expect("migrating the test database");
        database
    }
}

impl Default for TestDatabase {
    fn default() -> TestDatabase {
        TestDatabase::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        // Best effort: a database left behind by a crash is only clutter.
        if let Ok(mut admin) = PgConnection::establish(admin_url) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A fresh database holding two tenants, Acme and Globex, for tests of
/// what one tenant must not reach of the other's.
#[derive(Debug)]
pub struct TwoTenants {
    pub database: Database,
    pub acme: crate::ids::TenantId,
    pub globex: crate::ids::TenantId,
    _db: TestDatabase,
}

impl TwoTenants {
    pub fn new(now: crate::units::Timestamp) -> TwoTenants {
        let db = TestDatabase::new();
        let database = db.open();
        let mut conn = database.get().expect("a connection to the new database");
        let mut create = |name: &str| {
            crate::tenants::create(&mut conn, name, None, crate::units::Credits::ZERO, now)
                .expect("creating a test tenant")
                .0
                .id
        };
        let (acme, globex) = (create("Acme"), create("Globex"));
        drop(conn);
        TwoTenants {
            database,
            acme,
            globex,
            _db: db,
        }
    }
}
