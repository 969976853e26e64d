-- Financial leases are applications of kind 'lease': the asset and its terms
-- in "lease", no order (order_id is empty), the option exercised at the end.
ALTER TABLE applications ADD COLUMN kind text NOT NULL DEFAULT 'order';
ALTER TABLE applications ADD COLUMN lease jsonb;
ALTER TABLE applications ADD COLUMN lease_option text NOT NULL DEFAULT '';
ALTER TABLE applications ADD COLUMN vendor_payment_reference text NOT NULL DEFAULT '';
ALTER TABLE applications ADD COLUMN commenced_on date;
ALTER TABLE applications ADD CONSTRAINT application_kind CHECK (kind IN ('order', 'lease'));
