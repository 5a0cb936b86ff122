-- The target that answered (its strategy path and host) for the dashboard's request log, and a
-- caller's `x-portkey-trace-id`, so calls that belong together can be found again.
ALTER TABLE request_log ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE request_log ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
