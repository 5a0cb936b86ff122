-- Tenant walls: a slug is unique within its tenant, not across tenants (a global unique slug
-- told one tenant whether another had used a name). Virtual keys list the extra base URLs
-- their credential may be sent to (JSON array text).
ALTER TABLE configs DROP CONSTRAINT configs_slug_key;
ALTER TABLE configs ADD CONSTRAINT configs_tenant_slug_key UNIQUE (tenant, slug);
ALTER TABLE virtual_keys DROP CONSTRAINT virtual_keys_slug_key;
ALTER TABLE virtual_keys ADD CONSTRAINT virtual_keys_tenant_slug_key UNIQUE (tenant, slug);
ALTER TABLE virtual_keys ADD COLUMN hosts TEXT NOT NULL DEFAULT '[]';
CREATE INDEX request_log_tenant_at ON request_log (tenant, at);
