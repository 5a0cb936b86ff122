//! What a call names by slug, looked up in the caller's own tenant only: a saved config
//! (`x-portkey-config: SLUG` or `SLUG@VERSION_ID`) and virtual keys. Both are kept for a few
//! seconds, so an update or rollback reaches every replica within that time without a database
//! read per request (the replica that took the change forgets its copy at once). Another tenant's slug is answered exactly like a slug that does not exist.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde_json::Value;

use crate::config::{RetryConfig, RouteCacheConfig};
use crate::error::AppError;
use crate::portkey::{PortkeyConfigError, RequestConfig};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::seal;

/// How long a saved config or virtual key read from the store is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// A virtual key opened for use.
#[derive(Debug)]
pub struct OpenedKey {
    /// Row id: the credential's identity in cache partitions and breaker keys.
    pub id: String,
    /// Slug the caller named.
    pub slug: String,
    /// Provider name; its base URL is where the credential may go.
    pub provider: String,
    /// More base URLs the credential may go to.
    pub hosts: Vec<String>,
    /// `Authorization` value.
    pub auth: HeaderValue,
}

/// A saved config as resolved, with its slug and version.
type Resolved = Arc<(RequestConfig, (String, String))>;

/// Saved configs and virtual keys recently read, by tenant and slug.
pub struct SavedConfigs {
    recent: moka::sync::Cache<(String, String), Resolved>,
    keys: moka::sync::Cache<(String, String), Arc<OpenedKey>>,
}

impl Default for SavedConfigs {
    fn default() -> Self {
        Self {
            recent: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FRESH_FOR)
                .build(),
            keys: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FRESH_FOR)
                .build(),
        }
    }
}

impl SavedConfigs {
    /// Drops what this node keeps of a saved config's latest version, so the node that took an
    /// update, rollback or delete serves the change at once (other replicas within
    /// [`FRESH_FOR`]). A pinned `slug@version` never changes and is kept.
    pub fn forget_config(&self, tenant: &str, slug: &str) {
        self.recent
            .invalidate(&(tenant.to_owned(), slug.to_owned()));
    }

    /// Drops what this node keeps of a virtual key after it was updated or deleted here.
    pub fn forget_key(&self, tenant: &str, slug: &str) {
        self.keys.invalidate(&(tenant.to_owned(), slug.to_owned()));
    }
}

/// The per-request config the header asks for, and the saved config it came from (slug and
/// version).
pub async fn resolve(
    state: &AppState,
    tenant: &str,
    header: Option<&str>,
) -> Result<(RequestConfig, Option<(String, String)>), AppError> {
    let Some(raw) = header
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.starts_with('{'))
    else {
        return Ok((RequestConfig::parse(header)?, None));
    };
    let cache_key = (tenant.to_owned(), raw.to_owned());
    if let Some(hit) = state.saved_configs.recent.get(&cache_key) {
        return Ok((hit.0.clone(), Some(hit.1.clone())));
    }
    let (slug, version) = split_version(raw);
    let saved = match state.store.config(tenant, slug, version).await {
        Ok(saved) => saved,
        Err(StoreError::NotFound(_)) => {
            return Err(PortkeyConfigError::UnknownSaved(raw.to_owned()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = saved.config;
    if !seal::open_inline_keys(state.sealer.as_deref(), &mut body) {
        return Err(AppError::Internal(format!(
            "saved config `{slug}` holds an api_key that cannot be opened with the current secret key"
        )));
    }
    let config = validated(&body)?;
    let named = (slug.to_owned(), saved.version_id);
    state
        .saved_configs
        .recent
        .insert(cache_key, Arc::new((config.clone(), named.clone())));
    Ok((config, Some(named)))
}

/// `SLUG@VERSION_ID` split, or `SLUG` alone.
pub fn split_version(named: &str) -> (&str, Option<&str>) {
    match named.split_once('@') {
        Some((slug, version)) => (slug, Some(version)),
        None => (named, None),
    }
}

/// A config body checked with the same schema and rules as the inline header.
pub fn validated(body: &Value) -> Result<RequestConfig, AppError> {
    let config = RequestConfig::parse(Some(&body.to_string()))?;
    config.retry_over(&RetryConfig::default())?;
    config.cache_over(&RouteCacheConfig::default())?;
    Ok(config)
}

/// Virtual key `slug` of `tenant`, opened with the store's secret key. Another tenant's slug
/// gets the same 400 as an unknown one.
pub async fn virtual_key(
    state: &AppState,
    tenant: &str,
    slug: &str,
) -> Result<Arc<OpenedKey>, AppError> {
    let cache_key = (tenant.to_owned(), slug.to_owned());
    if let Some(key) = state.saved_configs.keys.get(&cache_key) {
        return Ok(key);
    }
    let sealer = sealer(state)?;
    let sealed = match state.store.sealed_virtual_key(tenant, slug).await {
        Ok(sealed) => sealed,
        Err(StoreError::NotFound(_)) => {
            return Err(AppError::InvalidField {
                param: crate::portkey::HEADER_VIRTUAL_KEY,
                message: format!("virtual key `{slug}` does not exist"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let opened = sealer.open(&sealed.sealed).ok_or_else(|| {
        AppError::Internal(format!(
            "virtual key `{slug}` cannot be opened with the current secret key"
        ))
    })?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {opened}")).map_err(|_| {
        AppError::Internal(format!("virtual key `{slug}` is not a valid header value"))
    })?;
    auth.set_sensitive(true);
    let key = Arc::new(OpenedKey {
        id: sealed.id,
        slug: slug.to_owned(),
        provider: sealed.provider,
        hosts: sealed.hosts,
        auth,
    });
    state.saved_configs.keys.insert(cache_key, Arc::clone(&key));
    Ok(key)
}

/// The sealer of virtual keys, or why there is none.
pub fn sealer(state: &AppState) -> Result<&crate::store::seal::Sealer, AppError> {
    state.sealer.as_deref().ok_or(AppError::NoSecretKey)
}
