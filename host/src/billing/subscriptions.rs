//! Subscriptions: a tenant on a plan, billed a period at a time, its
//! period's allowance granted when the period's invoice is paid.
//!
//! - `subscribe` starts the first period now (the anchor), issues its
//!   invoice and leaves the subscription `incomplete` until it is paid.
//! - `invoice_paid` grants the period's allowance, expiring at the period's
//!   end, plus what the plan lets the previous period's allowance carry
//!   over, and makes the subscription `active`. The grants' ledger ids are
//!   made from the subscription and the period, so granting twice (a retry,
//!   a second host) grants once.
//! - `change_plan` upgrades at once (a dearer plan, or a larger one at the
//!   same price): an invoice credits the unused part of the old price and
//!   charges the same part of the new one (`periods::proration`, by the
//!   microsecond), and paying it grants the difference in allowance until
//!   the period ends. A downgrade waits for the period's end.
//! - `renew_due` starts the next period of every subscription whose period
//!   has ended: a new period row (its primary key lets one host do it), its
//!   invoice, and the plan a downgrade asked for; or ends a subscription
//!   that was to be canceled at the period's end. A host that was down
//!   catches up period by period when it returns.
//!
//! A renewed period's invoice is collected from the tenant's saved payment
//! method (`payments::Payments::collect_due`); the subscription is
//! `past_due` while that fails and the dunning schedule runs, and is
//! canceled when the last retry fails.
//!
//! Carryover: of the previous period's allowance, what expired unused at
//! its end (the ledger's expire transfers of that grant), up to the plan's
//! `credits_max`, is granted again to expire after the policy's periods,
//! and is spent before the new period's allowance.
//! Credits a call still held at the period's end are not carried.

use std::sync::Arc;

use diesel::prelude::*;

use super::invoices::{self, Issuer, NewDocument, NewLine};
use super::periods;
use crate::analytics::mrr;
use crate::config::Plan;
use crate::db::schema::{
    allocations, subscription_changes, subscription_periods, subscriptions, transfers,
};
use crate::db::{self, Database, DbConnection};
use crate::ids::TenantId;
use crate::ledger::{Command, GrantSource, Ledger, LedgerError, TransferId, queries};
use crate::units::{Clock, Credits, Money, Timestamp};

/// Carried credits are spent before the period's own allowance (one step
/// ahead of the allowance's default priority), so what the tenant did not
/// use of this period's allowance is what carries next time.
fn carryover_priority() -> i32 {
    GrantSource::Allowance.priority_default() - 1
}

/// Subscriptions whose period ended that one `renew_due` renews at most.
const RENEWALS_PER_RUN_MAX: i64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Incomplete,
    Active,
    PastDue,
    Canceled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Incomplete => "incomplete",
            State::Active => "active",
            State::PastDue => "past_due",
            State::Canceled => "canceled",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "active" => State::Active,
            "past_due" => State::PastDue,
            "canceled" => State::Canceled,
            _ => State::Incomplete,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: i64,
    pub tenant: TenantId,
    pub plan: String,
    /// The plan the next period will have, when a downgrade waits.
    pub next_plan: Option<String>,
    pub state: State,
    pub anchor: Timestamp,
    pub period: u32,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("there is no plan {0:?}; GET /api/v1/billing/plans lists them")]
    UnknownPlan(String),
    #[error("the tenant already has a subscription ({0}); change its plan instead")]
    AlreadySubscribed(i64),
    #[error("the tenant has no subscription")]
    NotSubscribed,
    #[error("invoice {0} bills no subscription period or plan change of this tenant")]
    NotASubscriptionInvoice(i64),
    #[error("the subscription is already on the {0} plan")]
    SamePlan(String),
    #[error(
        "the {to} plan is billed in {to_currency}, the current one in {from_currency}; cancel and subscribe instead"
    )]
    CurrencyChange {
        to: String,
        to_currency: String,
        from_currency: String,
    },
    #[error(transparent)]
    Invoice(#[from] invoices::InvoiceError),
    #[error(transparent)]
    Resale(#[from] crate::resale::ResaleError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error("{0:#}")]
    Pool(#[from] anyhow::Error),
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
struct Row {
    id: i64,
    tenant_id: i64,
    plan: String,
    next_plan: Option<String>,
    state: String,
    anchor: i64,
    current_period: i32,
    cancel_at_period_end: bool,
    canceled_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = subscription_periods)]
struct PeriodRow {
    subscription_id: i64,
    period: i32,
    plan: String,
    starts_at: i64,
    ends_at: i64,
    invoice_id: i64,
    granted: bool,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = subscription_changes)]
struct ChangeRow {
    id: i64,
    subscription_id: i64,
    period: i32,
    from_plan: String,
    to_plan: String,
    granted: bool,
}

/// What a change of plan did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanChange {
    /// An upgrade, at once: the invoice bills the prorated difference, and
    /// paying it (`invoice_paid`) grants the difference in allowance for
    /// the rest of the period.
    Upgraded {
        subscription: Subscription,
        invoice: Box<invoices::Document>,
        proration: periods::Proration,
    },
    /// A downgrade: the new plan starts with the next period.
    Scheduled(Subscription),
}

/// The subscriptions of one host: its database, ledger, plans and issuer.
pub struct Subscriptions {
    pub database: Database,
    pub ledger: Ledger,
    pub plans: Arc<Vec<Plan>>,
    pub issuer: Arc<Issuer>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("plans", &self.plans)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    fn plan(&self, id: &str) -> Result<&Plan, SubscriptionError> {
        self.plans
            .iter()
            .find(|plan| plan.id == id)
            .ok_or_else(|| SubscriptionError::UnknownPlan(id.to_owned()))
    }

    /// A plan the tenant may subscribe to: on general sale, or its own
    /// custom plan; another tenant's custom plan is unknown.
    fn plan_for(&self, tenant: TenantId, id: &str) -> Result<&Plan, SubscriptionError> {
        self.plan(id)
            .ok()
            .filter(|plan| plan.offered_to(tenant))
            .ok_or_else(|| SubscriptionError::UnknownPlan(id.to_owned()))
    }

    /// Starts `plan` for the tenant now and issues the first period's
    /// invoice; the subscription is `incomplete` until it is paid.
    pub fn subscribe(
        &self,
        tenant: TenantId,
        plan: &str,
    ) -> Result<(Subscription, invoices::Document), SubscriptionError> {
        let plan = self.plan_for(tenant, plan)?.clone();
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        db::write_transaction(&mut conn, |conn| {
            if let Some(live) = live(conn, tenant)? {
                return Err(SubscriptionError::AlreadySubscribed(live.id));
            }
            let id: i64 = diesel::insert_into(subscriptions::table)
                .values((
                    subscriptions::tenant_id.eq(tenant.0),
                    subscriptions::plan.eq(&plan.id),
                    subscriptions::state.eq(State::Incomplete.as_str()),
                    subscriptions::anchor.eq(now.micros()),
                    subscriptions::current_period.eq(0),
                    subscriptions::cancel_at_period_end.eq(false),
                    subscriptions::created_at.eq(now.micros()),
                ))
                .returning(subscriptions::id)
                .get_result(conn)?;
            let invoice = self.open_period(conn, tenant, id, now, 0, &plan, now)?;
            Ok((get_row(conn, id)?, invoice))
        })
    }

    /// The plan as `tenant` buys it: at its reseller's retail price, with
    /// the reseller and the plan at the platform's (wholesale) price, for a
    /// resold tenant; as it is, for a tenant the platform sells to.
    fn priced(
        &self,
        conn: &mut DbConnection,
        tenant: TenantId,
        plan: &Plan,
    ) -> Result<(Plan, Option<TenantId>), SubscriptionError> {
        Ok(match crate::resale::reseller_of(conn, tenant)? {
            Some(reseller) => (reseller.prices.plan(plan), Some(reseller.id)),
            None => (plan.clone(), None),
        })
    }

    /// Writes period `index` of the subscription with its invoice, issued.
    #[allow(clippy::too_many_arguments)]
    fn open_period(
        &self,
        conn: &mut DbConnection,
        tenant: TenantId,
        id: i64,
        anchor: Timestamp,
        index: u32,
        plan: &Plan,
        now: Timestamp,
    ) -> Result<invoices::Document, SubscriptionError> {
        let (start, end) = periods::period(anchor, plan.interval, index);
        let day = |at: Timestamp| at.to_chrono().format("%Y-%m-%d").to_string();
        let (retail, reseller) = self.priced(conn, tenant, plan)?;
        let dates = format!("{} to {}", day(start), day(end));
        let document = invoices::create_within(
            conn,
            &self.issuer,
            &NewDocument {
                tenant,
                kind: invoices::Kind::Invoice,
                currency: plan.price.currency,
                lines: plan_lines(&retail, dates.clone()),
                credits_invoice: None,
            },
            now,
        )?;
        let document = invoices::finalize_within(conn, tenant, document.id, now)?;
        if let Some(reseller) = reseller {
            crate::resale::record_plan_charge(
                conn,
                reseller,
                tenant,
                document.id,
                &format!("{} plan, {dates}", plan.name),
                Money {
                    minor: retail.net_minor(),
                    currency: plan.price.currency,
                },
                Money {
                    minor: plan.net_minor(),
                    currency: plan.price.currency,
                },
                now,
            )?;
        }
        diesel::insert_into(subscription_periods::table)
            .values(PeriodRow {
                subscription_id: id,
                period: index as i32,
                plan: plan.id.clone(),
                starts_at: start.micros(),
                ends_at: end.micros(),
                invoice_id: document.id,
                granted: false,
            })
            .execute(conn)?;
        Ok(document)
    }

    /// Moves the tenant to another plan. A dearer plan (or, at the same
    /// price, a larger one) starts at once: the unused part of the current
    /// price is credited and the same part of the new one charged, by the
    /// microsecond, on an invoice of its own. A cheaper one starts with the
    /// next period.
    pub fn change_plan(
        &self,
        tenant: TenantId,
        plan: &str,
    ) -> Result<PlanChange, SubscriptionError> {
        let new = self.plan_for(tenant, plan)?.clone();
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let change = db::write_transaction(&mut conn, |conn| {
            let live = live(conn, tenant)?.ok_or(SubscriptionError::NotSubscribed)?;
            if live.plan == new.id {
                return Err(SubscriptionError::SamePlan(new.id.clone()));
            }
            let old = self.plan(&live.plan)?.clone();
            if old.price.currency != new.price.currency {
                return Err(SubscriptionError::CurrencyChange {
                    to: new.id.clone(),
                    to_currency: new.price.currency.to_string(),
                    from_currency: old.price.currency.to_string(),
                });
            }
            // A resold tenant's change is decided and prorated at its
            // reseller's retail prices, and the reseller's at the platform's.
            let (wholesale_old, wholesale_new) = (old, new.clone());
            let (old, reseller) = self.priced(conn, tenant, &wholesale_old)?;
            let (new, _) = self.priced(conn, tenant, &wholesale_new)?;
            if (new.net_minor(), new.credits) <= (old.net_minor(), old.credits) {
                diesel::update(subscriptions::table.find(live.id))
                    .set(subscriptions::next_plan.eq(&new.id))
                    .execute(conn)?;
                return Ok(PlanChange::Scheduled(get_row(conn, live.id)?));
            }
            let prorate = |old: &Plan, new: &Plan| {
                periods::proration(
                    old.net_minor(),
                    new.net_minor(),
                    live.period_start,
                    live.period_end,
                    now,
                )
            };
            let proration = prorate(&old, &new);
            let day = |at: Timestamp| at.to_chrono().format("%Y-%m-%d").to_string();
            let rest = format!("{} to {}", day(now), day(live.period_end));
            let draft = invoices::create_within(
                conn,
                &self.issuer,
                &NewDocument {
                    tenant,
                    kind: invoices::Kind::Invoice,
                    currency: new.price.currency,
                    lines: vec![
                        NewLine {
                            description: format!("Unused time on the {} plan, {rest}", old.name),
                            quantity: 1,
                            unit_price_minor: -proration.credit_minor,
                        },
                        NewLine {
                            description: format!("Remaining time on the {} plan, {rest}", new.name),
                            quantity: 1,
                            unit_price_minor: proration.charge_minor,
                        },
                    ],
                    credits_invoice: None,
                },
                now,
            )?;
            let invoice = invoices::finalize_within(conn, tenant, draft.id, now)?;
            if let Some(reseller) = reseller {
                let wholesale = prorate(&wholesale_old, &wholesale_new);
                let net = |proration: &periods::Proration| Money {
                    minor: proration.charge_minor - proration.credit_minor,
                    currency: new.price.currency,
                };
                crate::resale::record_plan_charge(
                    conn,
                    reseller,
                    tenant,
                    invoice.id,
                    &format!("{} to {} plan, {rest}", old.name, new.name),
                    net(&proration),
                    net(&wholesale),
                    now,
                )?;
            }
            diesel::insert_into(subscription_changes::table)
                .values((
                    subscription_changes::subscription_id.eq(live.id),
                    subscription_changes::period.eq(live.period as i32),
                    subscription_changes::from_plan.eq(&old.id),
                    subscription_changes::to_plan.eq(&new.id),
                    subscription_changes::invoice_id.eq(invoice.id),
                    subscription_changes::granted.eq(false),
                    subscription_changes::created_at.eq(now.micros()),
                ))
                .execute(conn)?;
            diesel::update(subscriptions::table.find(live.id))
                .set((
                    subscriptions::plan.eq(&new.id),
                    subscriptions::next_plan.eq(None::<String>),
                ))
                .execute(conn)?;
            mrr::sync(conn, tenant, &self.plans, now)?;
            Ok(PlanChange::Upgraded {
                subscription: get_row(conn, live.id)?,
                invoice: Box::new(invoice),
                proration,
            })
        })?;
        drop(conn);
        // An upgrade that costs nothing (a larger plan at the same price)
        // is paid as it is issued: nobody can pay zero through a provider.
        match change {
            PlanChange::Upgraded {
                invoice, proration, ..
            } if invoice.totals.total_minor == 0 => {
                let subscription = self.invoice_paid(tenant, invoice.id)?;
                let mut conn = self.database.get()?;
                let invoice = invoices::get(&mut conn, tenant, invoice.id)?;
                Ok(PlanChange::Upgraded {
                    subscription,
                    invoice: Box::new(invoice),
                    proration,
                })
            }
            change => Ok(change),
        }
    }

    /// Records that the invoice of a subscription period, or of an upgrade,
    /// was paid: marks it paid and grants what it bought (the period's
    /// allowance and carryover, making the subscription active; or the
    /// upgrade's allowance difference for the rest of the period). A second
    /// notice of the same payment grants nothing more.
    pub fn invoice_paid(
        &self,
        tenant: TenantId,
        invoice: i64,
    ) -> Result<Subscription, SubscriptionError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let period: Option<PeriodRow> = subscription_periods::table
            .inner_join(subscriptions::table)
            .filter(subscription_periods::invoice_id.eq(invoice))
            .filter(subscriptions::tenant_id.eq(tenant.0))
            .select(PeriodRow::as_select())
            .first(&mut conn)
            .optional()?;
        let Some(period) = period else {
            drop(conn);
            return self.change_paid(tenant, invoice, now);
        };
        let document = invoices::get(&mut conn, tenant, invoice)?;
        if document.state != invoices::State::Paid {
            invoices::ensure_paid(&mut conn, tenant, invoice, now)?;
        }
        let row = get_row(&mut conn, period.subscription_id)?;
        if !period.granted {
            let plan = self.plan(&period.plan)?.clone();
            drop(conn);
            self.grant_period(&row, &period, &plan)?;
            conn = self.database.get()?;
            diesel::update(
                subscription_periods::table.find((period.subscription_id, period.period)),
            )
            .set(subscription_periods::granted.eq(true))
            .execute(&mut conn)?;
        }
        // Paying the current period's invoice brings the subscription back.
        if period.period as u32 == row.period && row.state != State::Canceled {
            db::write_transaction(&mut conn, |conn| {
                diesel::update(subscriptions::table.find(row.id))
                    .set(subscriptions::state.eq(State::Active.as_str()))
                    .execute(conn)?;
                mrr::sync(conn, tenant, &self.plans, now)?;
                Ok::<_, SubscriptionError>(())
            })?;
        }
        get_row(&mut conn, row.id)
    }

    /// An upgrade's invoice was paid: the allowance difference, for the
    /// rest of the period the upgrade happened in.
    fn change_paid(
        &self,
        tenant: TenantId,
        invoice: i64,
        now: Timestamp,
    ) -> Result<Subscription, SubscriptionError> {
        let mut conn = self.database.get()?;
        let change: ChangeRow = subscription_changes::table
            .inner_join(subscriptions::table)
            .filter(subscription_changes::invoice_id.eq(invoice))
            .filter(subscriptions::tenant_id.eq(tenant.0))
            .select(ChangeRow::as_select())
            .first(&mut conn)
            .optional()?
            .ok_or(SubscriptionError::NotASubscriptionInvoice(invoice))?;
        if invoices::get(&mut conn, tenant, invoice)?.state != invoices::State::Paid {
            invoices::ensure_paid(&mut conn, tenant, invoice, now)?;
        }
        if !change.granted {
            let (from, to) = (self.plan(&change.from_plan)?, self.plan(&change.to_plan)?);
            let difference = to
                .credits
                .checked_sub(from.credits)
                .unwrap_or(Credits::ZERO);
            let ends_at: i64 = subscription_periods::table
                .find((change.subscription_id, change.period))
                .select(subscription_periods::ends_at)
                .first(&mut conn)?;
            let end = Timestamp::from_micros(ends_at);
            if difference > Credits::ZERO && now < end {
                let wallet = queries::wallet_of(&mut conn, tenant)?;
                self.grant(
                    TransferId::new(format!(
                        "sub-{}-{}-change-{}",
                        change.subscription_id, change.period, change.id
                    ))?,
                    wallet,
                    difference,
                    end,
                    None,
                    format!("{} plan: allowance added by the upgrade", to.name),
                )?;
            }
            diesel::update(subscription_changes::table.find(change.id))
                .set(subscription_changes::granted.eq(true))
                .execute(&mut conn)?;
        }
        get_row(&mut conn, change.subscription_id)
    }

    /// Grants a period's allowance and the previous period's carryover.
    fn grant_period(
        &self,
        subscription: &Subscription,
        period: &PeriodRow,
        plan: &Plan,
    ) -> Result<(), SubscriptionError> {
        let mut conn = self.database.get()?;
        let wallet = queries::wallet_of(&mut conn, subscription.tenant)?;
        let end = Timestamp::from_micros(period.ends_at);
        if self.clock.now() >= end {
            // Paid after the period ended: its credits would be born expired.
            return Ok(());
        }
        if period.period > 0 && plan.carryover.credits_max > Credits::ZERO {
            // The previous allowance expired at this period's start; make
            // sure the ledger has moved what was left of it.
            let limit = RENEWALS_PER_RUN_MAX as usize;
            while self.ledger.expire_due_blocking(limit)? >= limit {}
            let previous = allowance_id(subscription.id, period.period - 1);
            let unused = expired_of(&mut conn, previous.as_str())?;
            let carried = periods::carryover(unused, &plan.carryover);
            if carried > Credits::ZERO {
                let expires = periods::carryover_expiry(
                    subscription.anchor,
                    plan.interval,
                    Timestamp::from_micros(period.starts_at),
                    &plan.carryover,
                );
                self.grant(
                    TransferId::new(format!(
                        "sub-{}-{}-carryover",
                        subscription.id, period.period
                    ))?,
                    wallet,
                    carried,
                    expires,
                    Some(carryover_priority()),
                    format!("{} plan: unused allowance carried over", plan.name),
                )?;
            }
        }
        self.grant(
            allowance_id(subscription.id, period.period),
            wallet,
            plan.credits,
            end,
            None,
            format!("{} plan allowance", plan.name),
        )
    }

    fn grant(
        &self,
        id: TransferId,
        wallet: crate::ledger::AccountId,
        amount: Credits,
        expires_at: Timestamp,
        priority: Option<i32>,
        memo: String,
    ) -> Result<(), SubscriptionError> {
        self.ledger.submit_blocking(Command::Grant {
            id,
            account: wallet,
            source: GrantSource::Allowance,
            amount,
            expires_at: Some(expires_at),
            priority,
            memo,
        })?;
        Ok(())
    }

    /// Ends the subscription when its current period ends.
    pub fn cancel_at_period_end(
        &self,
        tenant: TenantId,
    ) -> Result<Subscription, SubscriptionError> {
        let mut conn = self.database.get()?;
        let live = live(&mut conn, tenant)?.ok_or(SubscriptionError::NotSubscribed)?;
        diesel::update(subscriptions::table.find(live.id))
            .set(subscriptions::cancel_at_period_end.eq(true))
            .execute(&mut conn)?;
        get_row(&mut conn, live.id)
    }

    /// A renewal's payment failed: the subscription is past due (a tenant at
    /// risk) until it is paid.
    pub fn mark_past_due(&self, id: i64) -> Result<(), SubscriptionError> {
        let mut conn = self.database.get()?;
        diesel::update(subscriptions::table.find(id))
            .filter(subscriptions::state.ne(State::Canceled.as_str()))
            .set(subscriptions::state.eq(State::PastDue.as_str()))
            .execute(&mut conn)?;
        Ok(())
    }

    /// The last retry of a renewal's payment failed: the subscription ends
    /// now.
    pub fn end_unpaid(&self, id: i64) -> Result<(), SubscriptionError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        db::write_transaction(&mut conn, |conn| {
            let tenant: i64 = subscriptions::table
                .find(id)
                .select(subscriptions::tenant_id)
                .first(conn)?;
            let ended = diesel::update(subscriptions::table.find(id))
                .filter(subscriptions::state.ne(State::Canceled.as_str()))
                .set((
                    subscriptions::state.eq(State::Canceled.as_str()),
                    subscriptions::canceled_at.eq(now.micros()),
                ))
                .execute(conn)?;
            if ended == 1 {
                mrr::sync(conn, TenantId(tenant), &self.plans, now)?;
            }
            Ok(())
        })
    }

    /// The tenant's live subscription, if any.
    pub fn current(&self, tenant: TenantId) -> Result<Option<Subscription>, SubscriptionError> {
        live(&mut *self.database.get()?, tenant)
    }

    /// Starts the next period of every subscription whose period ended by
    /// now (one period per subscription per run; run it until it returns
    /// zero to catch up), or ends it if it was to be canceled. Returns how
    /// many it moved on.
    pub fn renew_due(&self) -> Result<usize, SubscriptionError> {
        let now = self.clock.now();
        let mut conn = self.database.get()?;
        let due: Vec<(i64, i32)> = subscriptions::table
            .inner_join(
                subscription_periods::table.on(subscription_periods::subscription_id
                    .eq(subscriptions::id)
                    .and(subscription_periods::period.eq(subscriptions::current_period))),
            )
            .filter(subscriptions::state.ne(State::Canceled.as_str()))
            .filter(subscription_periods::ends_at.le(now.micros()))
            .select((subscriptions::id, subscriptions::current_period))
            .limit(RENEWALS_PER_RUN_MAX)
            .load(&mut conn)?;
        let mut moved = 0;
        for (id, period) in due {
            let renewed = db::write_transaction(&mut conn, |conn| {
                let row = get_row(conn, id)?;
                // Another host moved it on first.
                if row.period as i32 != period || row.state == State::Canceled {
                    return Ok(false);
                }
                // Claimed by one conditional update, which also locks the
                // row on PostgreSQL: of two hosts that both read the old
                // period, one moves it on and the other changes nothing.
                let claim = diesel::update(
                    subscriptions::table
                        .find(id)
                        .filter(subscriptions::current_period.eq(period))
                        .filter(subscriptions::state.ne(State::Canceled.as_str())),
                );
                if row.cancel_at_period_end {
                    let ended = claim
                        .set((
                            subscriptions::state.eq(State::Canceled.as_str()),
                            subscriptions::canceled_at.eq(row.period_end.micros()),
                        ))
                        .execute(conn)?;
                    if ended == 1 {
                        mrr::sync(conn, row.tenant, &self.plans, row.period_end)?;
                    }
                    return Ok(ended == 1);
                }
                if claim
                    .set(subscriptions::current_period.eq(period + 1))
                    .execute(conn)?
                    == 0
                {
                    return Ok(false);
                }
                let plan = self
                    .plan(row.next_plan.as_deref().unwrap_or(&row.plan))?
                    .clone();
                let invoice =
                    self.open_period(conn, row.tenant, id, row.anchor, row.period + 1, &plan, now)?;
                // The saved payment method is charged for it by
                // `Payments::collect_due`; the state changes when that
                // succeeds or fails.
                super::payments::schedule_collection(conn, row.tenant, id, invoice.id, now)?;
                diesel::update(subscriptions::table.find(id))
                    .set((
                        subscriptions::plan.eq(&plan.id),
                        subscriptions::next_plan.eq(None::<String>),
                    ))
                    .execute(conn)?;
                mrr::sync(conn, row.tenant, &self.plans, row.period_end)?;
                Ok::<_, SubscriptionError>(true)
            })?;
            moved += usize::from(renewed);
        }
        Ok(moved)
    }
}

/// A period's invoice lines: the plan, and its discount when it has one.
fn plan_lines(plan: &Plan, dates: String) -> Vec<NewLine> {
    let mut lines = vec![NewLine {
        description: format!("{} plan, {dates} ({} credits)", plan.name, plan.credits),
        quantity: 1,
        unit_price_minor: plan.price.minor,
    }];
    if plan.discount_minor() != 0 {
        lines.push(NewLine {
            description: format!(
                "Discount: {}% off the {} plan",
                plan.discount_percent, plan.name
            ),
            quantity: 1,
            unit_price_minor: -plan.discount_minor(),
        });
    }
    lines
}

fn allowance_id(subscription: i64, period: i32) -> TransferId {
    TransferId::new(format!("sub-{subscription}-{period}-allowance")).expect("a valid id")
}

/// What of a grant expired unused: its expire transfers' allocations.
fn expired_of(conn: &mut DbConnection, grant: &str) -> Result<Credits, SubscriptionError> {
    let amounts: Vec<i64> = allocations::table
        .inner_join(transfers::table.on(transfers::id.eq(allocations::transfer_id)))
        .filter(allocations::grant_id.eq(grant))
        .filter(transfers::kind.eq("expire"))
        .select(allocations::amount)
        .load(conn)?;
    Ok(Credits::from_micros(amounts.iter().sum()))
}

fn live(
    conn: &mut DbConnection,
    tenant: TenantId,
) -> Result<Option<Subscription>, SubscriptionError> {
    let id: Option<i64> = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant.0))
        .filter(subscriptions::state.ne(State::Canceled.as_str()))
        .select(subscriptions::id)
        .first(conn)
        .optional()?;
    id.map(|id| get_row(conn, id)).transpose()
}

fn get_row(conn: &mut DbConnection, id: i64) -> Result<Subscription, SubscriptionError> {
    let row: Row = subscriptions::table
        .find(id)
        .select(Row::as_select())
        .first(conn)?;
    let period: PeriodRow = subscription_periods::table
        .find((id, row.current_period))
        .select(PeriodRow::as_select())
        .first(conn)?;
    Ok(Subscription {
        id: row.id,
        tenant: TenantId(row.tenant_id),
        plan: row.plan,
        next_plan: row.next_plan,
        state: State::parse(&row.state),
        anchor: Timestamp::from_micros(row.anchor),
        period: row.current_period as u32,
        period_start: Timestamp::from_micros(period.starts_at),
        period_end: Timestamp::from_micros(period.ends_at),
        cancel_at_period_end: row.cancel_at_period_end,
        canceled_at: row.canceled_at.map(Timestamp::from_micros),
    })
}

#[cfg(test)]
mod tests;
