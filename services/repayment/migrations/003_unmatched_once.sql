-- A payment that matched no open loan is kept once: a retry of the same call
-- (same bank reference) does not list it twice.
CREATE UNIQUE INDEX unmatched_payments_reference ON unmatched_payments (bank_reference);
