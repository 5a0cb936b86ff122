//! `x-portkey-config` naming a saved config: `SLUG` (newest version) or `SLUG@VERSION_ID`, read
//! from the store and kept for a few seconds, so an update or rollback reaches every replica
//! within that time without a database read per request.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::config::{RetryConfig, RouteCacheConfig};
use crate::error::AppError;
use crate::portkey::{PortkeyConfigError, RequestConfig};
use crate::state::AppState;

/// How long a saved config read from the store is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Saved configs recently read, by `slug[@version]`.
pub struct SavedConfigs {
    recent: moka::sync::Cache<String, Arc<(RequestConfig, String)>>,
    credentials: moka::sync::Cache<String, HeaderValue>,
}

impl Default for SavedConfigs {
    fn default() -> Self {
        Self {
            recent: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FRESH_FOR)
                .build(),
            credentials: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FRESH_FOR)
                .build(),
        }
    }
}

/// The per-request config the header asks for, and the saved version it came from.
pub async fn resolve(
    state: &AppState,
    header: Option<&str>,
) -> Result<(RequestConfig, Option<String>), AppError> {
    let Some(raw) = header
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.starts_with('{'))
    else {
        return Ok((RequestConfig::parse(header)?, None));
    };
    if let Some(hit) = state.saved_configs.recent.get(raw) {
        return Ok((hit.0.clone(), Some(hit.1.clone())));
    }
    let (slug, version) = match raw.split_once('@') {
        Some((slug, version)) => (slug, Some(version)),
        None => (raw, None),
    };
    let saved = match state.store.config(slug, version).await {
        Ok(saved) => saved,
        Err(crate::store::StoreError::NotFound(_)) => {
            return Err(PortkeyConfigError::UnknownSaved(raw.to_owned()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let config = validated(&saved.config)?;
    state.saved_configs.recent.insert(
        raw.to_owned(),
        Arc::new((config.clone(), saved.version_id.clone())),
    );
    Ok((config, Some(saved.version_id)))
}

/// A config body checked with the same schema and rules as the inline header.
pub fn validated(body: &Value) -> Result<RequestConfig, AppError> {
    let config = RequestConfig::parse(Some(&body.to_string()))?;
    config.retry_over(&RetryConfig::default())?;
    config.cache_over(&RouteCacheConfig::default())?;
    Ok(config)
}

/// Sets `config.provider_auth` from the virtual key the call names (`x-portkey-virtual-key`, or
/// `virtual_key` in its config), opened with the store's secret key; returns the slug it named.
pub async fn resolve_virtual_key(
    state: &AppState,
    headers: &HeaderMap,
    config: &mut RequestConfig,
) -> Result<Option<String>, AppError> {
    let from_header = headers
        .get(crate::portkey::HEADER_VIRTUAL_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(slug) = from_header
        .or(config.virtual_key.as_deref())
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    config.provider_auth = Some(credential(state, &slug).await?);
    Ok(Some(slug))
}

/// The `Authorization` value of virtual key `slug`, opened with the store's secret key.
pub async fn credential(state: &AppState, slug: &str) -> Result<HeaderValue, AppError> {
    if let Some(auth) = state.saved_configs.credentials.get(slug) {
        return Ok(auth);
    }
    let sealer = sealer(state)?;
    let sealed = match state.store.sealed_virtual_key(slug).await {
        Ok(sealed) => sealed,
        Err(crate::store::StoreError::NotFound(_)) => {
            return Err(AppError::InvalidField {
                param: crate::portkey::HEADER_VIRTUAL_KEY,
                message: format!("virtual key `{slug}` does not exist"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let opened = sealer.open(&sealed).ok_or_else(|| {
        AppError::Internal(format!(
            "virtual key `{slug}` cannot be opened with the current secret key"
        ))
    })?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {opened}")).map_err(|_| {
        AppError::Internal(format!("virtual key `{slug}` is not a valid header value"))
    })?;
    auth.set_sensitive(true);
    state
        .saved_configs
        .credentials
        .insert(slug.to_owned(), auth.clone());
    Ok(auth)
}

/// The sealer of virtual keys, or why there is none.
pub fn sealer(state: &AppState) -> Result<&crate::store::seal::Sealer, AppError> {
    state.sealer.as_deref().ok_or(AppError::Store(
        "virtual keys need [store] secret_key or DEJA_SECRET_KEY".to_owned(),
    ))
}
