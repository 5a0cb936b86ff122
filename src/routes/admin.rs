//! Portkey's control-plane API for saved configs on deja's own base URL, plus deja's versions and
//! rollback. Every call needs an admin-scope key; bodies are validated like the inline header.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth;
use crate::error::AppError;
use crate::gateway::saved::validated;
use crate::state::AppState;
use crate::store::configs::SavedConfig;

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

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    json.map(|Json(t)| t)
        .map_err(|e| AppError::InvalidJson(e.body_text()))
}

fn config_json(c: &SavedConfig) -> Value {
    json!({
        "id": c.id, "slug": c.slug, "name": c.name, "config": c.config, "version_id": c.version_id,
        "status": "active", "object": "config",
        "created_at": c.created_at, "last_updated_at": c.updated_at,
    })
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
    headers: HeaderMap,
    json: Result<Json<CreateConfig>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let admin = auth::admin(&state, &headers)?;
    let req = body(json)?;
    validated(&req.config)?;
    if let Some(slug) = &req.slug {
        slug_ok(slug)?;
    }
    let name = req.name.as_deref().unwrap_or("config");
    let saved = state
        .store
        .create_config(&admin.tenant, name, req.slug.as_deref(), &req.config)
        .await?;
    Ok(Json(json!({
        "id": saved.id, "slug": saved.slug, "version_id": saved.version_id, "object": "config",
    })))
}

pub(super) async fn list_configs(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let configs = state.store.list_configs().await?;
    let data: Vec<Value> = configs.iter().map(config_json).collect();
    Ok(Json(
        json!({"object": "list", "total": data.len(), "data": data}),
    ))
}

pub(super) async fn get_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let (slug, version) = match slug.split_once('@') {
        Some((s, v)) => (s.to_owned(), Some(v.to_owned())),
        None => (slug, None),
    };
    let saved = state.store.config(&slug, version.as_deref()).await?;
    Ok(Json(config_json(&saved)))
}

pub(super) async fn update_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    json: Result<Json<UpdateConfig>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let req = body(json)?;
    if let Some(config) = &req.config {
        validated(config)?;
    }
    let saved = state
        .store
        .update_config(&slug, req.name.as_deref(), req.config.as_ref())
        .await?;
    Ok(Json(
        json!({"version_id": saved.version_id, "object": "config"}),
    ))
}

pub(super) async fn delete_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    state.store.delete_config(&slug).await?;
    Ok(Json(json!({"success": true, "object": "config"})))
}

pub(super) async fn config_versions(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let versions = state.store.config_versions(&slug).await?;
    Ok(Json(
        json!({"object": "list", "total": versions.len(), "data": versions}),
    ))
}

pub(super) async fn rollback_config(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    json: Result<Json<Rollback>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let req = body(json)?;
    let saved = state.store.rollback_config(&slug, &req.version_id).await?;
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
}

#[derive(Deserialize)]
pub(super) struct UpdateVirtualKey {
    name: Option<String>,
    key: Option<String>,
    note: Option<String>,
}

/// The provider credential sealed, and masked for showing.
fn seal(state: &AppState, key: &str) -> Result<(String, String), AppError> {
    let sealer = crate::gateway::saved::sealer(state)?;
    let sealed = sealer
        .seal(key)
        .ok_or_else(|| AppError::Internal("sealing a virtual key failed".to_owned()))?;
    Ok((sealed, crate::store::seal::mask(key)))
}

fn virtual_key_json(v: &crate::store::virtual_keys::VirtualKey) -> Value {
    json!({
        "id": v.id, "slug": v.slug, "name": v.name, "provider": v.provider, "key": v.key,
        "note": v.note, "status": "active", "object": "virtual-key",
        "created_at": v.created_at, "last_updated_at": v.updated_at,
    })
}

pub(super) async fn create_virtual_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    json: Result<Json<CreateVirtualKey>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let admin = auth::admin(&state, &headers)?;
    let req = body(json)?;
    if req.key.trim().is_empty() {
        return Err(AppError::InvalidField {
            param: "key",
            message: "'key' must be the provider's API key".to_owned(),
        });
    }
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
        })
        .await?;
    Ok(Json(
        json!({"id": created.id, "slug": created.slug, "object": "virtual-key"}),
    ))
}

pub(super) async fn list_virtual_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let keys = state.store.list_virtual_keys().await?;
    let data: Vec<Value> = keys.iter().map(virtual_key_json).collect();
    Ok(Json(
        json!({"object": "list", "total": data.len(), "data": data}),
    ))
}

pub(super) async fn get_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let key = state.store.virtual_key(&slug).await?;
    Ok(Json(virtual_key_json(&key)))
}

pub(super) async fn update_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    json: Result<Json<UpdateVirtualKey>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let req = body(json)?;
    let credential = match req.key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        Some(key) => Some(seal(&state, key)?),
        None => None,
    };
    let updated = state
        .store
        .update_virtual_key(
            &slug,
            req.name.as_deref(),
            req.note.as_deref(),
            credential.as_ref().map(|(s, m)| (s.as_str(), m.as_str())),
        )
        .await?;
    Ok(Json(virtual_key_json(&updated)))
}

pub(super) async fn delete_virtual_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    state.store.delete_virtual_key(&slug).await?;
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
    headers: HeaderMap,
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AppError> {
    auth::admin(&state, &headers)?;
    let axum::extract::Query(q) = query.map_err(|e| AppError::InvalidField {
        param: "query",
        message: e.body_text(),
    })?;
    let filter = crate::store::logs::LogFilter {
        from: q.from,
        to: q.to,
        route: q.route,
        status: q.status,
        cache_status: q.cache_status.map(|c| c.to_lowercase().replace(' ', "_")),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        without_bodies: false,
    };
    let rows = state.store.query_logs(&filter).await?;
    Ok(Json(
        json!({"object": "list", "total": rows.len(), "data": rows}),
    ))
}
