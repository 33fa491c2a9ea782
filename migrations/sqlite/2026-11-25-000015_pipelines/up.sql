-- Deal pipelines: ordered stages (a stage may mean the deal is won or
-- lost), and rules that act when a deal enters a stage.
CREATE TABLE pipelines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX pipelines_by_tenant ON pipelines (tenant_id, id);

CREATE TABLE stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    -- won or lost; null for a stage on the way.
    outcome TEXT,
    -- Removed from the pipeline; kept for the moves that name it.
    removed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX stages_by_pipeline ON stages (pipeline_id, position);

-- What happens when a deal enters the stage: start_sequence, call_webhook
-- or create_task, with its settings as JSON.
CREATE TABLE stage_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    stage_id BIGINT NOT NULL REFERENCES stages (id),
    action TEXT NOT NULL,
    config TEXT NOT NULL,
    -- Replaced by an edit of the pipeline; kept for the firings that name it.
    removed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX stage_rules_by_stage ON stage_rules (stage_id);

-- Deals, each in one stage at a position in its column (0 is the top).
CREATE TABLE deals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    stage_id BIGINT NOT NULL REFERENCES stages (id),
    position BIGINT NOT NULL,
    title TEXT NOT NULL,
    -- Minor units of currency.
    value_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    owner TEXT,
    lead_id BIGINT REFERENCES leads (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deals_by_stage ON deals (stage_id, position);
CREATE INDEX deals_by_tenant ON deals (tenant_id, id);

-- Every change of a deal's stage, and each rule it fired: the rule's
-- firing is unique per change, so a rule fires once per change whoever
-- retries what.
CREATE TABLE deal_moves (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    deal_id BIGINT NOT NULL REFERENCES deals (id),
    from_stage_id BIGINT,
    to_stage_id BIGINT NOT NULL,
    moved_at BIGINT NOT NULL
);
CREATE INDEX deal_moves_by_deal ON deal_moves (deal_id, id);

CREATE TABLE rule_firings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    rule_id BIGINT NOT NULL REFERENCES stage_rules (id),
    move_id BIGINT NOT NULL REFERENCES deal_moves (id),
    -- pending, done or failed.
    status TEXT NOT NULL,
    detail TEXT,
    lease_until BIGINT,
    fired_at BIGINT NOT NULL,
    UNIQUE (rule_id, move_id)
);
CREATE INDEX rule_firings_pending ON rule_firings (status, id);
CREATE INDEX rule_firings_by_move ON rule_firings (move_id);

ALTER TABLE tasks ADD COLUMN deal_id BIGINT REFERENCES deals (id);
