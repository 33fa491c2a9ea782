DROP TABLE scoring_rules;
DROP TABLE suppressions;
DROP TABLE lead_events;
DROP TABLE lead_tags;
DROP TABLE leads;
