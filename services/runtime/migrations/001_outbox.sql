-- The transactional outbox: a state change and its journal statement are
-- written in one transaction. The relay signs pending statements in batches,
-- publishes them, and marks a row journaled once the journal's entry for it
-- comes back with its sequence number.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    statement       bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    journal_seq     bigint,
    refused_reason  text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE journal_seq IS NULL AND refused_reason IS NULL;
