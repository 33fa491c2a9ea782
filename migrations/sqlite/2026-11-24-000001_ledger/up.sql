-- Tenants and the double-entry credit ledger.
-- Amounts are credits in millionths (micro-credits); times are microseconds
-- since the Unix epoch, UTC. Transfers are append-only: nothing updates or
-- deletes a row of `transfers` or `allocations`.

CREATE TABLE tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    parent_tenant_id BIGINT REFERENCES tenants (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    tenant_id BIGINT REFERENCES tenants (id),
    -- NULL: no limit (platform accounts); otherwise how far below zero the
    -- available balance may go.
    credit_limit BIGINT,
    debits_posted BIGINT NOT NULL DEFAULT 0,
    credits_posted BIGINT NOT NULL DEFAULT 0,
    debits_pending BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    CHECK (credit_limit IS NULL OR credit_limit >= 0),
    CHECK (debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0)
);
CREATE UNIQUE INDEX accounts_tenant_kind ON accounts (tenant_id, kind) WHERE tenant_id IS NOT NULL;

CREATE TABLE transfers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    debit_account_id BIGINT NOT NULL REFERENCES accounts (id),
    credit_account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL,
    pending_id TEXT,
    memo TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (amount >= 0),
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_debit ON transfers (debit_account_id, seq);
CREATE INDEX transfers_credit ON transfers (credit_account_id, seq);

CREATE TABLE grants (
    id TEXT PRIMARY KEY NOT NULL REFERENCES transfers (id),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    source TEXT NOT NULL,
    priority INTEGER NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    expires_at BIGINT,
    expired BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    CHECK (amount > 0 AND remaining >= 0 AND reserved >= 0 AND remaining + reserved <= amount)
);
CREATE INDEX grants_account_open ON grants (account_id, remaining, reserved);
CREATE INDEX grants_expiry ON grants (expires_at) WHERE expired = FALSE;

CREATE TABLE holds (
    id TEXT PRIMARY KEY NOT NULL REFERENCES transfers (id),
    debit_account_id BIGINT NOT NULL REFERENCES accounts (id),
    credit_account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL,
    timeout_us BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    resolved_by TEXT REFERENCES transfers (id),
    CHECK (amount > 0 AND timeout_us > 0)
);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE state = 'pending';

-- Which grants a transfer drew on (spend, post) or reserved (hold).
CREATE TABLE allocations (
    transfer_id TEXT NOT NULL REFERENCES transfers (id),
    grant_id TEXT NOT NULL REFERENCES grants (id),
    amount BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, grant_id),
    CHECK (amount > 0)
);

-- The platform's own accounts: sources of granted credits and sinks of
-- spent and expired ones. Ids 1-6 are fixed so every host agrees on them.
INSERT INTO accounts (id, code, kind, tenant_id, credit_limit, created_at) VALUES
    (1, 'platform:revenue', 'revenue', NULL, NULL, 0),
    (2, 'platform:allowances', 'allowances', NULL, NULL, 0),
    (3, 'platform:purchases', 'purchases', NULL, NULL, 0),
    (4, 'platform:promotions', 'promotions', NULL, NULL, 0),
    (5, 'platform:adjustments', 'adjustments', NULL, NULL, 0),
    (6, 'platform:expired', 'expired', NULL, NULL, 0);
-- Tenant accounts start above the reserved range, as on PostgreSQL.
UPDATE sqlite_sequence SET seq = 100 WHERE name = 'accounts';
