-- Analytics rollups. Each is added to in the same transaction as the rows
-- it sums (a call's settlement, an invoice paid, a credit note issued, a
-- subscription's MRR changing), so reports read a few rollup rows instead
-- of scanning usage records, invoices or subscriptions. Days are UTC
-- 'YYYY-MM-DD', months 'YYYY-MM'. Money is in minor units; MRR in twelfths
-- of a minor unit (`*_12`), so that an annual price divides exactly.

-- Settled calls by tenant, day (of the call's start), plugin and function.
CREATE TABLE usage_daily (
    tenant_id BIGINT NOT NULL,
    day TEXT NOT NULL,
    plugin TEXT NOT NULL,
    function TEXT NOT NULL,
    calls BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    units BIGINT NOT NULL,
    -- Millionths of a credit charged.
    credits BIGINT NOT NULL,
    fuel BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, plugin, function)
);

-- The same, platform-wide.
CREATE TABLE usage_platform_daily (
    day TEXT NOT NULL,
    plugin TEXT NOT NULL,
    function TEXT NOT NULL,
    calls BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    units BIGINT NOT NULL,
    credits BIGINT NOT NULL,
    fuel BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    PRIMARY KEY (day, plugin, function)
);

-- Settled calls by tenant and month: what "usage down against the
-- previous month" compares.
CREATE TABLE usage_monthly (
    tenant_id BIGINT NOT NULL,
    month TEXT NOT NULL,
    calls BIGINT NOT NULL,
    credits BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month)
);
CREATE INDEX usage_monthly_by_month ON usage_monthly (month, tenant_id);

-- Paid invoices and issued credit notes by the day they were paid or
-- issued, what they paid for (subscription, package, other) and how
-- (card, paypal, bank_transfer, manual).
CREATE TABLE revenue_daily (
    day TEXT NOT NULL,
    currency TEXT NOT NULL,
    source TEXT NOT NULL,
    method TEXT NOT NULL,
    invoices BIGINT NOT NULL,
    paid_minor BIGINT NOT NULL,
    paid_tax_minor BIGINT NOT NULL,
    refunds BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    refunded_tax_minor BIGINT NOT NULL,
    PRIMARY KEY (day, currency, source, method),
    CHECK (source IN ('subscription', 'package', 'other'))
);

-- The same by tenant and month, before tax: top customers and paying
-- customers.
CREATE TABLE revenue_monthly (
    tenant_id BIGINT NOT NULL,
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    paid_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month, currency)
);
CREATE INDEX revenue_monthly_by_month ON revenue_monthly (month, currency);

-- Each tenant's MRR now: the sum of its live subscriptions' plans, net of
-- discounts, normalised to a month.
CREATE TABLE mrr_customers (
    tenant_id BIGINT PRIMARY KEY,
    currency TEXT NOT NULL,
    mrr_12 BIGINT NOT NULL,
    plans TEXT NOT NULL,
    -- When it first had MRR, and when it last went to none.
    first_at BIGINT NOT NULL,
    churned_at BIGINT,
    updated_at BIGINT NOT NULL,
    CHECK (mrr_12 >= 0)
);

-- Every change of a tenant's MRR, classified as ChartMogul does.
CREATE TABLE mrr_movements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    delta_12 BIGINT NOT NULL,
    mrr_12 BIGINT NOT NULL,
    plans TEXT NOT NULL,
    CHECK (kind IN ('new', 'expansion', 'contraction', 'churn', 'reactivation')),
    CHECK (delta_12 <> 0 AND mrr_12 >= 0)
);
CREATE INDEX mrr_movements_by_month ON mrr_movements (month, id);
CREATE INDEX mrr_movements_by_tenant ON mrr_movements (tenant_id, id);

-- The movements summed by month and kind.
CREATE TABLE mrr_monthly (
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    movements BIGINT NOT NULL,
    delta_12 BIGINT NOT NULL,
    PRIMARY KEY (month, currency, kind)
);
