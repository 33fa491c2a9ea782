DROP TABLE reseller_approvals;
ALTER TABLE plugins DROP COLUMN reseller_id;
