DROP TABLE reseller_invoices;
