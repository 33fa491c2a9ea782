//! Demo data for a first look: one tenant with credits, created on a fresh
//! database by `tollgate serve --demo`. Later issues add plugins, leads and
//! sequences here as they arrive.

use crate::db::Database;
use crate::ledger::{Command, GrantSource, Ledger, TransferId};
use crate::tenants;
use crate::units::{Clock, Credits};

const DAY_US: i64 = 86_400 * 1_000_000;

/// Seeds the demo tenant unless the database already has tenants. Returns
/// whether it did.
pub fn seed(database: &Database, ledger: &Ledger, clock: &dyn Clock) -> anyhow::Result<bool> {
    let mut conn = database.get()?;
    if !tenants::list(&mut conn, None, 1)?.is_empty() {
        return Ok(false);
    }
    let now = clock.now();
    let (tenant, wallet) = tenants::create(&mut conn, "Demo Sales Co", None, Credits::ZERO, now)?;
    drop(conn);
    let grants = [
        ("demo-allowance", GrantSource::Allowance, 1_000, 30),
        ("demo-promotion", GrantSource::Promotion, 250, 60),
    ];
    for (id, source, credits, days) in grants {
        ledger.submit_blocking(Command::Grant {
            id: TransferId::new(id)?,
            account: wallet,
            source,
            amount: Credits::from_whole(credits).expect("fits"),
            expires_at: Some(now.saturating_add_micros(days * DAY_US)),
            priority: None,
            memo: "demo data".into(),
        })?;
    }
    tracing::info!(tenant = %tenant.id, "seeded demo tenant \"Demo Sales Co\" with 1,250 credits");
    Ok(true)
}
