-- Each plugin's key-value store, one per (tenant, plugin). Files a tenant
-- uploads for a plugin (a CSV of leads) are kept here too, in chunks.
CREATE TABLE plugin_kv (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    -- length(value), so a store's size is one SUM away.
    size_bytes BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin, key)
);
