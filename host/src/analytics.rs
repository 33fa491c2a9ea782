//! Analytics: revenue, MRR and its movements, churn, LTV, segments,
//! payment methods, a forecast, usage and ROI.
//!
//! Every figure is read from rollups kept up to date in the transactions
//! that change what they sum (`usage`: a call's settlement; `revenue`: an
//! invoice paid, a credit note issued; `mrr`: a subscription's state or
//! plan changing), never from scans of usage records, invoices or
//! subscriptions. `report` computes the reports from them, `forecast` the
//! revenue forecast, `roi` what a tenant's calls saved against doing the
//! work by hand, and `csv` writes any report table as CSV.

pub mod csv;
pub mod forecast;
pub mod mrr;
pub mod report;
pub mod revenue;
pub mod roi;
pub mod usage;
