-- Leases are loans of kind 'lease': rentals instead of one bullet, paid line
-- by line; penalty accrues up to accrued_until on the lines past their grace.
ALTER TABLE loans ADD COLUMN kind text NOT NULL DEFAULT 'loan';
ALTER TABLE loans ADD COLUMN lease_option text NOT NULL DEFAULT '';
ALTER TABLE loans ADD COLUMN per_year integer NOT NULL DEFAULT 0;
ALTER TABLE schedule_lines ADD COLUMN paid bigint NOT NULL DEFAULT 0 CHECK (paid >= 0);
ALTER TABLE schedule_lines ADD COLUMN waived boolean NOT NULL DEFAULT false;
ALTER TABLE schedule_lines ADD COLUMN residual boolean NOT NULL DEFAULT false;
ALTER TABLE schedule_lines ADD COLUMN late_fee_charged boolean NOT NULL DEFAULT false;
