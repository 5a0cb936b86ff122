//! Who is calling: deja API keys, sent as `x-portkey-api-key` (Portkey's SDKs) or
//! `Authorization: Bearer` (OpenAI's SDKs), checked against a snapshot of the active keys that
//! every gateway refreshes from the store every few seconds (so a revoked key stops working on
//! every replica within that time). Keys are compared by SHA-256 in constant time.

use std::sync::{Arc, RwLock};

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::keys::{ActiveKey, KEY_PREFIX, Scope, hash_key};
use crate::store::{Store, StoreError};

/// How often each gateway reloads the active keys.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id (for logs).
    pub key_id: String,
    /// Tenant: part of every cache partition.
    pub tenant: String,
    /// What the key may do.
    pub scope: Scope,
}

/// The active keys, as last loaded.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<Arc<Vec<ActiveKey>>>,
}

impl KeyRing {
    /// Reloads the active keys from `store`.
    pub async fn refresh(&self, store: &Store) -> Result<usize, StoreError> {
        let keys = store.active_keys().await?;
        let count = keys.len();
        let mut slot = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Arc::new(keys);
        Ok(count)
    }

    /// The principal of `secret`, if it is an active key. Every key is compared, each in
    /// constant time, so the time taken says nothing about which bytes matched.
    pub fn find(&self, secret: &str) -> Option<Principal> {
        let hash = hash_key(secret);
        let keys = Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(Principal {
                    key_id: key.id.clone(),
                    tenant: key.tenant.clone(),
                    scope: key.scope,
                });
            }
        }
        found
    }
}

fn presented(headers: &HeaderMap) -> Option<&str> {
    let portkey = headers
        .get("x-portkey-api-key")
        .and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    portkey.or(bearer).map(str::trim).filter(|k| !k.is_empty())
}

/// The caller of a model endpoint. Without `server.require_auth`, a call with no key, or with a
/// key that is not deja's (an OpenAI SDK's placeholder), is anonymous; a deja key is always
/// checked, so a revoked one is refused either way.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, AppError> {
    let required = state.config.server.auth_required();
    match presented(headers) {
        Some(secret) if required || secret.starts_with(KEY_PREFIX) => state
            .keys
            .find(secret)
            .map(Some)
            .ok_or(AppError::Unauthorized("Invalid or revoked API key")),
        Some(_) | None if !required => Ok(None),
        _ => Err(AppError::Unauthorized(
            "Missing API key: send it as x-portkey-api-key or Authorization: Bearer",
        )),
    }
}

/// The caller of an admin endpoint: always a valid key of `admin` scope.
pub fn admin(state: &AppState, headers: &HeaderMap) -> Result<Principal, AppError> {
    let secret = presented(headers).ok_or(AppError::Unauthorized(
        "Admin endpoints need an admin-scope API key (deja keys create --scope admin)",
    ))?;
    let principal = state
        .keys
        .find(secret)
        .ok_or(AppError::Unauthorized("Invalid or revoked API key"))?;
    if principal.scope != Scope::Admin {
        return Err(AppError::Forbidden(
            "This API key has inference scope; admin calls need admin scope",
        ));
    }
    Ok(principal)
}
