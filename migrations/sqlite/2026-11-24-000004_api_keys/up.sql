-- API keys. The key itself is shown once, at creation; only its SHA-256 is
-- kept (a key is 256 random bits, so a fast hash is enough). An operator key
-- belongs to no tenant; a tenant admin's or member's to exactly one.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT REFERENCES tenants (id),
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The first characters of the key, to tell keys apart in lists.
    prefix TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CHECK ((role = 'operator') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
