CREATE TABLE loans (
    loan_id           text PRIMARY KEY,
    subcontractor_id  text NOT NULL,
    bank              text NOT NULL,
    buyer_id          text NOT NULL,
    order_id          text NOT NULL,
    facility_id       text NOT NULL,
    currency          text NOT NULL,
    principal_minor   bigint NOT NULL CHECK (principal_minor > 0),
    rate_bps          integer NOT NULL,
    penalty_rate_bps  integer NOT NULL,
    day_count         text NOT NULL,
    disbursed_on      date NOT NULL,
    due_date          date NOT NULL,
    state             text NOT NULL DEFAULT 'open',
    -- Balances as of accrued_until: accrual runs forward only, segment by segment.
    accrued_until     date NOT NULL,
    principal_out     bigint NOT NULL CHECK (principal_out >= 0),
    interest_owed     bigint NOT NULL DEFAULT 0 CHECK (interest_owed >= 0),
    penalty_owed      bigint NOT NULL DEFAULT 0 CHECK (penalty_owed >= 0),
    fees_owed         bigint NOT NULL DEFAULT 0 CHECK (fees_owed >= 0),
    -- Days after the due date before the loan counts as past due (the bank's product).
    grace_days        integer NOT NULL DEFAULT 0 CHECK (grace_days >= 0),
    late_fee_minor    bigint NOT NULL DEFAULT 0,
    late_fee_charged  boolean NOT NULL DEFAULT false,
    bucket            text NOT NULL DEFAULT 'current',
    max_days_past_due integer NOT NULL DEFAULT 0,
    -- Settled, and orders and lending told so.
    announced         boolean NOT NULL DEFAULT false,
    version           integer NOT NULL DEFAULT 1,
    created_micros    bigint NOT NULL
);

CREATE TABLE schedule_lines (
    loan_id   text NOT NULL REFERENCES loans (loan_id),
    number    integer NOT NULL,
    due       date NOT NULL,
    principal bigint NOT NULL,
    interest  bigint NOT NULL,
    PRIMARY KEY (loan_id, number)
);

CREATE TABLE payments (
    payment_id     text PRIMARY KEY,
    loan_id        text NOT NULL REFERENCES loans (loan_id),
    payer          text NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    value_date     date NOT NULL,
    bank_reference text NOT NULL UNIQUE,
    allocation     jsonb NOT NULL,
    recorded_micros bigint NOT NULL
);

CREATE TABLE unmatched_payments (
    id             bigserial PRIMARY KEY,
    loan_id        text NOT NULL,
    payer          text NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       text NOT NULL,
    value_date     text NOT NULL,
    bank_reference text NOT NULL,
    reason         text NOT NULL,
    recorded_micros bigint NOT NULL
);

CREATE TABLE quotes (
    quote_id     text PRIMARY KEY,
    loan_id      text NOT NULL REFERENCES loans (loan_id),
    amount_minor bigint NOT NULL,
    valid_until  date NOT NULL,
    created_micros bigint NOT NULL
);
