-- Payments through payment-provider plugins.

-- The ways a tenant saved to pay: the provider's token only, never a card
-- number. Removing one keeps its row (payments refer to it).
CREATE TABLE payment_methods (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    -- The payment-provider plugin that knows the token.
    provider TEXT NOT NULL,
    method TEXT NOT NULL,
    -- The provider's token (a card's pm_..., a PayPal billing agreement);
    -- empty for a bank transfer.
    token TEXT NOT NULL,
    label TEXT NOT NULL,
    -- The one renewals charge; at most one live default per tenant.
    is_default BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    removed_at BIGINT,
    CHECK (method IN ('card', 'paypal', 'bank_transfer'))
);
CREATE INDEX payment_methods_by_tenant ON payment_methods (tenant_id, id);

-- Each attempt to collect an invoice through a provider. The provider gets
-- the idempotency key tollgate-payment-{id}, so a retry takes the money once.
CREATE TABLE payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    invoice_id BIGINT NOT NULL REFERENCES invoices (id),
    payment_method_id BIGINT NOT NULL REFERENCES payment_methods (id),
    provider TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- processing (asked, no answer yet), pending (the outcome comes later:
    -- a bank transfer), succeeded, failed.
    state TEXT NOT NULL,
    provider_reference TEXT,
    failure_reason TEXT,
    -- What the customer must do for a pending payment (bank details).
    instructions TEXT,
    created_at BIGINT NOT NULL,
    settled_at BIGINT,
    CHECK (amount_minor > 0),
    CHECK (state IN ('processing', 'pending', 'succeeded', 'failed'))
);
CREATE UNIQUE INDEX payments_by_reference ON payments (provider, provider_reference);
CREATE INDEX payments_by_tenant ON payments (tenant_id, id);
-- One payment under way or taken per invoice: a second is refused, so an
-- invoice is never paid twice.
CREATE UNIQUE INDEX payments_live ON payments (invoice_id)
    WHERE state IN ('processing', 'pending', 'succeeded');

-- The events of provider notifications, kept by the provider's event id:
-- a replayed notification finds its events here.
CREATE TABLE payment_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    -- The payment it concerned, when the platform knows it.
    payment_id BIGINT REFERENCES payments (id),
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Collecting a renewal's invoice from the saved payment method, and the
-- dunning schedule when that fails.
CREATE TABLE collections (
    invoice_id BIGINT PRIMARY KEY REFERENCES invoices (id),
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id),
    -- Attempts that failed so far.
    failures INTEGER NOT NULL,
    -- When to try next; NULL once nothing is left to try.
    next_attempt_at BIGINT,
    -- collecting, pending (a payment awaits its provider), paid, abandoned.
    state TEXT NOT NULL,
    CHECK (state IN ('collecting', 'pending', 'paid', 'abandoned'))
);
CREATE INDEX collections_due ON collections (next_attempt_at);
