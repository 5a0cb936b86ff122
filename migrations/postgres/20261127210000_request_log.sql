-- Request log: one row per answered request, written in batches off the request path.
CREATE TABLE request_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    route TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    config_version TEXT NOT NULL,
    cache_status TEXT NOT NULL,
    similarity DOUBLE PRECISION,
    attempts BIGINT NOT NULL,
    status BIGINT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL,
    prompt TEXT,
    answer TEXT
);
CREATE INDEX request_log_at ON request_log (at);
