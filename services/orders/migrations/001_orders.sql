CREATE TABLE buyers (
    buyer_id text PRIMARY KEY,
    name     text NOT NULL,
    rating   text NOT NULL CHECK (rating IN ('AAA', 'AA', 'A', 'BBB', 'BB', 'B', 'CCC'))
);

-- The example core enterprises (their certificates come from `scf certs init`).
INSERT INTO buyers (buyer_id, name, rating) VALUES
    ('citybuild', 'CityBuild General Contracting', 'AA'),
    ('harbor-works', 'Harbor Works Flood Barrier Authority', 'A');

CREATE TABLE orders (
    order_id           text PRIMARY KEY,
    subcontractor_id   text NOT NULL,
    buyer_id           text NOT NULL REFERENCES buyers (buyer_id),
    currency           text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    issue_date         date NOT NULL,
    due_date           date NOT NULL CHECK (due_date >= issue_date),
    line_items         jsonb NOT NULL,
    contract_sha256    bytea NOT NULL CHECK (length(contract_sha256) = 32),
    reference          text NOT NULL,
    state              text NOT NULL,
    pledge_application text,
    pledge_bank        text,
    pledged_micros     bigint,
    dispute_reason     text NOT NULL DEFAULT '',
    created_micros     bigint NOT NULL,
    updated_micros     bigint NOT NULL,
    version            integer NOT NULL,
    CONSTRAINT orders_subcontractor_reference UNIQUE (subcontractor_id, reference),
    CHECK (subcontractor_id <> buyer_id)
);
CREATE INDEX orders_by_subcontractor ON orders (subcontractor_id, created_micros DESC);
CREATE INDEX orders_by_buyer ON orders (buyer_id, created_micros DESC);
