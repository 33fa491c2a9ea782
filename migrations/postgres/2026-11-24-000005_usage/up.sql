-- One record per metered plugin call. A record is written before the
-- ledger settles the call's hold (state 'settling') and marked 'settled'
-- once it has; a record left 'settling' by a crash is settled again on
-- restart from its hold and post transfer ids, which the ledger makes
-- idempotent, or marked 'lost' (credits 0) when its hold timed out first.
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
    -- ok, plugin_error or platform_error.
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
