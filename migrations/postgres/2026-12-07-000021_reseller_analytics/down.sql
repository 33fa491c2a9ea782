DELETE FROM revenue_daily WHERE seller <> 0;
DELETE FROM revenue_monthly WHERE seller <> 0;
DELETE FROM mrr_customers WHERE seller <> 0;
DELETE FROM mrr_movements WHERE seller <> 0;
DELETE FROM mrr_monthly WHERE seller <> 0;

ALTER TABLE revenue_daily DROP CONSTRAINT revenue_daily_pkey;
ALTER TABLE revenue_daily DROP COLUMN seller;
ALTER TABLE revenue_daily ADD PRIMARY KEY (day, currency, source, method);

DROP INDEX revenue_monthly_by_month;
ALTER TABLE revenue_monthly DROP CONSTRAINT revenue_monthly_pkey;
ALTER TABLE revenue_monthly DROP COLUMN seller;
ALTER TABLE revenue_monthly ADD PRIMARY KEY (tenant_id, month, currency);
CREATE INDEX revenue_monthly_by_month ON revenue_monthly (month, currency);

ALTER TABLE mrr_customers DROP CONSTRAINT mrr_customers_pkey;
ALTER TABLE mrr_customers DROP COLUMN seller;
ALTER TABLE mrr_customers ADD PRIMARY KEY (tenant_id);

DROP INDEX mrr_movements_by_month;
ALTER TABLE mrr_movements DROP COLUMN seller;
CREATE INDEX mrr_movements_by_month ON mrr_movements (month, id);

ALTER TABLE mrr_monthly DROP CONSTRAINT mrr_monthly_pkey;
ALTER TABLE mrr_monthly DROP COLUMN seller;
ALTER TABLE mrr_monthly ADD PRIMARY KEY (month, currency, kind);
