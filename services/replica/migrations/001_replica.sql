-- A replica holds the journal's tables (services.journal migrations) plus:
-- its alarm (at most one: ingesting stops when it is raised) and what it cosigned.
CREATE TABLE alarm (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    kind          text NOT NULL CHECK (kind IN ('verification', 'fork')),
    seq           bigint NOT NULL,
    problem       text NOT NULL,
    evidence      text[] NOT NULL,
    raised_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cosigned (
    tree_size  bigint PRIMARY KEY,
    note       text NOT NULL,
    line       text NOT NULL
);
