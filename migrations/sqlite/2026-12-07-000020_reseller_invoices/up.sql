-- The platform's invoice to a reseller for one month's wholesale plan
-- charges (the plan periods of its tenants, at the platform's prices): one
-- per reseller and month.
CREATE TABLE reseller_invoices (
    reseller_id BIGINT NOT NULL REFERENCES tenants (id),
    month TEXT NOT NULL,
    invoice_id BIGINT NOT NULL UNIQUE REFERENCES invoices (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (reseller_id, month)
);
