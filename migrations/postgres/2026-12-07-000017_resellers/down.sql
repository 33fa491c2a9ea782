DROP INDEX tenants_by_parent;
ALTER TABLE tenants DROP COLUMN kind;
