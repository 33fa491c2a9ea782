-- Invoices and credit notes. Money is integer minor units (cents) of the
-- document's currency. A document gets its number when it leaves draft,
-- from its issuer's series, in the same transaction that advances the
-- series: numbers run without gaps, and a voided document keeps its own.

CREATE TABLE invoice_series (
    issuer TEXT NOT NULL,
    -- 'invoice' or 'credit_note': each runs its own numbers.
    kind TEXT NOT NULL,
    last_number BIGINT NOT NULL,
    PRIMARY KEY (issuer, kind),
    CHECK (last_number >= 0)
);

CREATE TABLE invoices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    kind TEXT NOT NULL,
    issuer TEXT NOT NULL,
    -- Its place in the issuer's series; NULL while a draft.
    number BIGINT,
    -- draft, open, paid, void, uncollectible.
    state TEXT NOT NULL,
    currency TEXT NOT NULL,
    subtotal_minor BIGINT NOT NULL,
    -- The rate as a decimal fraction ('0.2' for 20%) and what it is called.
    tax_rate TEXT NOT NULL,
    tax_name TEXT NOT NULL,
    tax_minor BIGINT NOT NULL,
    total_minor BIGINT NOT NULL,
    -- For a credit note: the invoice it credits.
    credits_invoice_id BIGINT REFERENCES invoices (id),
    created_at BIGINT NOT NULL,
    -- When it was issued (numbered), and when it was paid or voided.
    finalized_at BIGINT,
    closed_at BIGINT,
    UNIQUE (issuer, kind, number),
    CHECK (kind IN ('invoice', 'credit_note')),
    CHECK (state IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    CHECK ((number IS NULL) = (finalized_at IS NULL)),
    CHECK (total_minor = subtotal_minor + tax_minor AND total_minor >= 0)
);
CREATE INDEX invoices_by_tenant ON invoices (tenant_id, id);

CREATE TABLE invoice_lines (
    invoice_id BIGINT NOT NULL REFERENCES invoices (id),
    position INTEGER NOT NULL,
    description TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (invoice_id, position),
    CHECK (quantity > 0 AND amount_minor = quantity * unit_price_minor)
);
