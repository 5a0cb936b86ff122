//! Analytics over the request log, behind admin keys: deja's cache report (which the dashboard
//! draws) and Portkey's graph and summary endpoints.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::analytics::graphs::{self, Graph};
use crate::analytics::query::AnalyticsQuery;
use crate::analytics::{ReportSpec, cache_report};
use crate::auth::AdminCaller;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::logs::{LogFilter, LogRecord};

/// Most rows one analytics answer reads.
const MAX_ROWS: i64 = 200_000;

async fn rows(
    state: &AppState,
    admin: &AdminCaller,
    from: i64,
    to: i64,
    route: Option<String>,
) -> Result<Vec<LogRecord>, AppError> {
    let rows = state
        .store
        .query_logs(&LogFilter {
            from: Some(from),
            to: Some(to),
            route,
            tenant: admin.sees().map(str::to_owned),
            limit: MAX_ROWS,
            without_bodies: true,
            ..LogFilter::default()
        })
        .await?;
    if rows.len() as i64 == MAX_ROWS {
        tracing::warn!(
            rows = MAX_ROWS,
            "analytics window holds more rows than are read; the oldest are left out"
        );
    }
    Ok(rows)
}

#[derive(Deserialize)]
pub(super) struct CacheQuery {
    /// Window back from now, such as `1h` or `30m`; default `1h`.
    window: Option<String>,
    route: Option<String>,
    /// Points in each route's series; default 30.
    buckets: Option<usize>,
}

/// `GET /v1/analytics/cache?window=1h&route=...&buckets=30`.
pub(super) async fn cache(
    State(state): State<AppState>,
    admin: AdminCaller,
    q: Result<Query<CacheQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = q?;
    let window = humantime::parse_duration(q.window.as_deref().unwrap_or("1h")).map_err(|e| {
        AppError::InvalidField {
            param: "window",
            message: format!("'window' must be a duration such as 1h: {e}"),
        }
    })?;
    let buckets = q.buckets.unwrap_or(30);
    if !(1..=500).contains(&buckets) {
        return Err(AppError::InvalidField {
            param: "buckets",
            message: format!("'buckets' must be within 1..=500, got {buckets}"),
        });
    }
    let to = crate::clock::now_ms();
    let from = to.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let rows = rows(&state, &admin, from, to, q.route).await?;
    let config = &state.config;
    let threshold = |route: &str| {
        let default = config.embedding.model.default_threshold();
        f64::from(
            config
                .routes
                .iter()
                .find(|r| r.name == route)
                .and_then(|r| r.cache.similarity_threshold)
                .unwrap_or(default),
        )
    };
    let prices = config.log.price_list();
    let routes = cache_report(
        &rows,
        &ReportSpec {
            prices: &prices,
            threshold: &threshold,
            from,
            to,
            buckets,
        },
    );
    Ok(Json(json!({
        "object": "cache_analytics", "window_ms": to - from, "from": from, "to": to,
        "routes": routes,
    })))
}

async fn portkey_rows(
    state: &AppState,
    admin: &AdminCaller,
    params: &HashMap<String, String>,
) -> Result<(AnalyticsQuery, Vec<LogRecord>), AppError> {
    let q = AnalyticsQuery::parse(params)?;
    let rows = rows(state, admin, q.from, q.to, q.route.clone()).await?;
    Ok((q, rows))
}

/// `GET /v1/analytics/graphs/{name}` (and `{group}/{name}`, as Portkey's reference spells some).
pub(super) async fn graph(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(path): Path<Vec<String>>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let name = path.join("/");
    let Some(graph) = Graph::named(&name) else {
        let known: Vec<&str> = graphs::NAMES.iter().map(|(n, _)| *n).collect();
        return Err(AppError::Missing(format!(
            "analytics graph '{name}' (known: {})",
            known.join(", ")
        )));
    };
    let (q, rows) = portkey_rows(&state, &admin, &params?.0).await?;
    Ok(Json(graphs::graph(
        graph,
        &rows,
        &q,
        &state.config.log.price_list(),
    )))
}

/// `GET /v1/analytics/summary/cache`.
pub(super) async fn cache_summary(
    State(state): State<AppState>,
    admin: AdminCaller,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let (q, rows) = portkey_rows(&state, &admin, &params?.0).await?;
    Ok(Json(graphs::cache_summary(
        &rows,
        &q,
        &state.config.log.price_list(),
    )))
}
