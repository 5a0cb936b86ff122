-- Tenant walls: a slug is unique within its tenant, not across tenants (a global unique slug
-- told one tenant whether another had used a name). Virtual keys list the extra base URLs
-- their credential may be sent to (JSON array text).
-- config_versions references configs, so it is set aside while configs is rebuilt (SQLite
-- cannot drop a table that rows still reference) and rebuilt after, with the same rows.
CREATE TABLE config_versions_aside AS SELECT id, config_id, seq, body, created_at FROM config_versions;
DROP TABLE config_versions;

CREATE TABLE configs_walled (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    UNIQUE (tenant, slug)
);
INSERT INTO configs_walled (id, slug, name, tenant, created_at, updated_at, deleted_at)
    SELECT id, slug, name, tenant, created_at, updated_at, deleted_at FROM configs;
DROP TABLE configs;
ALTER TABLE configs_walled RENAME TO configs;

CREATE TABLE config_versions (
    id TEXT PRIMARY KEY,
    config_id TEXT NOT NULL REFERENCES configs(id),
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (config_id, seq)
);
INSERT INTO config_versions (id, config_id, seq, body, created_at)
    SELECT id, config_id, seq, body, created_at FROM config_versions_aside;
DROP TABLE config_versions_aside;

CREATE TABLE virtual_keys_walled (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    sealed TEXT NOT NULL,
    masked TEXT NOT NULL,
    note TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    hosts TEXT NOT NULL DEFAULT '[]',
    UNIQUE (tenant, slug)
);
INSERT INTO virtual_keys_walled (id, slug, name, provider, sealed, masked, note, tenant, created_at, updated_at, deleted_at)
    SELECT id, slug, name, provider, sealed, masked, note, tenant, created_at, updated_at, deleted_at FROM virtual_keys;
DROP TABLE virtual_keys;
ALTER TABLE virtual_keys_walled RENAME TO virtual_keys;

CREATE INDEX request_log_tenant_at ON request_log (tenant, at);
