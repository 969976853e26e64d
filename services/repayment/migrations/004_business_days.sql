-- The signed contract's business-day convention and holiday calendar: a lease's
-- renewal rolls its new rentals' due dates as the original ones were.
ALTER TABLE loans ADD COLUMN business_days text NOT NULL DEFAULT 'none';
ALTER TABLE loans ADD COLUMN holiday_calendar text NOT NULL DEFAULT '';
