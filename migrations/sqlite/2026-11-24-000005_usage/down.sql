DROP TABLE usage_counters;
DROP TABLE usage_records;
