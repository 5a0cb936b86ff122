-- Tenant walls: a slug is unique within its tenant, not across tenants (a global unique slug
-- told one tenant whether another had used a name). Virtual keys list the extra base URLs
-- their credential may be sent to (JSON array text).
PRAGMA defer_foreign_keys = ON;

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
