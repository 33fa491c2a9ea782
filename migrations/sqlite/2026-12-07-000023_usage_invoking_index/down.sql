DROP INDEX usage_records_invoking;
CREATE INDEX usage_records_settling ON usage_records (state);
