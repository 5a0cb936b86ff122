-- Request log: one row per answered request, written in batches off the request path.
CREATE TABLE request_log (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    route TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    config_version TEXT NOT NULL,
    cache_status TEXT NOT NULL,
    similarity REAL,
    attempts INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    tokens INTEGER NOT NULL,
    prompt TEXT,
    answer TEXT
);
CREATE INDEX request_log_at ON request_log (at);
