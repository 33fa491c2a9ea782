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

-- How an invoice was paid is looked up when it is paid (the revenue
-- rollup's method), whatever state its payments are in.
CREATE INDEX payments_by_invoice ON payments (invoice_id, id);

-- What happened before these tables existed, summed once here; from now
-- on each is added to as it happens.
INSERT INTO usage_daily (tenant_id, day, plugin, function, calls, failed, units, credits, fuel, duration_us)
SELECT tenant_id, strftime('%Y-%m-%d', created_at / 1000000, 'unixepoch'), plugin, function,
       COUNT(*), SUM(outcome <> 'ok'), SUM(MAX(units, 0)), SUM(credits), SUM(MAX(fuel, 0)),
       SUM(MAX(duration_us, 0))
FROM usage_records WHERE state <> 'invoking'
GROUP BY 1, 2, 3, 4;
INSERT INTO usage_platform_daily (day, plugin, function, calls, failed, units, credits, fuel, duration_us)
SELECT day, plugin, function, SUM(calls), SUM(failed), SUM(units), SUM(credits), SUM(fuel), SUM(duration_us)
FROM usage_daily GROUP BY 1, 2, 3;
INSERT INTO usage_monthly (tenant_id, month, calls, credits)
SELECT tenant_id, substr(day, 1, 7), SUM(calls), SUM(credits)
FROM usage_daily GROUP BY 1, 2;

-- Paid invoices on the day they were paid, credit notes on the day they
-- were issued, each by what the invoice paid for and how.
CREATE TEMPORARY TABLE revenue_backfill AS
SELECT d.tenant_id, strftime('%Y-%m-%d', d.at / 1000000, 'unixepoch') AS day, d.currency,
       CASE WHEN EXISTS (SELECT 1 FROM purchases p WHERE p.invoice_id = d.invoice) THEN 'package'
            WHEN EXISTS (SELECT 1 FROM subscription_periods s WHERE s.invoice_id = d.invoice)
              OR EXISTS (SELECT 1 FROM subscription_changes c WHERE c.invoice_id = d.invoice)
            THEN 'subscription' ELSE 'other' END AS source,
       COALESCE((SELECT m.method FROM payments p JOIN payment_methods m ON m.id = p.payment_method_id
                 WHERE p.invoice_id = d.invoice AND p.state <> 'failed' ORDER BY p.id DESC LIMIT 1),
                'manual') AS method,
       d.invoices, d.paid_minor, d.paid_tax_minor, d.refunds, d.refunded_minor, d.refunded_tax_minor
FROM (
    SELECT tenant_id, closed_at AS at, currency, id AS invoice,
           1 AS invoices, subtotal_minor AS paid_minor, tax_minor AS paid_tax_minor,
           0 AS refunds, 0 AS refunded_minor, 0 AS refunded_tax_minor
    FROM invoices WHERE kind = 'invoice' AND state = 'paid'
    UNION ALL
    SELECT tenant_id, finalized_at, currency, credits_invoice_id,
           0, 0, 0, 1, subtotal_minor, tax_minor
    FROM invoices WHERE kind = 'credit_note' AND finalized_at IS NOT NULL
) d;
INSERT INTO revenue_daily (day, currency, source, method, invoices, paid_minor, paid_tax_minor, refunds, refunded_minor, refunded_tax_minor)
SELECT day, currency, source, method, SUM(invoices), SUM(paid_minor), SUM(paid_tax_minor),
       SUM(refunds), SUM(refunded_minor), SUM(refunded_tax_minor)
FROM revenue_backfill GROUP BY 1, 2, 3, 4;
INSERT INTO revenue_monthly (tenant_id, month, currency, paid_minor, refunded_minor)
SELECT tenant_id, substr(day, 1, 7), currency, SUM(paid_minor), SUM(refunded_minor)
FROM revenue_backfill GROUP BY 1, 2, 3;
DROP TABLE revenue_backfill;
