-- One record per metered plugin call, written in the same transaction as
-- the call's hold (state 'invoking') and completed in the same transaction
-- as its settlement ('settled'; 'lost' when the hold timed out first). A
-- record a crash left 'invoking' is ended at restart ('interrupted',
-- charged nothing, its hold voided).
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    function TEXT NOT NULL,
    units BIGINT NOT NULL,
    -- Millionths of a credit charged.
    credits BIGINT NOT NULL,
    held BIGINT NOT NULL,
    fuel BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    -- pending, then ok, plugin_error or platform_error.
    outcome TEXT NOT NULL,
    error TEXT,
    idempotency_key TEXT,
    -- The billing period the units count towards, such as 2026-11.
    period TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_records_by_tenant ON usage_records (tenant_id, created_at);
CREATE INDEX usage_records_settling ON usage_records (state);

-- Units used per (tenant, plugin function, period), for charge models that
-- price the period's total.
CREATE TABLE usage_counters (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    plugin TEXT NOT NULL,
    function TEXT NOT NULL,
    period TEXT NOT NULL,
    units BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin, function, period)
);
