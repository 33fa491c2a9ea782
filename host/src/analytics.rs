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

use crate::ids::TenantId;

/// Whose sale a revenue or MRR rollup row counts. The platform sells to
/// its own tenants at its prices and to its resellers at wholesale; a
/// reseller sells to its tenants at retail. A resold tenant's invoices are
/// its reseller's revenue; its MRR is kept for both, at each one's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seller {
    Platform,
    Reseller(TenantId),
}

impl Seller {
    /// The rollups' `seller` column: 0 for the platform, else the
    /// reseller's id.
    pub fn key(self) -> i64 {
        match self {
            Seller::Platform => 0,
            Seller::Reseller(reseller) => reseller.0,
        }
    }

    /// Who sold a document `reseller` issued (none: the platform).
    pub fn of(reseller: Option<TenantId>) -> Seller {
        reseller.map_or(Seller::Platform, Seller::Reseller)
    }
}
