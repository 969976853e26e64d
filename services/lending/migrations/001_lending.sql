CREATE TABLE facilities (
    facility_id      text PRIMARY KEY,
    bank             text NOT NULL,
    subcontractor_id text NOT NULL,
    currency         text NOT NULL,
    limit_minor      bigint NOT NULL CHECK (limit_minor > 0),
    reserved_minor   bigint NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
    drawn_minor      bigint NOT NULL DEFAULT 0 CHECK (drawn_minor >= 0),
    expires_on       date NOT NULL,
    spread_bps       integer NOT NULL CHECK (spread_bps >= 0),
    created_micros   bigint NOT NULL,
    UNIQUE (bank, subcontractor_id, currency),
    -- No drawdown beyond the limit, whatever runs concurrently.
    CHECK (reserved_minor + drawn_minor <= limit_minor)
);

CREATE TABLE applications (
    application_id       text PRIMARY KEY,
    subcontractor_id     text NOT NULL,
    bank                 text NOT NULL,
    order_id             text NOT NULL,
    facility_id          text NOT NULL REFERENCES facilities (facility_id),
    currency             text NOT NULL,
    requested_minor      bigint NOT NULL CHECK (requested_minor > 0),
    state                text NOT NULL,
    outcome              text NOT NULL DEFAULT '',
    reason               text NOT NULL DEFAULT '',
    decision_id          text NOT NULL DEFAULT '',
    decision             jsonb,
    order_facts          jsonb,
    terms                jsonb,
    reserved_minor       bigint NOT NULL DEFAULT 0,
    approvals            text[] NOT NULL DEFAULT '{}',
    contract_id          text,
    offer_expires_micros bigint NOT NULL DEFAULT 0,
    announced            boolean NOT NULL DEFAULT false,
    version              integer NOT NULL DEFAULT 1,
    created_micros       bigint NOT NULL,
    updated_micros       bigint NOT NULL
);
CREATE INDEX applications_to_step ON applications (state)
    WHERE state IN ('requested', 'pledged', 'approved', 'effective', 'releasing');

CREATE TABLE contracts (
    contract_id    text PRIMARY KEY,
    application_id text NOT NULL REFERENCES applications (application_id),
    document       text NOT NULL,
    sha256         bytea NOT NULL CHECK (length(sha256) = 32),
    signers        text[] NOT NULL
);

CREATE TABLE signatures (
    contract_id text NOT NULL REFERENCES contracts (contract_id),
    signer      text NOT NULL,
    party_id    text NOT NULL,
    key_id      bytea NOT NULL,
    signature   bytea NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (contract_id, signer)
);

CREATE TABLE signing_keys (
    party_id   text PRIMARY KEY,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    key_id     bytea NOT NULL
);
