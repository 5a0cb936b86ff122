//! Portkey's control-plane API for saved configs on deja's own base URL, plus deja's versions and
//! rollback. Every call needs an admin-scope key; bodies are validated like the inline header.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AdminCaller;
use crate::error::AppError;
use crate::policy::saved::{sealer as sealer_of, validated};
use crate::state::AppState;
use crate::store::configs::SavedConfig;
use crate::store::seal;

#[derive(Deserialize)]
pub(super) struct CreateConfig {
    name: Option<String>,
    config: Value,
    /// deja's addition: choose the slug (such as `pc-01ai-retry-123`) instead of a generated one.
    slug: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct UpdateConfig {
    name: Option<String>,
    config: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct Rollback {
    version_id: String,
}

/// A saved config as shown: inline `api_key`s masked.
fn config_json(state: &AppState, c: &SavedConfig) -> Value {
    let mut config = c.config.clone();
    seal::mask_inline_keys(state.sealer.as_deref(), &mut config);
    json!({
        "id": c.id, "slug": c.slug, "name": c.name, "config": config, "version_id": c.version_id,
        "tenant": c.tenant, "status": "active", "object": "config",
        "created_at": c.created_at, "last_updated_at": c.updated_at,
    })
}

/// A config body checked like the inline header, with its inline `api_key`s sealed for storing.
fn sealed_config(state: &AppState, config: &Value) -> Result<Value, AppError> {
    if seal::has_masked_inline_key(config) {
        return Err(AppError::InvalidField {
            param: "config",
            message: "an api_key is a masked value as shown by GET; send the key itself".to_owned(),
        });
    }
    let mut opened = config.clone();
    if !seal::open_inline_keys(state.sealer.as_deref(), &mut opened) {
        return Err(AppError::InvalidField {
            param: "config",
            message: "an api_key is sealed under another secret key".to_owned(),
        });
    }
    validated(&opened)?;
    let mut sealed = opened;
    if !seal::seal_inline_keys(state.sealer.as_deref(), &mut sealed) {
        return Err(sealer_of(state)
            .err()
            .unwrap_or_else(|| AppError::Internal("sealing an inline api_key failed".to_owned())));
    }
    Ok(sealed)
}

fn slug_ok(slug: &str) -> Result<(), AppError> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AppError::InvalidField {
            param: "slug",
            message: "'slug' must be 1-64 letters, digits, '-' or '_'".to_owned(),
        })
    }
}

pub(super) async fn create_config(
    State(state): State<AppState>,
    admin: AdminCaller,
    json: Result<Json<CreateConfig>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(req) = json?;
    let config = sealed_config(&state, &req.config)?;
    if let Some(slug) = &req.slug {
        slug_ok(slug)?;
    }
    let name = req.name.as_deref().unwrap_or("config");
    let saved = state
        .store
        .create_config(&admin.tenant, name, req.slug.as_deref(), &config)
        .await?;
    Ok(Json(json!({
        "id": saved.id, "slug": saved.slug, "version_id": saved.version_id, "object": "config",
    })))
}

pub(super) async fn list_configs(
    State(state): State<AppState>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let configs = state.store.list_configs(admin.sees()).await?;
    let data: Vec<Value> = configs.iter().map(|c| config_json(&state, c)).collect();
    Ok(Json(
        json!({"object": "list", "total": data.len(), "data": data}),
    ))
}

pub(super) async fn get_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let (slug, version) = crate::policy::saved::split_version(&slug);
    let saved = state.store.config(&admin.tenant, slug, version).await?;
    Ok(Json(config_json(&state, &saved)))
}

pub(super) async fn update_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
    json: Result<Json<UpdateConfig>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(req) = json?;
    let config = match &req.config {
        Some(config) => Some(sealed_config(&state, config)?),
        None => None,
    };
    let saved = state
        .store
        .update_config(&admin.tenant, &slug, req.name.as_deref(), config.as_ref())
        .await?;
    state.saved_configs.forget_config(&admin.tenant, &slug);
    Ok(Json(
        json!({"version_id": saved.version_id, "object": "config"}),
    ))
}

pub(super) async fn delete_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    state.store.delete_config(&admin.tenant, &slug).await?;
    state.saved_configs.forget_config(&admin.tenant, &slug);
    Ok(Json(json!({"success": true, "object": "config"})))
}

pub(super) async fn config_versions(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let mut versions = state.store.config_versions(&admin.tenant, &slug).await?;
    for version in &mut versions {
        seal::mask_inline_keys(state.sealer.as_deref(), &mut version.config);
    }
    Ok(Json(
        json!({"object": "list", "total": versions.len(), "data": versions}),
    ))
}

pub(super) async fn rollback_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
    json: Result<Json<Rollback>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(req) = json?;
    let saved = state
        .store
        .rollback_config(&admin.tenant, &slug, &req.version_id)
        .await?;
    state.saved_configs.forget_config(&admin.tenant, &slug);
    Ok(Json(
        json!({"version_id": saved.version_id, "object": "config"}),
    ))
}

#[derive(Deserialize)]
pub(super) struct CreateVirtualKey {
    name: String,
    provider: String,
    key: String,
    #[serde(default)]
    note: Option<String>,
    /// deja's addition: base URLs beyond the provider's that the credential may be sent to.
    #[serde(default)]
    hosts: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct UpdateVirtualKey {
    name: Option<String>,
    key: Option<String>,
    note: Option<String>,
    hosts: Option<Vec<String>>,
}

/// Each listed host must be an http(s) base URL; a virtual key's hosts bind its credential,
/// they do not let a caller connect anywhere (`[security] allowed_hosts` still decides that).
fn hosts_ok(hosts: &[String]) -> Result<(), AppError> {
    for (i, host) in hosts.iter().enumerate() {
        crate::policy::Origin::of(host).map_err(|e| AppError::InvalidField {
            param: "hosts",
            message: format!("'hosts[{i}]' {e}"),
        })?;
    }
    Ok(())
}

/// The provider credential sealed, and masked for showing.
fn seal(state: &AppState, key: &str) -> Result<(String, String), AppError> {
    let sealer = sealer_of(state)?;
    let sealed = sealer
        .seal(key)
        .ok_or_else(|| AppError::Internal("sealing a virtual key failed".to_owned()))?;
    Ok((sealed, crate::store::seal::mask(key)))
}

fn virtual_key_json(v: &crate::store::virtual_keys::VirtualKey) -> Value {
    json!({
        "id": v.id, "slug": v.slug, "name": v.name, "provider": v.provider, "key": v.key,
        "note": v.note, "hosts": v.hosts, "tenant": v.tenant, "status": "active",
        "object": "virtual-key",
        "created_at": v.created_at, "last_updated_at": v.updated_at,
    })
}

pub(super) async fn create_virtual_key(
    State(state): State<AppState>,
    admin: AdminCaller,
    json: Result<Json<CreateVirtualKey>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(req) = json?;
    if req.key.trim().is_empty() {
        return Err(AppError::InvalidField {
            param: "key",
            message: "'key' must be the provider's API key".to_owned(),
        });
    }
    hosts_ok(&req.hosts)?;
    let (sealed, masked) = seal(&state, req.key.trim())?;
    let created = state
        .store
        .create_virtual_key(&crate::store::virtual_keys::NewVirtualKey {
            tenant: &admin.tenant,
            name: &req.name,
            provider: &req.provider,
            sealed: &sealed,
            masked: &masked,
            note: req.note.as_deref().unwrap_or(""),
            hosts: &req.hosts,
        })
        .await?;
    Ok(Json(
        json!({"id": created.id, "slug": created.slug, "object": "virtual-key"}),
    ))
}

pub(super) async fn list_virtual_keys(
    State(state): State<AppState>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let keys = state.store.list_virtual_keys(admin.sees()).await?;
    let data: Vec<Value> = keys.iter().map(virtual_key_json).collect();
    Ok(Json(
        json!({"object": "list", "total": data.len(), "data": data}),
    ))
}

pub(super) async fn get_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let key = state.store.virtual_key(&admin.tenant, &slug).await?;
    Ok(Json(virtual_key_json(&key)))
}

pub(super) async fn update_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
    json: Result<Json<UpdateVirtualKey>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(req) = json?;
    if let Some(hosts) = &req.hosts {
        hosts_ok(hosts)?;
    }
    let credential = match req.key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        Some(key) => Some(seal(&state, key)?),
        None => None,
    };
    let change = crate::store::virtual_keys::VirtualKeyChange {
        name: req.name.as_deref(),
        note: req.note.as_deref(),
        credential: credential.as_ref().map(|(s, m)| (s.as_str(), m.as_str())),
        hosts: req.hosts.as_deref(),
    };
    let updated = state
        .store
        .update_virtual_key(&admin.tenant, &slug, &change)
        .await?;
    state.saved_configs.forget_key(&admin.tenant, &slug);
    Ok(Json(virtual_key_json(&updated)))
}

pub(super) async fn delete_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    state.store.delete_virtual_key(&admin.tenant, &slug).await?;
    state.saved_configs.forget_key(&admin.tenant, &slug);
    Ok(Json(json!({"success": true, "object": "virtual-key"})))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    /// From this time, Unix ms.
    from: Option<i64>,
    /// Up to this time, Unix ms.
    to: Option<i64>,
    route: Option<String>,
    status: Option<i64>,
    cache_status: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn logs(
    State(state): State<AppState>,
    admin: AdminCaller,
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let axum::extract::Query(q) = query?;
    let filter = crate::store::logs::LogFilter {
        from: q.from,
        to: q.to,
        route: q.route,
        status: q.status,
        cache_status: q.cache_status.map(|c| c.to_lowercase().replace(' ', "_")),
        tenant: admin.sees().map(str::to_owned),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        without_bodies: false,
    };
    let rows = state.store.query_logs(&filter).await?;
    // Each row with what it cost at the configured prices (served from cache: what it saved).
    let prices = state.config.log.price_list();
    let data: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut shown = serde_json::to_value(row).unwrap_or(Value::Null);
            shown["cost_usd"] = crate::analytics::cost_usd(&prices, row).into();
            shown["judge_cost_usd"] = crate::analytics::judge_cost_usd(&prices, row).into();
            shown
        })
        .collect();
    Ok(Json(
        json!({"object": "list", "total": data.len(), "data": data}),
    ))
}
