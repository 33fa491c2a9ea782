DROP TABLE subscription_changes;
DROP TABLE subscription_periods;
DROP TABLE subscriptions;
