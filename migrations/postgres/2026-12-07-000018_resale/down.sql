ALTER TABLE invoices DROP COLUMN reseller_id;
DROP TABLE reseller_brands;
DROP TABLE wholesale_charges;
-- A sales account that moved credits stays: the ledger is append-only.
DELETE FROM accounts WHERE kind = 'sales'
    AND id NOT IN (SELECT credit_account_id FROM transfers)
    AND id NOT IN (SELECT debit_account_id FROM transfers);
DROP INDEX usage_records_by_reseller;
ALTER TABLE usage_records DROP COLUMN wholesale;
ALTER TABLE usage_records DROP COLUMN wholesale_held;
ALTER TABLE usage_records DROP COLUMN reseller_id;
DROP TABLE reseller_alerts;
DROP TABLE reseller_settings;
ALTER TABLE tenants DROP COLUMN suspended_by;
ALTER TABLE tenants DROP COLUMN suspended_at;
