//! End-to-end tests: real processes against real databases (SQLite, or
//! PostgreSQL when `TEST_DATABASE_URL` is set).

mod crash;
