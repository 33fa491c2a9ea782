ALTER TABLE tasks DROP COLUMN deal_id;
DROP TABLE rule_firings;
DROP TABLE deal_moves;
DROP TABLE deals;
DROP TABLE stage_rules;
DROP TABLE stages;
DROP TABLE pipelines;
