-- Credit packages bought: the invoice that bills each, and whether its
-- credits are on the ledger (granted, under the id purchase-{id}, when
-- the invoice is paid).
CREATE TABLE purchases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    package TEXT NOT NULL,
    -- Millionths of a credit.
    credits BIGINT NOT NULL,
    invoice_id BIGINT NOT NULL UNIQUE REFERENCES invoices (id),
    granted BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (credits > 0)
);
CREATE INDEX purchases_by_tenant ON purchases (tenant_id, id);
