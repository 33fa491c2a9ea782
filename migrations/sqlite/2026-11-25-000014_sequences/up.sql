-- Sending accounts: a channel plugin and the address (or account) it
-- sends as, with the caps on how much it may send in any rolling hour and
-- day.
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    plugin TEXT NOT NULL,
    address TEXT NOT NULL,
    name TEXT,
    daily_cap BIGINT,
    hourly_cap BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, plugin, address)
);

-- Sequences: ordered steps sent to each enrolled lead, inside a sending
-- window in the lead's time zone. Editing the steps makes a new version;
-- enrollments keep the version they started on.
CREATE TABLE sequences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    -- active or paused.
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- For leads without a time zone of their own.
    time_zone TEXT NOT NULL,
    -- Minutes after local midnight: sends start at or after the first and
    -- before the second.
    window_start_minute BIGINT NOT NULL,
    window_end_minute BIGINT NOT NULL,
    -- The sending (and business) days, Monday = 1, Tuesday = 2, ... Sunday = 64.
    window_days BIGINT NOT NULL,
    tracking BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sequences_by_tenant ON sequences (tenant_id, id);

CREATE TABLE sequence_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    sequence_id BIGINT NOT NULL REFERENCES sequences (id),
    version BIGINT NOT NULL,
    position BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- The step's settings and templates, as JSON.
    config TEXT NOT NULL,
    UNIQUE (sequence_id, version, position)
);

-- A lead going through a sequence. `position` is its next step; the
-- scheduler runs it at `next_run_at` and holds a lease on it while it does,
-- so that two hosts never run the same enrollment at once.
CREATE TABLE enrollments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    sequence_id BIGINT NOT NULL REFERENCES sequences (id),
    version BIGINT NOT NULL,
    lead_id BIGINT NOT NULL REFERENCES leads (id),
    -- active, completed, stopped or blocked.
    status TEXT NOT NULL,
    reason TEXT,
    position BIGINT NOT NULL,
    next_run_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (sequence_id, lead_id)
);
CREATE INDEX enrollments_due ON enrollments (status, next_run_at);
CREATE INDEX enrollments_by_lead ON enrollments (lead_id, status);

-- Each step an enrollment ran, once: the unique key is what makes a step
-- run at most once whichever host runs it.
CREATE TABLE step_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    enrollment_id BIGINT NOT NULL REFERENCES enrollments (id),
    step_id BIGINT NOT NULL REFERENCES sequence_steps (id),
    variant BIGINT,
    -- sending, sent, failed, blocked or done.
    status TEXT NOT NULL,
    mailbox_id BIGINT REFERENCES mailboxes (id),
    recipient TEXT,
    delivery_id TEXT,
    call_id TEXT,
    detail TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    opened_at BIGINT,
    clicked_at BIGINT,
    replied_at BIGINT,
    UNIQUE (enrollment_id, step_id)
);
CREATE INDEX step_runs_by_mailbox ON step_runs (mailbox_id, started_at);
CREATE INDEX step_runs_by_delivery ON step_runs (tenant_id, delivery_id);
CREATE INDEX step_runs_by_step ON step_runs (step_id, variant);

-- Work for a person: a call to make, a manual step of a sequence, a task a
-- deal's stage rule created.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    title TEXT NOT NULL,
    -- call, email, linkedin or todo.
    kind TEXT NOT NULL,
    lead_id BIGINT REFERENCES leads (id),
    step_run_id BIGINT REFERENCES step_runs (id),
    due_at BIGINT,
    -- open, done or cancelled.
    status TEXT NOT NULL,
    notes TEXT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, status, id);
