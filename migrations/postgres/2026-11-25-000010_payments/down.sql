DROP TABLE collections;
DROP TABLE payment_events;
DROP TABLE payments;
DROP TABLE payment_methods;
