DELETE FROM revenue_daily WHERE seller <> 0;
DELETE FROM revenue_monthly WHERE seller <> 0;
DELETE FROM mrr_customers WHERE seller <> 0;
DELETE FROM mrr_movements WHERE seller <> 0;
DELETE FROM mrr_monthly WHERE seller <> 0;

CREATE TABLE revenue_daily_old (
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
INSERT INTO revenue_daily_old
SELECT day, currency, source, method, invoices, paid_minor, paid_tax_minor, refunds, refunded_minor, refunded_tax_minor
FROM revenue_daily;
DROP TABLE revenue_daily;
ALTER TABLE revenue_daily_old RENAME TO revenue_daily;

CREATE TABLE revenue_monthly_old (
    tenant_id BIGINT NOT NULL,
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    paid_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month, currency)
);
INSERT INTO revenue_monthly_old
SELECT tenant_id, month, currency, paid_minor, refunded_minor FROM revenue_monthly;
DROP TABLE revenue_monthly;
ALTER TABLE revenue_monthly_old RENAME TO revenue_monthly;
CREATE INDEX revenue_monthly_by_month ON revenue_monthly (month, currency);

CREATE TABLE mrr_customers_old (
    tenant_id BIGINT PRIMARY KEY,
    currency TEXT NOT NULL,
    mrr_12 BIGINT NOT NULL,
    plans TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    churned_at BIGINT,
    updated_at BIGINT NOT NULL,
    CHECK (mrr_12 >= 0)
);
INSERT INTO mrr_customers_old
SELECT tenant_id, currency, mrr_12, plans, first_at, churned_at, updated_at FROM mrr_customers;
DROP TABLE mrr_customers;
ALTER TABLE mrr_customers_old RENAME TO mrr_customers;

DROP INDEX mrr_movements_by_month;
ALTER TABLE mrr_movements DROP COLUMN seller;
CREATE INDEX mrr_movements_by_month ON mrr_movements (month, id);

CREATE TABLE mrr_monthly_old (
    month TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    movements BIGINT NOT NULL,
    delta_12 BIGINT NOT NULL,
    PRIMARY KEY (month, currency, kind)
);
INSERT INTO mrr_monthly_old SELECT month, currency, kind, movements, delta_12 FROM mrr_monthly;
DROP TABLE mrr_monthly;
ALTER TABLE mrr_monthly_old RENAME TO mrr_monthly;
