-- An alarm may also come from cross-examining the journal's audit API.
ALTER TABLE alarm DROP CONSTRAINT alarm_kind_check;
ALTER TABLE alarm ADD CONSTRAINT alarm_kind_check
    CHECK (kind IN ('verification', 'fork', 'cross-examination'));
