//! Operator endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

use crate::cache::CacheError;
use crate::config::Readiness;
use crate::error::AppError;
use crate::state::AppState;

/// How long `/readyz` waits for Redis before calling it down.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let redis = match state.cache.redis() {
        None => "not configured",
        // Known down: said at once, without waiting on it again.
        Some(store) if !store.breakers().open_nodes().is_empty() => {
            "bypassed: breaker open, probing"
        }
        Some(store) => match store.ping(READY_CHECK_TIMEOUT).await {
            Ok(()) => "ok",
            // The category, not the message: messages may carry the URL and its password.
            Err(CacheError::Timeout(_)) => "error: timed out",
            Err(CacheError::Bypassed) => "bypassed: breaker open, probing",
            Err(_) => "error: redis",
        },
    };
    let semantic = match (state.cache.semantic(), state.cache.semantic_ready()) {
        (None, _) => "not used",
        (Some(_), true) => "ok",
        (Some(_), false) => "rebuilding",
    };
    let every_tier = matches!(redis, "ok" | "not configured") && semantic != "rebuilding";
    let ready = every_tier || state.config.server.readiness == Readiness::Serving;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let model = state.cache.semantic().map(|t| t.embedder().model().slug());
    let said = match (every_tier, ready) {
        (true, _) => "ready",
        (false, true) => "degraded",
        (false, false) => "not ready",
    };
    let body = json!({
        "status": said,
        "checks": {"redis": redis, "semantic_index": semantic, "embedding_model": model},
    });
    (status, Json(body)).into_response()
}

pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: http::HeaderMap,
) -> Result<Response, AppError> {
    crate::auth::metrics_reader(&state, &headers)?;
    let text = state
        .metrics
        .encode()
        .map_err(|e| AppError::Internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
