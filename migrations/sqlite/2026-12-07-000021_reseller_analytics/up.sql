-- The revenue and MRR rollups by seller: 0 for what the platform sells
-- (its own tenants at its prices, its resellers at wholesale), a
-- reseller's id for what that reseller sells its tenants at retail. A
-- resold tenant's MRR is kept twice: at the platform's plan prices under
-- 0, at its reseller's under the reseller. Its invoices are the
-- reseller's revenue only.

CREATE TABLE revenue_daily_new (
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
    seller BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seller, day, currency, source, method),
    CHECK (source IN ('subscription', 'package', 'other'))
);
INSERT INTO revenue_daily_new SELECT *, 0 FROM revenue_daily;
DROP TABLE revenue_daily;
ALTER TABLE revenue_daily_new RENAME TO revenue_daily;

CREATE TABLE revenue_monthly_new (
    tenant_id BIGINT NOT NULL,
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    paid_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    seller BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seller, tenant_id, month, currency)
);
INSERT INTO revenue_monthly_new SELECT *, 0 FROM revenue_monthly;
DROP TABLE revenue_monthly;
ALTER TABLE revenue_monthly_new RENAME TO revenue_monthly;
CREATE INDEX revenue_monthly_by_month ON revenue_monthly (seller, month, currency);

CREATE TABLE mrr_customers_new (
    tenant_id BIGINT NOT NULL,
    currency TEXT NOT NULL,
    mrr_12 BIGINT NOT NULL,
    plans TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    churned_at BIGINT,
    updated_at BIGINT NOT NULL,
    seller BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seller, tenant_id),
    CHECK (mrr_12 >= 0)
);
INSERT INTO mrr_customers_new SELECT *, 0 FROM mrr_customers;
DROP TABLE mrr_customers;
ALTER TABLE mrr_customers_new RENAME TO mrr_customers;

ALTER TABLE mrr_movements ADD COLUMN seller BIGINT NOT NULL DEFAULT 0;
DROP INDEX mrr_movements_by_month;
CREATE INDEX mrr_movements_by_month ON mrr_movements (seller, month, id);

CREATE TABLE mrr_monthly_new (
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    movements BIGINT NOT NULL,
    delta_12 BIGINT NOT NULL,
    seller BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seller, month, currency, kind)
);
INSERT INTO mrr_monthly_new SELECT *, 0 FROM mrr_monthly;
DROP TABLE mrr_monthly;
ALTER TABLE mrr_monthly_new RENAME TO mrr_monthly;

-- A reseller's invoices to its tenants, paid, and its credit notes, until
-- now left out of every rollup: its revenue, at retail.
CREATE TEMPORARY TABLE revenue_backfill AS
SELECT d.seller, d.tenant_id, strftime('%Y-%m-%d', d.at / 1000000, 'unixepoch') AS day, d.currency,
       CASE WHEN EXISTS (SELECT 1 FROM purchases p WHERE p.invoice_id = d.invoice) THEN 'package'
            WHEN EXISTS (SELECT 1 FROM subscription_periods s WHERE s.invoice_id = d.invoice)
              OR EXISTS (SELECT 1 FROM subscription_changes c WHERE c.invoice_id = d.invoice)
            THEN 'subscription' ELSE 'other' END AS source,
       COALESCE((SELECT m.method FROM payments p JOIN payment_methods m ON m.id = p.payment_method_id
                 WHERE p.invoice_id = d.invoice AND p.state <> 'failed' ORDER BY p.id DESC LIMIT 1),
                'manual') AS method,
       d.invoices, d.paid_minor, d.paid_tax_minor, d.refunds, d.refunded_minor, d.refunded_tax_minor
FROM (
    SELECT reseller_id AS seller, tenant_id, closed_at AS at, currency, id AS invoice,
           1 AS invoices, subtotal_minor AS paid_minor, tax_minor AS paid_tax_minor,
           0 AS refunds, 0 AS refunded_minor, 0 AS refunded_tax_minor
    FROM invoices WHERE kind = 'invoice' AND state = 'paid' AND reseller_id IS NOT NULL
    UNION ALL
    SELECT reseller_id, tenant_id, finalized_at, currency, credits_invoice_id,
           0, 0, 0, 1, subtotal_minor, tax_minor
    FROM invoices WHERE kind = 'credit_note' AND finalized_at IS NOT NULL AND reseller_id IS NOT NULL
) d;
INSERT INTO revenue_daily (day, currency, source, method, invoices, paid_minor, paid_tax_minor, refunds, refunded_minor, refunded_tax_minor, seller)
SELECT day, currency, source, method, SUM(invoices), SUM(paid_minor), SUM(paid_tax_minor),
       SUM(refunds), SUM(refunded_minor), SUM(refunded_tax_minor), seller
FROM revenue_backfill GROUP BY seller, day, currency, source, method;
INSERT INTO revenue_monthly (tenant_id, month, currency, paid_minor, refunded_minor, seller)
SELECT tenant_id, substr(day, 1, 7), currency, SUM(paid_minor), SUM(refunded_minor), seller
FROM revenue_backfill GROUP BY seller, tenant_id, substr(day, 1, 7), currency;
DROP TABLE revenue_backfill;
-- A resold tenant's MRR at retail is computed from its reseller's prices,
-- which only the host can read: `tollgate serve` adopts it at start.
