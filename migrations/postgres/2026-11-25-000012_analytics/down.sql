DROP TABLE mrr_monthly;
DROP TABLE mrr_movements;
DROP TABLE mrr_customers;
DROP TABLE revenue_monthly;
DROP TABLE revenue_daily;
DROP TABLE usage_monthly;
DROP TABLE usage_platform_daily;
DROP TABLE usage_daily;
