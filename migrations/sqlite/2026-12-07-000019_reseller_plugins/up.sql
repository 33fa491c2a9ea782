-- A reseller's own plugins: installed by it, seen, enabled and called only
-- by its own tenants (and itself), and only of the kinds and reaching only
-- the HTTP hosts the operator approved for it. NULL: the platform's.
ALTER TABLE plugins ADD COLUMN reseller_id BIGINT REFERENCES tenants (id);

-- What the operator approved for each reseller's plugins: their kinds and
-- the HTTP hosts they may reach, newline-separated.
CREATE TABLE reseller_approvals (
    reseller_id BIGINT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    kinds TEXT NOT NULL,
    http_hosts TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
