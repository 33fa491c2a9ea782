-- White-label resellers: a reseller is a tenant of kind 'reseller' (its
-- wallet is its wholesale account), and the tenants it sells to have it as
-- their parent. Its keys have the role 'reseller'.
ALTER TABLE tenants ADD COLUMN kind TEXT NOT NULL DEFAULT 'tenant' CHECK (kind IN ('tenant', 'reseller'));
CREATE INDEX tenants_by_parent ON tenants (parent_tenant_id);
