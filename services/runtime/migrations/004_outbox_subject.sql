-- The subject a statement is about, so that a service can name the journal
-- entries of one of its objects without reading the statement's bytes or
-- matching on the format of its idempotency keys.
ALTER TABLE outbox ADD COLUMN subject text NOT NULL DEFAULT '';
CREATE INDEX outbox_journaled_by_subject ON outbox (subject, journal_seq)
    WHERE journal_seq IS NOT NULL;
