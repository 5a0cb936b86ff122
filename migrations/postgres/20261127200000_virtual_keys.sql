-- Virtual keys: a provider credential under a slug, encrypted at rest (XChaCha20-Poly1305).
CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    sealed TEXT NOT NULL,
    masked TEXT NOT NULL,
    note TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
