//! The request log's rows: written in batches, read back with filters, pruned by age.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// One answered request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogRecord {
    /// Row id.
    pub id: String,
    /// When it was answered, Unix ms.
    pub at: i64,
    /// `chat.completions` or `models`.
    pub endpoint: String,
    /// Route that served it.
    pub route: String,
    /// Tenant of its API key ("" when anonymous).
    pub tenant: String,
    /// Model asked for.
    pub model: String,
    /// Saved config slug it named ("" for none).
    pub config: String,
    /// Saved config version it used ("" for none).
    pub config_version: String,
    /// Virtual key slug it named ("" for none).
    pub virtual_key: String,
    /// Cache status (`hit`, `semantic_hit`, `miss`, `refresh`, `disabled`, `none`).
    pub cache_status: String,
    /// Similarity of a semantic hit.
    pub similarity: Option<f64>,
    /// Upstream attempts made.
    pub attempts: i64,
    /// HTTP status answered.
    pub status: i64,
    /// Time to the answer (first byte for streams), ms.
    pub latency_ms: f64,
    /// `usage.total_tokens` of the answer, 0 when unknown (streams).
    pub tokens: i64,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: i64,
    /// `usage.completion_tokens`.
    pub completion_tokens: i64,
    /// On a semantic miss, the nearest stored question's similarity (a near miss when just
    /// under the threshold).
    pub nearest: Option<f64>,
    /// The guard that refused the nearest candidate ("" when none did).
    pub guard: String,
    /// The target that answered: its strategy path (when the plan had one) and host.
    pub target: String,
    /// The caller's `x-portkey-trace-id` ("" for none).
    pub trace_id: String,
    /// The model the grey zone's judge asked ("" when no judge was asked).
    pub judge_model: String,
    /// Tokens the judge's call cost (its `usage.total_tokens`).
    pub judge_tokens: i64,
    /// How long the judge took, ms (on the request's own path).
    pub judge_ms: f64,
    /// The request body, with `[log] bodies = true`.
    pub prompt: Option<String>,
    /// The answer body, with `[log] bodies = true`.
    pub answer: Option<String>,
}

/// Which rows `GET /v1/logs` returns.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// From this time, Unix ms.
    pub from: Option<i64>,
    /// Up to this time, Unix ms.
    pub to: Option<i64>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this HTTP status.
    pub status: Option<i64>,
    /// Only this cache status.
    pub cache_status: Option<String>,
    /// Only this tenant's rows (`None`: every tenant's, for operators).
    pub tenant: Option<String>,
    /// At most this many rows, newest first.
    pub limit: i64,
    /// Leave the bodies out (analytics reads many rows and needs none of them).
    pub without_bodies: bool,
}

const COLUMNS: &str = "id, at, endpoint, route, tenant, model, config_version, cache_status, \
     similarity, attempts, status, latency_ms, tokens, prompt, answer, config, virtual_key, \
     prompt_tokens, completion_tokens, nearest, guard, target, trace_id, judge_model, judge_tokens, \
     judge_ms";

fn record(row: &AnyRow) -> Result<LogRecord, StoreError> {
    Ok(LogRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        endpoint: row.try_get("endpoint")?,
        route: row.try_get("route")?,
        tenant: row.try_get("tenant")?,
        model: row.try_get("model")?,
        config_version: row.try_get("config_version")?,
        cache_status: row.try_get("cache_status")?,
        similarity: row.try_get("similarity")?,
        attempts: row.try_get("attempts")?,
        status: row.try_get("status")?,
        latency_ms: row.try_get("latency_ms")?,
        tokens: row.try_get("tokens")?,
        prompt: row.try_get("prompt")?,
        answer: row.try_get("answer")?,
        config: row.try_get("config")?,
        virtual_key: row.try_get("virtual_key")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        nearest: row.try_get("nearest")?,
        guard: row.try_get("guard")?,
        target: row.try_get("target")?,
        trace_id: row.try_get("trace_id")?,
        judge_model: row.try_get("judge_model")?,
        judge_tokens: row.try_get("judge_tokens")?,
        judge_ms: row.try_get("judge_ms")?,
    })
}

impl Store {
    /// Writes `rows` in one transaction.
    pub async fn insert_logs(&self, rows: &[LogRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for r in rows {
            sqlx::query(&format!(
                "INSERT INTO request_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, -1.0), $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18, $19, NULLIF($20, -1.0), $21, $22, $23, $24, $25, $26)"
            ))
            .bind(&r.id)
            .bind(r.at)
            .bind(&r.endpoint)
            .bind(&r.route)
            .bind(&r.tenant)
            .bind(&r.model)
            .bind(&r.config_version)
            .bind(&r.cache_status)
            // sqlx's Any driver cannot bind a NULL float to Postgres: -1 stands for none.
            .bind(r.similarity.unwrap_or(-1.0))
            .bind(r.attempts)
            .bind(r.status)
            .bind(r.latency_ms)
            .bind(r.tokens)
            .bind(r.prompt.as_deref())
            .bind(r.answer.as_deref())
            .bind(&r.config)
            .bind(&r.virtual_key)
            .bind(r.prompt_tokens)
            .bind(r.completion_tokens)
            .bind(r.nearest.unwrap_or(-1.0))
            .bind(&r.guard)
            .bind(&r.target)
            .bind(&r.trace_id)
            .bind(&r.judge_model)
            .bind(r.judge_tokens)
            .bind(r.judge_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rows matching `filter`, newest first.
    pub async fn query_logs(&self, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.from.is_some() {
            conditions.push(format!("at >= {}", next()));
        }
        if filter.to.is_some() {
            conditions.push(format!("at <= {}", next()));
        }
        if filter.tenant.is_some() {
            conditions.push(format!("tenant = {}", next()));
        }
        if filter.route.is_some() {
            conditions.push(format!("route = {}", next()));
        }
        if filter.status.is_some() {
            conditions.push(format!("status = {}", next()));
        }
        if filter.cache_status.is_some() {
            conditions.push(format!("cache_status = {}", next()));
        }
        let limit = next();
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let columns = if filter.without_bodies {
            COLUMNS.replace("prompt, answer", "NULL AS prompt, NULL AS answer")
        } else {
            COLUMNS.to_owned()
        };
        let sql = format!(
            "SELECT {columns} FROM request_log {filter_sql} ORDER BY at DESC LIMIT {limit}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(v) = filter.from {
            query = query.bind(v);
        }
        if let Some(v) = filter.to {
            query = query.bind(v);
        }
        if let Some(v) = &filter.tenant {
            query = query.bind(v.clone());
        }
        if let Some(v) = &filter.route {
            query = query.bind(v.clone());
        }
        if let Some(v) = filter.status {
            query = query.bind(v);
        }
        if let Some(v) = &filter.cache_status {
            query = query.bind(v.clone());
        }
        let rows = query.bind(filter.limit).fetch_all(self.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// Deletes rows older than `before` (Unix ms); returns how many.
    pub async fn prune_logs(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM request_log WHERE at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
