-- Resale. A reseller's tenants pay its retail prices into its sales account;
-- the reseller pays the platform's (wholesale) prices for the same calls
-- from its wallet, and the platform's plan prices for its tenants' plan
-- periods on the platform's invoice to it.

-- A suspended tenant's keys and calls are refused until it is resumed; a
-- suspended reseller's tenants are refused with it.
ALTER TABLE tenants ADD COLUMN suspended_at BIGINT;
-- Who suspended it: 'operator' (only the operator lifts that) or 'reseller'.
ALTER TABLE tenants ADD COLUMN suspended_by TEXT CHECK (suspended_by IN ('operator', 'reseller'));

-- Each reseller's retail price list (JSON, as PUT /resellers/{id}/pricing
-- took it) and the wallet balances, in micro-credits, below which it is
-- alerted (a JSON array).
CREATE TABLE reseller_settings (
    reseller_id BIGINT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    pricing TEXT NOT NULL,
    alert_thresholds TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- An alert: a wholesale charge took the reseller's balance below one of its
-- thresholds. One row per crossing.
CREATE TABLE reseller_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reseller_id BIGINT NOT NULL REFERENCES tenants (id),
    threshold BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    call_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (call_id, threshold)
);
CREATE INDEX reseller_alerts_by_reseller ON reseller_alerts (reseller_id, id);

-- The wholesale side of a resold tenant's call: its reseller, what was held
-- of the reseller's wallet, and what the reseller was charged.
ALTER TABLE usage_records ADD COLUMN reseller_id BIGINT;
ALTER TABLE usage_records ADD COLUMN wholesale_held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN wholesale BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_records_by_reseller ON usage_records (reseller_id, period) WHERE reseller_id IS NOT NULL;

-- Each reseller's sales account, which its tenants' retail charges credit.
INSERT INTO accounts (code, kind, tenant_id, credit_limit, created_at)
SELECT 'tenant:' || id || ':sales', 'sales', id, NULL, created_at FROM tenants WHERE kind = 'reseller';

-- A resold tenant's plan period (or plan change) at the platform's price:
-- what the reseller owes the platform for it, beside what its tenant's
-- invoice charged at retail.
CREATE TABLE wholesale_charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reseller_id BIGINT NOT NULL REFERENCES tenants (id),
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    invoice_id BIGINT NOT NULL UNIQUE REFERENCES invoices (id),
    description TEXT NOT NULL,
    currency TEXT NOT NULL,
    retail_minor BIGINT NOT NULL,
    wholesale_minor BIGINT NOT NULL,
    period TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX wholesale_charges_by_reseller ON wholesale_charges (reseller_id, period);

-- A reseller's brand (JSON, as PUT /resellers/{id}/branding took it) and
-- the custom domain its dashboard answers on, one reseller's each.
CREATE TABLE reseller_brands (
    reseller_id BIGINT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    domain TEXT UNIQUE,
    document TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The reseller that issued a document to one of its tenants, from a number
-- series of its own; NULL when the platform issued it.
ALTER TABLE invoices ADD COLUMN reseller_id BIGINT REFERENCES tenants (id);
