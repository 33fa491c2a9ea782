-- Only calls in flight on the exact path are ever looked up by state
-- (`Meter::recover`), so only they are indexed: a settled record no longer
-- adds an entry to an index at every commit.
DROP INDEX usage_records_settling;
CREATE INDEX usage_records_invoking ON usage_records (created_at) WHERE state = 'invoking';
