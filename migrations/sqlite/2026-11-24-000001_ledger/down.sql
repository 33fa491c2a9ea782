DROP TABLE allocations;
DROP TABLE holds;
DROP TABLE grants;
DROP TABLE transfers;
DROP TABLE accounts;
DROP TABLE tenants;
