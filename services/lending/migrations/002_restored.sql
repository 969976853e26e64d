-- Set when repayment reported the loan settled and the facility got its amount back.
ALTER TABLE applications ADD COLUMN restored boolean NOT NULL DEFAULT false;
