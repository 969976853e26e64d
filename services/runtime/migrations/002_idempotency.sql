-- The first answer to each idempotency key, per caller and method: a retry
-- with the same key and the same request gets it again, and changes nothing.
CREATE TABLE idempotency (
    party           text NOT NULL,
    method          text NOT NULL,
    idempotency_key text NOT NULL,
    request_sha256  bytea NOT NULL,
    response        bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (party, method, idempotency_key)
);
