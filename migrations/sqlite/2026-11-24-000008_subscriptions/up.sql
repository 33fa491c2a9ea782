-- Subscriptions to plans, and their periods. A period row is written once
-- per period (its primary key makes a renewal happen once, however many
-- hosts try), with the invoice that bills it; the period's allowance is
-- granted on the ledger, under an id made from the subscription and the
-- period, when that invoice is paid.

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    -- The plan of the current period, and the plan the next one will have
    -- when a downgrade waits for the period's end.
    plan TEXT NOT NULL,
    next_plan TEXT,
    -- incomplete (first invoice unpaid), active, past_due, canceled.
    state TEXT NOT NULL,
    -- Periods start at the anchor plus whole intervals.
    anchor BIGINT NOT NULL,
    current_period INTEGER NOT NULL,
    cancel_at_period_end BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    canceled_at BIGINT,
    CHECK (state IN ('incomplete', 'active', 'past_due', 'canceled'))
);
-- One live subscription per tenant.
CREATE UNIQUE INDEX subscriptions_live ON subscriptions (tenant_id) WHERE state <> 'canceled';

CREATE TABLE subscription_periods (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id),
    period INTEGER NOT NULL,
    plan TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    invoice_id BIGINT NOT NULL REFERENCES invoices (id),
    -- Set once the allowance (and any carryover) is on the ledger.
    granted BOOLEAN NOT NULL,
    PRIMARY KEY (subscription_id, period),
    CHECK (starts_at < ends_at)
);
CREATE INDEX subscription_periods_by_invoice ON subscription_periods (invoice_id);

-- Upgrades: the plan a subscription moved to mid-period, and the invoice
-- for the prorated difference; the allowance difference is granted when
-- that invoice is paid.
CREATE TABLE subscription_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id),
    period INTEGER NOT NULL,
    from_plan TEXT NOT NULL,
    to_plan TEXT NOT NULL,
    invoice_id BIGINT NOT NULL REFERENCES invoices (id),
    granted BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX subscription_changes_by_invoice ON subscription_changes (invoice_id);
