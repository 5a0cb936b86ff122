//! Virtual keys: a provider credential stored sealed under a slug; listed only masked.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, is_conflict, now_ms, random_hex};

/// A virtual key as shown (never its credential).
#[derive(Debug, Clone, Serialize)]
pub struct VirtualKey {
    /// Internal id.
    pub id: String,
    /// Name callers use in `x-portkey-virtual-key`.
    pub slug: String,
    /// Human name.
    pub name: String,
    /// Provider name, such as `lingyi`.
    pub provider: String,
    /// The credential, masked.
    pub key: String,
    /// Free text.
    pub note: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last update, Unix ms.
    pub updated_at: i64,
}

fn shown(row: &AnyRow) -> Result<VirtualKey, StoreError> {
    Ok(VirtualKey {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        provider: row.try_get("provider")?,
        key: row.try_get("masked")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str = "id, slug, name, provider, masked, note, created_at, updated_at";

/// Fields of a new virtual key; `sealed` and `masked` come from the credential.
pub struct NewVirtualKey<'a> {
    /// Tenant of the admin creating it.
    pub tenant: &'a str,
    /// Human name.
    pub name: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Sealed credential.
    pub sealed: &'a str,
    /// Masked credential.
    pub masked: &'a str,
    /// Free text.
    pub note: &'a str,
}

impl Store {
    /// Stores a virtual key under a slug made from its name.
    pub async fn create_virtual_key(
        &self,
        new: &NewVirtualKey<'_>,
    ) -> Result<VirtualKey, StoreError> {
        let base: String = new
            .name
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(32)
            .collect();
        let slug = format!("{}-{}", base.trim_matches('-'), random_hex(3))
            .trim_start_matches('-')
            .to_owned();
        let now = now_ms();
        sqlx::query("INSERT INTO virtual_keys (id, slug, name, provider, sealed, masked, note, tenant, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)")
            .bind(format!("vk_{}", random_hex(8)))
            .bind(&slug)
            .bind(new.name)
            .bind(new.provider)
            .bind(new.sealed)
            .bind(new.masked)
            .bind(new.note)
            .bind(new.tenant)
            .bind(now)
            .execute(self.pool())
            .await
            .map_err(|e| if is_conflict(&e) { StoreError::Conflict(format!("virtual key `{slug}`")) } else { e.into() })?;
        self.virtual_key(&slug).await
    }

    /// The virtual key `slug`, masked.
    pub async fn virtual_key(&self, slug: &str) -> Result<VirtualKey, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM virtual_keys WHERE slug = $1 AND deleted_at IS NULL"
        ))
        .bind(slug)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("virtual key `{slug}`")))?;
        shown(&row)
    }

    /// The sealed credential of `slug`.
    pub async fn sealed_virtual_key(&self, slug: &str) -> Result<String, StoreError> {
        let row =
            sqlx::query("SELECT sealed FROM virtual_keys WHERE slug = $1 AND deleted_at IS NULL")
                .bind(slug)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("virtual key `{slug}`")))?;
        Ok(row.try_get("sealed")?)
    }

    /// Every virtual key, masked, newest first.
    pub async fn list_virtual_keys(&self) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM virtual_keys WHERE deleted_at IS NULL ORDER BY created_at DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(shown).collect()
    }

    /// Changes the name, note, or credential (`sealed`, `masked`) of `slug`.
    pub async fn update_virtual_key(
        &self,
        slug: &str,
        name: Option<&str>,
        note: Option<&str>,
        credential: Option<(&str, &str)>,
    ) -> Result<VirtualKey, StoreError> {
        let current = self.virtual_key(slug).await?;
        let sealed = match credential {
            Some((sealed, _)) => sealed.to_owned(),
            None => self.sealed_virtual_key(slug).await?,
        };
        sqlx::query("UPDATE virtual_keys SET name = $1, note = $2, sealed = $3, masked = $4, updated_at = $5 WHERE id = $6")
            .bind(name.unwrap_or(&current.name))
            .bind(note.unwrap_or(&current.note))
            .bind(&sealed)
            .bind(credential.map_or(current.key.as_str(), |(_, masked)| masked))
            .bind(now_ms())
            .bind(&current.id)
            .execute(self.pool())
            .await?;
        self.virtual_key(slug).await
    }

    /// Deletes `slug`; its sealed credential is erased.
    pub async fn delete_virtual_key(&self, slug: &str) -> Result<(), StoreError> {
        self.soft_delete("virtual_keys", ", sealed = ''", slug, "virtual key")
            .await
    }
}
