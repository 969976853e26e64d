-- Two scorecard families (order financing, leases) each number their versions.
ALTER TABLE models DROP CONSTRAINT models_pkey;
ALTER TABLE models ADD PRIMARY KEY (model, version);
