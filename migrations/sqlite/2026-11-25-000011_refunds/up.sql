-- Refunds of payments: the money back through the provider, the credits
-- the payment bought and the tenant has not spent taken back, and a credit
-- note. One refund per payment, of the whole payment.
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    payment_id BIGINT NOT NULL UNIQUE REFERENCES payments (id),
    amount_minor BIGINT NOT NULL,
    -- processing (asked, no answer yet), pending (the provider pays it
    -- later: a bank transfer), succeeded, failed.
    state TEXT NOT NULL,
    provider_reference TEXT,
    failure_reason TEXT,
    credit_note_id BIGINT REFERENCES invoices (id),
    -- Millionths of a credit taken back (ledger transfer refund-{id}).
    credits_revoked BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (amount_minor > 0 AND credits_revoked >= 0),
    CHECK (state IN ('processing', 'pending', 'succeeded', 'failed'))
);
CREATE INDEX refunds_by_tenant ON refunds (tenant_id, id);
