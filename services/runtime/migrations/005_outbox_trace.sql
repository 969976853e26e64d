-- The W3C traceparent of the work that wrote the statement (NULL when none):
-- the relay sends it beside the batch, so the journal's span for the entry
-- joins the trace of the transition it records.
ALTER TABLE outbox ADD COLUMN trace_parent text;
