DROP TABLE mail_outbox;
ALTER TABLE tenants DROP COLUMN email;
