-- The journal: entries (Merkle leaves), stored perfect subtree hashes,
-- signed checkpoints, and refused submissions for the operator.
CREATE TABLE entries (
    seq             bigint PRIMARY KEY CHECK (seq >= 0),
    time_micros     bigint NOT NULL,
    prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
    producer        text NOT NULL,
    key_id          bytea NOT NULL CHECK (length(key_id) = 32),
    produced_micros bigint NOT NULL,
    subject         text NOT NULL,
    event_type      text NOT NULL,
    idempotency_key text NOT NULL,
    payload         bytea NOT NULL,
    batch_size      integer NOT NULL CHECK (batch_size > 0),
    batch_index     integer NOT NULL CHECK (batch_index >= 0 AND batch_index < batch_size),
    batch_path      bytea NOT NULL CHECK (length(batch_path) % 32 = 0),
    signature       bytea NOT NULL CHECK (length(signature) = 64),
    leaf_hash       bytea NOT NULL CHECK (length(leaf_hash) = 32),
    UNIQUE (producer, idempotency_key)
);
CREATE INDEX entries_by_subject ON entries (subject, seq);

-- Node (level, idx) is the root of leaves [idx * 2^level, (idx + 1) * 2^level).
CREATE TABLE tree_nodes (
    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    tree_size   bigint PRIMARY KEY CHECK (tree_size > 0),
    root_hash   bytea NOT NULL CHECK (length(root_hash) = 32),
    time_micros bigint NOT NULL,
    note        text NOT NULL
);

CREATE TABLE refusals (
    id              bigserial PRIMARY KEY,
    refused_at      timestamptz NOT NULL DEFAULT now(),
    producer        text NOT NULL,
    idempotency_key text NOT NULL,
    reason          text NOT NULL,
    message         bytea NOT NULL
);

-- Entries up to (not including) this sequence number are on the entries stream.
CREATE TABLE publication (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_seq   bigint NOT NULL
);
INSERT INTO publication (next_seq) VALUES (0);
