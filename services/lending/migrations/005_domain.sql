-- While a second approval is awaited: what the first one proposed
-- ('approve' or 'counter_offer'); empty otherwise.
ALTER TABLE applications ADD COLUMN proposal text NOT NULL DEFAULT '';
-- The process manager's states come from the domain's table (PLATFORM_STEPS),
-- not from a list repeated here.
DROP INDEX IF EXISTS applications_to_step;
CREATE INDEX applications_by_state ON applications (kind, state);
