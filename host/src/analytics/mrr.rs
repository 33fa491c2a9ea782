//! Monthly recurring revenue, kept per tenant and moved as ChartMogul
//! defines its movements:
//!
//! - **new**: a customer's first MRR;
//! - **expansion**: more MRR from a customer who had some (an upgrade);
//! - **contraction**: less MRR, but not none (a downgrade);
//! - **churn**: a customer's MRR goes to none (a cancellation taking
//!   effect, or dunning giving up);
//! - **reactivation**: MRR again from a customer who had churned.
//!
//! A tenant's MRR is the sum over its live (active or past-due)
//! subscriptions of the plan's price net of its discount, normalised to a
//! month: an annual price counts a twelfth. It is kept in twelfths of a
//! minor unit, so annual plans add up exactly and are rounded once, when
//! reported. A subscription whose first invoice is unpaid has no MRR yet.
//!
//! [`sync`] is called in the transaction of every change of a
//! subscription's state or plan, after the change; it recomputes the
//! tenant's MRR from its subscriptions and records the difference as one
//! movement. The movements of a month therefore add up to the month's
//! change in MRR.
//!
//! Everything is kept per [`Seller`]: a resold tenant's MRR is kept at the
//! platform's plan prices for the platform (what it charges the reseller
//! for it) and at its reseller's retail prices for the reseller.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::Seller;
use super::usage::month_of;
use crate::config::Plan;
use crate::db::schema::{mrr_customers, mrr_monthly, mrr_movements, subscriptions, tenants};
use crate::db::{self, DbConnection};
use crate::ids::TenantId;
use crate::units::Timestamp;

/// The kinds of movement, in the order reports list them.
pub const KINDS: [&str; 5] = ["new", "expansion", "contraction", "churn", "reactivation"];

/// How the tenant's MRR changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub kind: &'static str,
    pub delta_12: i64,
    pub mrr_12: i64,
}

/// Classifies a change of one customer's MRR from `before` to `after`;
/// `had_mrr` says whether it ever had any before.
pub fn classify(before: i64, after: i64, had_mrr: bool) -> Option<&'static str> {
    Some(match (before, after) {
        _ if before == after => return None,
        (0, _) if had_mrr => "reactivation",
        (0, _) => "new",
        (_, 0) => "churn",
        _ if after > before => "expansion",
        _ => "contraction",
    })
}

/// Brings the tenant's MRR up to date with its subscriptions, recording a
/// movement at `at` if it changed.
pub fn sync(
    conn: &mut DbConnection,
    tenant: TenantId,
    plans: &[Plan],
    at: Timestamp,
) -> QueryResult<Option<Movement>> {
    // On PostgreSQL two hosts may sync one tenant at once (a renewal and a
    // payment, say); under read committed one could read the subscriptions
    // before the other's change and the stored MRR after it, and undo it.
    // Locking the tenant's row first orders them: the second reads after
    // the first commits. SQLite runs one write transaction at a time.
    if let DbConnection::Postgres(pg) = conn {
        tenants::table
            .find(tenant.0)
            .select(tenants::id)
            .for_update()
            .first::<i64>(pg)
            .optional()?;
    }
    let live: Vec<String> = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant.0))
        .filter(subscriptions::state.eq_any(["active", "past_due"]))
        .order(subscriptions::id)
        .select(subscriptions::plan)
        .load(conn)?;
    let live: Vec<Plan> = live
        .iter()
        .filter_map(|id| plans.iter().find(|plan| &plan.id == id).cloned())
        .collect();
    let movement = record(conn, Seller::Platform, tenant, &live, at)?;
    let retail = crate::resale::retail_of(conn, tenant).map_err(|error| match error {
        crate::resale::ResaleError::Database(error) => error,
        other => diesel::result::Error::DeserializationError(other.into()),
    })?;
    if let Some((reseller, prices)) = retail {
        let live: Vec<Plan> = live.iter().map(|plan| prices.plan(plan)).collect();
        record(conn, Seller::Reseller(reseller), tenant, &live, at)?;
    }
    Ok(movement)
}

/// Records the tenant's MRR for `seller` as the sum of the `live` plans,
/// with the movement from what it was.
fn record(
    conn: &mut DbConnection,
    seller: Seller,
    tenant: TenantId,
    live: &[Plan],
    at: Timestamp,
) -> QueryResult<Option<Movement>> {
    let after: i64 = live.iter().map(|plan| plan.mrr_12()).sum();
    let names: Vec<&str> = live.iter().map(|plan| plan.id.as_str()).collect();
    let names = names.join(",");

    let current: Option<(String, i64)> = mrr_customers::table
        .find((seller.key(), tenant.0))
        .select((mrr_customers::currency, mrr_customers::mrr_12))
        .first(conn)
        .optional()?;
    let before = current.as_ref().map_or(0, |(_, mrr)| *mrr);
    let Some(kind) = classify(before, after, current.is_some()) else {
        return Ok(None);
    };
    let currency = match (live.first(), &current) {
        (Some(plan), _) => plan.price.currency.code().to_owned(),
        (None, Some((currency, _))) => currency.clone(),
        (None, None) => return Ok(None),
    };
    let (micros, month) = (at.micros(), month_of(at.micros()));
    let delta_12 = after - before;
    match current {
        None => diesel::insert_into(mrr_customers::table)
            .values((
                mrr_customers::tenant_id.eq(tenant.0),
                mrr_customers::currency.eq(&currency),
                mrr_customers::mrr_12.eq(after),
                mrr_customers::plans.eq(&names),
                mrr_customers::first_at.eq(micros),
                mrr_customers::churned_at.eq(None::<i64>),
                mrr_customers::updated_at.eq(micros),
                mrr_customers::seller.eq(seller.key()),
            ))
            .execute(conn)?,
        Some(_) => diesel::update(mrr_customers::table.find((seller.key(), tenant.0)))
            .set((
                mrr_customers::currency.eq(&currency),
                mrr_customers::mrr_12.eq(after),
                mrr_customers::plans.eq(&names),
                mrr_customers::churned_at.eq((kind == "churn").then_some(micros)),
                mrr_customers::updated_at.eq(micros),
            ))
            .execute(conn)?,
    };
    diesel::insert_into(mrr_movements::table)
        .values((
            mrr_movements::tenant_id.eq(tenant.0),
            mrr_movements::at.eq(micros),
            mrr_movements::month.eq(&month),
            mrr_movements::currency.eq(&currency),
            mrr_movements::kind.eq(kind),
            mrr_movements::delta_12.eq(delta_12),
            mrr_movements::mrr_12.eq(after),
            mrr_movements::plans.eq(&names),
            mrr_movements::seller.eq(seller.key()),
        ))
        .execute(conn)?;
    {
        use mrr_monthly::dsl as m;
        db::upsert!(
            conn,
            mrr_monthly::table,
            (
                m::month.eq(&month),
                m::currency.eq(&currency),
                m::kind.eq(kind),
                m::movements.eq(1_i64),
                m::delta_12.eq(delta_12),
                m::seller.eq(seller.key()),
            ),
            (m::seller, m::month, m::currency, m::kind),
            (
                m::movements.eq(m::movements + excluded(m::movements)),
                m::delta_12.eq(m::delta_12 + excluded(m::delta_12)),
            )
        );
    }
    Ok(Some(Movement {
        kind,
        delta_12,
        mrr_12: after,
    }))
}

/// Starts tracking the MRR of tenants whose live subscriptions predate it
/// (a database from before the analytics migration, or, for a resold
/// tenant's MRR at retail, from before the reseller's rollups): each gets
/// its MRR as a `new` movement now. Returns how many. Tenants already
/// tracked are left alone, so running it again changes nothing.
pub fn adopt(conn: &mut DbConnection, plans: &[Plan], now: Timestamp) -> QueryResult<usize> {
    let live = ["active", "past_due"];
    let mut untracked: Vec<i64> = subscriptions::table
        .filter(subscriptions::state.eq_any(live))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            mrr_customers::table
                .filter(mrr_customers::seller.eq(Seller::Platform.key()))
                .filter(mrr_customers::tenant_id.eq(subscriptions::tenant_id)),
        )))
        .select(subscriptions::tenant_id)
        .distinct()
        .load(conn)?;
    let resellers = diesel::alias!(tenants as resellers);
    let resold: Vec<i64> = subscriptions::table
        .inner_join(tenants::table.on(tenants::id.eq(subscriptions::tenant_id)))
        .filter(subscriptions::state.eq_any(live))
        .filter(
            tenants::parent_tenant_id.eq_any(
                resellers
                    .filter(resellers.field(tenants::kind).eq("reseller"))
                    .select(resellers.field(tenants::id).nullable()),
            ),
        )
        .filter(diesel::dsl::not(diesel::dsl::exists(
            mrr_customers::table
                .filter(
                    mrr_customers::seller
                        .nullable()
                        .eq(tenants::parent_tenant_id),
                )
                .filter(mrr_customers::tenant_id.eq(subscriptions::tenant_id)),
        )))
        .select(subscriptions::tenant_id)
        .distinct()
        .load(conn)?;
    untracked.extend(resold);
    untracked.sort_unstable();
    untracked.dedup();
    for tenant in &untracked {
        db::write_transaction(conn, |conn| sync(conn, TenantId(*tenant), plans, now))?;
    }
    Ok(untracked.len())
}

/// One month's movements summed by kind, as `mrr_monthly` keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthMovements {
    pub month: String,
    /// By kind, in [`KINDS`] order: how many movements and their sum.
    pub counts: [i64; 5],
    pub deltas_12: [i64; 5],
}

/// Every month with the seller's movements in the currency, oldest first, up to and
/// including `to` (`YYYY-MM`).
pub fn monthly(
    conn: &mut DbConnection,
    seller: Seller,
    currency: &str,
    to: &str,
) -> QueryResult<Vec<MonthMovements>> {
    use mrr_monthly::dsl as m;
    let rows: Vec<(String, String, i64, i64)> = m::mrr_monthly
        .filter(m::seller.eq(seller.key()))
        .filter(m::currency.eq(currency))
        .filter(m::month.le(to))
        .order(m::month)
        .select((m::month, m::kind, m::movements, m::delta_12))
        .load(conn)?;
    let mut months: Vec<MonthMovements> = Vec::new();
    for (month, kind, count, delta) in rows {
        if months.last().is_none_or(|last| last.month != month) {
            months.push(MonthMovements {
                month: month.clone(),
                ..Default::default()
            });
        }
        let last = months.last_mut().expect("pushed above");
        if let Some(index) = KINDS.iter().position(|known| *known == kind) {
            last.counts[index] += count;
            last.deltas_12[index] += delta;
        }
    }
    Ok(months)
}
