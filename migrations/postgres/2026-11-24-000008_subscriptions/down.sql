DROP TABLE subscription_periods;
DROP TABLE subscriptions;
