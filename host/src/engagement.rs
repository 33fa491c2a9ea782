//! Sales engagement: what tenants spend their credits on. Leads (found by
//! lead-source plugins or imported from CSV, deduplicated, scored),
//! suppressions, and, built on them, sequences and the deal pipeline.
//!
//! Every lookup and message goes through the metered path
//! ([`crate::metering::Meter`]); this module never prices or charges
//! anything itself, and never names HTTP or JSON request shapes (the API
//! converts). Every query is scoped by tenant: another tenant's lead is
//! simply not found.

pub mod events;
pub mod import;
pub mod leads;
pub mod pipeline;
pub mod runner;
pub mod schedule;
pub mod scoring;
pub mod sequences;
pub mod tasks;
pub mod templates;

#[cfg(test)]
mod tests;
