-- What the grey zone's judge cost a request that asked it: the model it asked, the tokens that
-- call cost and how long it took (0 and '' when no judge was asked).
ALTER TABLE request_log ADD COLUMN judge_model TEXT NOT NULL DEFAULT '';
ALTER TABLE request_log ADD COLUMN judge_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN judge_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
