//! Virtual keys: a provider credential stored sealed under a slug, owned by one tenant; listed
//! only masked. Each may list more base URLs its credential may be sent to.

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
    /// Base URLs beyond the provider's that the credential may be sent to.
    pub hosts: Vec<String>,
    /// Tenant that owns it.
    pub tenant: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last update, Unix ms.
    pub updated_at: i64,
}

/// A virtual key's credential, still sealed, with where it may go.
#[derive(Debug, Clone)]
pub struct SealedKey {
    /// Internal id.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// Extra base URLs.
    pub hosts: Vec<String>,
    /// The sealed credential.
    pub sealed: String,
}

fn hosts(row: &AnyRow) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get("hosts")?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

fn shown(row: &AnyRow) -> Result<VirtualKey, StoreError> {
    Ok(VirtualKey {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        provider: row.try_get("provider")?,
        key: row.try_get("masked")?,
        note: row.try_get("note")?,
        hosts: hosts(row)?,
        tenant: row.try_get("tenant")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str =
    "id, slug, name, provider, masked, note, hosts, tenant, created_at, updated_at";

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
    /// Extra base URLs.
    pub hosts: &'a [String],
}

/// What an update changes; `None` keeps the current value.
#[derive(Default)]
pub struct VirtualKeyChange<'a> {
    /// New name.
    pub name: Option<&'a str>,
    /// New note.
    pub note: Option<&'a str>,
    /// New credential: sealed and masked.
    pub credential: Option<(&'a str, &'a str)>,
    /// New extra base URLs.
    pub hosts: Option<&'a [String]>,
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
        sqlx::query("INSERT INTO virtual_keys (id, slug, name, provider, sealed, masked, note, tenant, hosts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)")
            .bind(format!("vk_{}", random_hex(8)))
            .bind(&slug)
            .bind(new.name)
            .bind(new.provider)
            .bind(new.sealed)
            .bind(new.masked)
            .bind(new.note)
            .bind(new.tenant)
            .bind(serde_json::Value::from(new.hosts.to_vec()).to_string())
            .bind(now)
            .execute(self.pool())
            .await
            .map_err(|e| if is_conflict(&e) { StoreError::Conflict(format!("virtual key `{slug}`")) } else { e.into() })?;
        self.virtual_key(new.tenant, &slug).await
    }

    /// The virtual key `slug` of `tenant`, masked.
    pub async fn virtual_key(&self, tenant: &str, slug: &str) -> Result<VirtualKey, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM virtual_keys WHERE tenant = $1 AND slug = $2 AND deleted_at IS NULL"
        ))
        .bind(tenant)
        .bind(slug)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("virtual key `{slug}`")))?;
        shown(&row)
    }

    /// The sealed credential of `tenant`'s virtual key `slug`, and where it may go.
    pub async fn sealed_virtual_key(
        &self,
        tenant: &str,
        slug: &str,
    ) -> Result<SealedKey, StoreError> {
        let row = sqlx::query(
            "SELECT id, provider, hosts, sealed FROM virtual_keys WHERE tenant = $1 AND slug = $2 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .bind(slug)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("virtual key `{slug}`")))?;
        Ok(SealedKey {
            id: row.try_get("id")?,
            provider: row.try_get("provider")?,
            hosts: hosts(&row)?,
            sealed: row.try_get("sealed")?,
        })
    }

    /// Every virtual key of `tenant` (of every tenant for `None`), masked, newest first.
    pub async fn list_virtual_keys(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM virtual_keys WHERE deleted_at IS NULL AND ($1 = '' OR tenant = $2) ORDER BY created_at DESC"
        ))
        .bind(if tenant.is_some() { "t" } else { "" })
        .bind(tenant.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(shown).collect()
    }

    /// Changes `tenant`'s virtual key `slug`.
    pub async fn update_virtual_key(
        &self,
        tenant: &str,
        slug: &str,
        change: &VirtualKeyChange<'_>,
    ) -> Result<VirtualKey, StoreError> {
        let current = self.virtual_key(tenant, slug).await?;
        let sealed = match change.credential {
            Some((sealed, _)) => sealed.to_owned(),
            None => self.sealed_virtual_key(tenant, slug).await?.sealed,
        };
        let hosts = change
            .hosts
            .map_or(current.hosts.clone(), <[String]>::to_vec);
        sqlx::query("UPDATE virtual_keys SET name = $1, note = $2, sealed = $3, masked = $4, hosts = $5, updated_at = $6 WHERE id = $7")
            .bind(change.name.unwrap_or(&current.name))
            .bind(change.note.unwrap_or(&current.note))
            .bind(&sealed)
            .bind(change.credential.map_or(current.key.as_str(), |(_, masked)| masked))
            .bind(serde_json::Value::from(hosts).to_string())
            .bind(now_ms())
            .bind(&current.id)
            .execute(self.pool())
            .await?;
        self.virtual_key(tenant, slug).await
    }

    /// Deletes `tenant`'s virtual key `slug`; its sealed credential is erased.
    pub async fn delete_virtual_key(&self, tenant: &str, slug: &str) -> Result<(), StoreError> {
        self.soft_delete("virtual_keys", ", sealed = ''", tenant, slug, "virtual key")
            .await
    }
}
