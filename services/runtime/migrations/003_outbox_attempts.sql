-- How many times a statement was sent to the journal: a statement the journal
-- has not confirmed is sent again after 5 s, then 10, 20 ... up to 320 s, so
-- that a journal running behind is not flooded with copies.
ALTER TABLE outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0;
