-- What analytics needs beyond the first request log: the saved config and virtual key a call
-- named (for Portkey's `configs` and `virtual_keys` filters), token split, and on a semantic
-- miss the nearest candidate's similarity and the guard that refused it.
ALTER TABLE request_log ADD COLUMN config TEXT NOT NULL DEFAULT '';
ALTER TABLE request_log ADD COLUMN virtual_key TEXT NOT NULL DEFAULT '';
ALTER TABLE request_log ADD COLUMN prompt_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN nearest DOUBLE PRECISION;
ALTER TABLE request_log ADD COLUMN guard TEXT NOT NULL DEFAULT '';
