//! Saved configs: one row per config, one row per version; the newest version is in force.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, is_conflict, now_ms, random_hex};

/// A saved config at one of its versions.
#[derive(Debug, Clone, Serialize)]
pub struct SavedConfig {
    /// Internal id.
    pub id: String,
    /// Name callers use in `x-portkey-config`.
    pub slug: String,
    /// Human name.
    pub name: String,
    /// Tenant that owns it.
    pub tenant: String,
    /// The config body.
    pub config: Value,
    /// Version of `config`.
    pub version_id: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Time of the newest version, Unix ms.
    pub updated_at: i64,
}

/// One version of a config.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Version id.
    pub version_id: String,
    /// 1 for the first version, then one more for each.
    pub seq: i64,
    /// The body of this version.
    pub config: Value,
    /// When it was made, Unix ms.
    pub created_at: i64,
}

const SELECT: &str = "SELECT c.id, c.slug, c.name, c.tenant, c.created_at, c.updated_at, v.id AS version_id, v.body \
     FROM configs c JOIN config_versions v ON v.config_id = c.id";

fn saved(row: &AnyRow) -> Result<SavedConfig, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(SavedConfig {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        config: serde_json::from_str(&body).unwrap_or(Value::Null),
        version_id: row.try_get("version_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A slug from a name: lowercase letters, digits and dashes, with a random suffix.
fn slug_for(name: &str) -> String {
    let base: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base: Vec<&str> = base.split('-').filter(|p| !p.is_empty()).collect();
    let base = base.join("-");
    let base: String = base.chars().take(32).collect();
    if base.is_empty() {
        format!("pc-{}", random_hex(4))
    } else {
        format!("pc-{base}-{}", random_hex(3))
    }
}

impl Store {
    /// Saves a new config (version 1) under `slug`, or a slug made from `name`.
    pub async fn create_config(
        &self,
        tenant: &str,
        name: &str,
        slug: Option<&str>,
        body: &Value,
    ) -> Result<SavedConfig, StoreError> {
        let slug = slug.map_or_else(|| slug_for(name), str::to_owned);
        let id = format!("cfg_{}", random_hex(8));
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO configs (id, slug, name, tenant, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)")
            .bind(&id)
            .bind(&slug)
            .bind(name)
            .bind(tenant)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_conflict(&e) { StoreError::Conflict(format!("config `{slug}`")) } else { e.into() })?;
        insert_version(&mut tx, &id, 1, body, now).await?;
        tx.commit().await?;
        self.config(tenant, &slug, None).await
    }

    /// The config `slug` of `tenant` at `version` (default: the newest). Another tenant's
    /// config is not found.
    pub async fn config(
        &self,
        tenant: &str,
        slug: &str,
        version: Option<&str>,
    ) -> Result<SavedConfig, StoreError> {
        let row = match version {
            None => sqlx::query(&format!(
                "{SELECT} WHERE c.tenant = $1 AND c.slug = $2 AND c.deleted_at IS NULL ORDER BY v.seq DESC LIMIT 1"
            ))
            .bind(tenant)
            .bind(slug)
            .fetch_optional(self.pool())
            .await?,
            Some(version) => {
                sqlx::query(&format!(
                    "{SELECT} WHERE c.tenant = $1 AND c.slug = $2 AND v.id = $3 AND c.deleted_at IS NULL"
                ))
                .bind(tenant)
                .bind(slug)
                .bind(version)
                .fetch_optional(self.pool())
                .await?
            }
        };
        let what = match version {
            Some(v) => format!("config `{slug}` version `{v}`"),
            None => format!("config `{slug}`"),
        };
        saved(&row.ok_or(StoreError::NotFound(what))?)
    }

    /// Every config of `tenant` (of every tenant for `None`) at its newest version, newest
    /// first.
    pub async fn list_configs(&self, tenant: Option<&str>) -> Result<Vec<SavedConfig>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE c.deleted_at IS NULL AND ($1 = '' OR c.tenant = $2) AND v.seq = (SELECT MAX(seq) FROM config_versions WHERE config_id = c.id) ORDER BY c.updated_at DESC"
        ))
        .bind(if tenant.is_some() { "t" } else { "" })
        .bind(tenant.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(saved).collect()
    }

    /// Saves a new version of `slug`: `body`, or the newest body again; renames when `name` is
    /// given.
    pub async fn update_config(
        &self,
        tenant: &str,
        slug: &str,
        name: Option<&str>,
        body: Option<&Value>,
    ) -> Result<SavedConfig, StoreError> {
        let current = self.config(tenant, slug, None).await?;
        let body = body.unwrap_or(&current.config);
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let seq: i64 =
            sqlx::query("SELECT MAX(seq) AS seq FROM config_versions WHERE config_id = $1")
                .bind(&current.id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("seq")?;
        insert_version(&mut tx, &current.id, seq + 1, body, now).await?;
        sqlx::query("UPDATE configs SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name.unwrap_or(&current.name))
            .bind(now)
            .bind(&current.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.config(tenant, slug, None).await
    }

    /// Makes `version`'s body the newest version again.
    pub async fn rollback_config(
        &self,
        tenant: &str,
        slug: &str,
        version: &str,
    ) -> Result<SavedConfig, StoreError> {
        let old = self.config(tenant, slug, Some(version)).await?;
        self.update_config(tenant, slug, None, Some(&old.config))
            .await
    }

    /// Every version of `slug`, newest first.
    pub async fn config_versions(
        &self,
        tenant: &str,
        slug: &str,
    ) -> Result<Vec<Version>, StoreError> {
        let current = self.config(tenant, slug, None).await?;
        let rows = sqlx::query("SELECT id, seq, body, created_at FROM config_versions WHERE config_id = $1 ORDER BY seq DESC")
            .bind(&current.id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(Version {
                    version_id: row.try_get("id")?,
                    seq: row.try_get("seq")?,
                    config: serde_json::from_str(&body).unwrap_or(Value::Null),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Deletes `slug` (its versions stay, for the record).
    pub async fn delete_config(&self, tenant: &str, slug: &str) -> Result<(), StoreError> {
        self.soft_delete("configs", "", tenant, slug, "config")
            .await
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    config_id: &str,
    seq: i64,
    body: &Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO config_versions (id, config_id, seq, body, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(format!("ver_{}", random_hex(8)))
        .bind(config_id)
        .bind(seq)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
