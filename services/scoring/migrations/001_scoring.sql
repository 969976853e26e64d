-- Every scorecard version ever loaded stays, for recomputing old decisions.
CREATE TABLE models (
    version    text PRIMARY KEY,
    model      text NOT NULL,
    sha256     text NOT NULL,
    body       text NOT NULL,
    loaded_seq bigserial NOT NULL
);

CREATE TABLE decisions (
    decision_id    text PRIMARY KEY,
    application_id text NOT NULL UNIQUE,
    order_id       text NOT NULL,
    bank           text NOT NULL,
    decision       jsonb NOT NULL,
    created_micros bigint NOT NULL
);
