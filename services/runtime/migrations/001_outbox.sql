-- The transactional outbox: a state change and its journal statement are
-- written in one transaction; the relay publishes the statement and marks it
-- journaled once the journal confirms the sequence number.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    statement       bytea NOT NULL,
    signature       bytea NOT NULL CHECK (length(signature) = 64),
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    journal_seq     bigint,
    refused_reason  text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE journal_seq IS NULL AND refused_reason IS NULL;
