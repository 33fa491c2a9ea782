-- A tenant's leads: the people its sequences contact. A lead is found
-- again by any of three keys, each unique within the tenant: its email
-- (lower-cased), its LinkedIn profile (normalised) and its full name with
-- its company's domain (lower-cased). Imports merge into the lead a key
-- finds instead of creating a second one.
CREATE TABLE leads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    title TEXT,
    company TEXT,
    domain TEXT,
    linkedin_url TEXT,
    phone TEXT,
    location TEXT,
    time_zone TEXT,
    company_size BIGINT,
    -- A JSON object of string values.
    custom_fields TEXT NOT NULL,
    email_key TEXT,
    linkedin_key TEXT,
    name_key TEXT,
    -- Names, email, company and title, lower-cased, for searching.
    search_text TEXT NOT NULL,
    -- unsubscribed, bounced or manual; null when the lead may be contacted.
    do_not_contact TEXT,
    do_not_contact_at BIGINT,
    score BIGINT NOT NULL,
    -- When the decay of an engagement's points next changes the score.
    score_changes_at BIGINT,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX leads_by_email ON leads (tenant_id, email_key);
CREATE UNIQUE INDEX leads_by_linkedin ON leads (tenant_id, linkedin_key);
CREATE UNIQUE INDEX leads_by_name ON leads (tenant_id, name_key);
CREATE INDEX leads_by_score ON leads (tenant_id, score, id);
CREATE INDEX leads_score_changes ON leads (score_changes_at);

CREATE TABLE lead_tags (
    lead_id BIGINT NOT NULL REFERENCES leads (id),
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    tag TEXT NOT NULL,
    PRIMARY KEY (lead_id, tag)
);
CREATE INDEX lead_tags_by_tag ON lead_tags (tenant_id, tag, lead_id);

-- What happened with a lead: engagement (opened, clicked, replied...),
-- read by scoring and shown as its timeline.
CREATE TABLE lead_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    lead_id BIGINT NOT NULL REFERENCES leads (id),
    kind TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    detail TEXT,
    -- The sequence step that caused it, when one did.
    step_run_id BIGINT
);
CREATE INDEX lead_events_by_lead ON lead_events (lead_id, occurred_at);

-- Addresses a tenant must never write to again (one-click unsubscribes,
-- hard bounces), kept as SHA-256 of the lower-cased address so that
-- erasing a lead's data keeps honouring its unsubscribe.
CREATE TABLE suppressions (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    address_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, address_hash)
);

-- Each tenant's scoring rules, as JSON.
CREATE TABLE scoring_rules (
    tenant_id BIGINT PRIMARY KEY REFERENCES tenants (id),
    rules TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
