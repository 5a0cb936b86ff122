//! API keys: issued by deja, shown once, stored only as a SHA-256 hash.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, now_ms, random_hex};

/// Prefix of every key deja issues, so a stray OpenAI or provider key is never mistaken for one.
pub const KEY_PREFIX: &str = "dk-";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Manage keys, virtual keys and configs, and call models.
    Admin,
    /// Call models only.
    Inference,
    /// Everything admin may do, across every tenant; issued on the command line only.
    Operator,
    /// Scrape `/metrics` only (for Prometheus).
    Metrics,
}

impl Scope {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Inference => "inference",
            Self::Operator => "operator",
            Self::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "admin" => Self::Admin,
            "operator" => Self::Operator,
            "metrics" => Self::Metrics,
            _ => Self::Inference,
        }
    }
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Key id, for revoking.
    pub id: String,
    /// Tenant the key belongs to.
    pub tenant: String,
    /// What it may do.
    pub scope: Scope,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Revocation time, Unix ms.
    pub revoked_at: Option<i64>,
}

/// A key that may be used: its hash and what it grants.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    /// Key id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Scope.
    pub scope: Scope,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
}

/// SHA-256 of a key's secret.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Store {
    /// Issues a key; the secret is returned once and never stored.
    pub async fn create_key(
        &self,
        tenant: &str,
        scope: Scope,
    ) -> Result<(ApiKey, String), StoreError> {
        let secret = format!("{KEY_PREFIX}{}", random_hex(24));
        let key = ApiKey {
            id: format!("key_{}", random_hex(6)),
            tenant: tenant.to_owned(),
            scope,
            created_at: now_ms(),
            revoked_at: None,
        };
        sqlx::query("INSERT INTO api_keys (id, tenant, scope, hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(scope.as_str())
            .bind(hex(&hash_key(&secret)))
            .bind(key.created_at)
            .execute(self.pool())
            .await?;
        Ok((key, secret))
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT id, tenant, scope, created_at, revoked_at FROM api_keys ORDER BY created_at DESC")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope")?;
                Ok(ApiKey {
                    id: row.try_get("id")?,
                    tenant: row.try_get("tenant")?,
                    scope: Scope::parse(&scope),
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes key `id`; every gateway refuses it at its next refresh.
    pub async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("active key `{id}`")));
        }
        Ok(())
    }

    /// The keys that may be used now.
    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, StoreError> {
        let rows =
            sqlx::query("SELECT id, tenant, scope, hash FROM api_keys WHERE revoked_at IS NULL")
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let hash: String = row.try_get("hash").ok()?;
                let scope: String = row.try_get("scope").ok()?;
                Some(ActiveKey {
                    id: row.try_get("id").ok()?,
                    tenant: row.try_get("tenant").ok()?,
                    scope: Scope::parse(&scope),
                    hash: unhex(&hash)?,
                })
            })
            .collect())
    }
}
