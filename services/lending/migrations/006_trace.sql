-- The W3C traceparent of the call that opened the application: the process
-- manager's steps continue that trace, so one financing is one trace.
ALTER TABLE applications ADD COLUMN trace_parent text;
