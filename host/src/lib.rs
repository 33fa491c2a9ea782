//! Tollgate's host: the runtime that owns the credit ledger and meters every
//! plugin call. See `docs/ARCHITECTURE.md` for the map of these modules and
//! the rules between them.

pub mod analytics;
pub mod api;
pub mod auth;
pub mod billing;
pub mod branding;
pub mod config;
pub mod db;
pub mod demo;
pub mod engagement;
pub mod ids;
pub mod ledger;
pub mod mail;
pub mod metering;
pub mod metrics;
pub mod plugins;
pub mod pricing;
pub mod resale;
pub mod runtime;
pub mod sandbox;
pub mod scheduler;
pub mod secrets;
pub mod tenants;
pub mod units;
pub mod web;
