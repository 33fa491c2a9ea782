//! Billing: what tenants pay in money, as opposed to the credits the
//! ledger moves. Invoices and credit notes first; plans, subscriptions,
//! credit packages and payments build on them.

pub mod invoices;
pub mod payments;
pub mod periods;
pub mod purchases;
pub mod render;
pub mod subscriptions;
