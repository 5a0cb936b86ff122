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
/// checked, so a revoked one is refused either way. A metrics-only key calls no model.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, AppError> {
    let required = state.config.server.auth_required();
    let principal = match presented(headers) {
        Some(secret) if required || secret.starts_with(KEY_PREFIX) => state
            .keys
            .find(secret)
            .map(Some)
            .ok_or(AppError::Unauthorized("Invalid or revoked API key"))?,
        Some(_) | None if !required => None,
        _ => {
            return Err(AppError::Unauthorized(
                "Missing API key: send it as x-portkey-api-key or Authorization: Bearer",
            ));
        }
    };
    if principal
        .as_ref()
        .is_some_and(|p| p.scope == Scope::Metrics)
    {
        return Err(AppError::Forbidden(
            "This API key has metrics scope; it may only read /metrics",
        ));
    }
    Ok(principal)
}

/// The caller of an admin endpoint: always a valid key of `admin` or `operator` scope.
pub fn admin(state: &AppState, headers: &HeaderMap) -> Result<Principal, AppError> {
    let principal = keyed(
        state,
        headers,
        "Admin endpoints need an admin-scope API key (deja keys create --scope admin)",
    )?;
    if !matches!(principal.scope, Scope::Admin | Scope::Operator) {
        return Err(AppError::Forbidden(
            "This API key has inference scope; admin calls need admin scope",
        ));
    }
    Ok(principal)
}

/// Whether `/metrics` may be read: open without `require_auth` or with `[security]
/// open_metrics`, else a key of `metrics`, `admin` or `operator` scope.
pub fn metrics_reader(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if !state.config.server.auth_required() || state.config.security.open_metrics {
        return Ok(());
    }
    let principal = keyed(
        state,
        headers,
        "/metrics needs an API key of metrics, admin or operator scope",
    )?;
    match principal.scope {
        Scope::Metrics | Scope::Admin | Scope::Operator => Ok(()),
        Scope::Inference => Err(AppError::Forbidden(
            "This API key has inference scope; /metrics needs metrics, admin or operator scope",
        )),
    }
}

fn keyed(
    state: &AppState,
    headers: &HeaderMap,
    missing: &'static str,
) -> Result<Principal, AppError> {
    let secret = presented(headers).ok_or(AppError::Unauthorized(missing))?;
    state
        .keys
        .find(secret)
        .ok_or(AppError::Unauthorized("Invalid or revoked API key"))
}

/// An admin endpoint's caller, as an extractor: a handler that takes it cannot forget the check.
/// Admins act in their own tenant; an operator may name another with `?tenant=`.
pub struct AdminCaller {
    /// The key's principal.
    pub principal: Principal,
    /// The tenant single objects are read and written in.
    pub tenant: String,
}

impl AdminCaller {
    /// Whose objects a list shows: the caller's tenant, or every tenant's (`None`) for an
    /// operator who named none.
    pub fn sees(&self) -> Option<&str> {
        match self.principal.scope {
            Scope::Operator if self.tenant == self.principal.tenant => None,
            _ => Some(&self.tenant),
        }
    }
}

impl axum::extract::FromRequestParts<AppState> for AdminCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = admin(state, &parts.headers)?;
        let named =
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
                &parts.uri,
            )
            .ok()
            .and_then(|axum::extract::Query(mut q)| q.remove("tenant"));
        let tenant = match named {
            Some(t) if principal.scope == Scope::Operator && !t.is_empty() => t,
            _ => principal.tenant.clone(),
        };
        Ok(Self { principal, tenant })
    }
}
