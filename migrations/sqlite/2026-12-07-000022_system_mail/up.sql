-- Where a tenant's (or a reseller's) system emails go: its invoices,
-- credit notes and payments, and a reseller's wallet alerts. None: it gets
-- no system email.
ALTER TABLE tenants ADD COLUMN email TEXT;

-- System emails, written in the transaction of what they tell (an invoice
-- issued, an invoice paid, an alert recorded), so none is lost; the
-- mailer composes and sends each once, retrying a server's temporary
-- refusals with backoff. `topic` and `subject_id` (the document or the
-- alert) make each email once.
CREATE TABLE mail_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    topic TEXT NOT NULL,
    subject_id BIGINT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    -- The server's answer when it took the message.
    response TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    UNIQUE (topic, subject_id),
    CHECK (topic IN ('invoice', 'credit_note', 'invoice_paid', 'wallet_alert')),
    CHECK (state IN ('pending', 'sent', 'failed'))
);
CREATE INDEX mail_outbox_due ON mail_outbox (state, next_attempt_at);
CREATE INDEX mail_outbox_by_tenant ON mail_outbox (tenant_id, id);
