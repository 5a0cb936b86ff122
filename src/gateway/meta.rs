//! What one request's path decided, noted step by step as it goes (route, tenant, cache status,
//! similarity, attempts, target...) and read in one place once the answer is known: the
//! request metrics, the request-log row, the access log line ([`finish`]) and the response
//! headers ([`Meta::write_headers`]) all come from the same value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::GatewayResponse;
use crate::error::AppError;
use crate::portkey::{
    HEADER_CACHE_STATUS, HEADER_CONFIG_VERSION, HEADER_LAST_USED_OPTION, HEADER_MODEL,
    HEADER_REFUSED, HEADER_RETRY_COUNT, HEADER_SIMILARITY, HEADER_TARGET,
};
use crate::reqlog::{Draft, RequestLog};
use crate::state::AppState;
use crate::store::logs::LogRecord;
use crate::stream::record::ByteStream;
use crate::stream::usage::UsageTap;
use crate::upstream::{AnswerBody, status_label};

/// What the cache did for a request; sent as `x-portkey-cache-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the exact tier.
    Hit,
    /// Answered from the semantic tier.
    SemanticHit,
    /// Looked up, not found, forwarded.
    Miss,
    /// Lookup skipped on request; forwarded and stored anew.
    Refresh,
    /// The route does not cache.
    Disabled,
}

impl CacheStatus {
    /// Header value, as Portkey spells it.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::SemanticHit => "SEMANTIC HIT",
            Self::Miss => "MISS",
            Self::Refresh => "REFRESH",
            Self::Disabled => "DISABLED",
        }
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::SemanticHit => "semantic_hit",
            Self::Miss => "miss",
            Self::Refresh => "refresh",
            Self::Disabled => "disabled",
        }
    }
}

/// One request's account. Each step of the path fills in what it decided; nothing reads it
/// until [`finish`].
#[derive(Debug, Default)]
pub struct Meta {
    /// The id deja gave the request (`x-request-id`): the log row's id.
    pub request_id: Option<String>,
    pub endpoint: &'static str,
    pub route: Option<String>,
    pub tenant: Option<String>,
    /// The model the caller asked for.
    pub model: Option<String>,
    pub stream: bool,
    /// Upstream calls made, over every target tried.
    pub attempts: u32,
    /// Retries of the target whose answer is returned.
    pub retries: u32,
    /// What the cache did; `None` for endpoints that are never cached.
    pub cache: Option<CacheStatus>,
    /// Cosine similarity of a semantic hit.
    pub similarity: Option<f32>,
    /// On a semantic miss, the nearest candidate's similarity and the guard that refused it.
    pub nearest: Option<f32>,
    pub guard: Option<&'static str>,
    /// What the grey zone's judge cost, when it was asked.
    pub judge: Option<super::judge::JudgeCost>,
    /// Why that candidate was refused, for `x-deja-refused`: `verifier 0.31`, `guard numbers`.
    pub refused: Option<String>,
    pub note: Option<&'static str>,
    /// Saved config slug and version, and the virtual key slug, the call named.
    pub config: Option<String>,
    pub config_version: Option<String>,
    pub virtual_key: Option<String>,
    /// The strategy target that answered: its index among its siblings and its path.
    pub target: Option<(usize, String)>,
    /// The host of the target whose answer is returned.
    pub upstream_host: Option<String>,
    /// The model that target's `override_params` asked for.
    pub target_model: Option<String>,
    /// The caller's `x-portkey-trace-id`.
    pub trace_id: Option<String>,
    /// The request body, kept for the request log only with `[log] bodies = true`.
    pub prompt: Option<Bytes>,
}

impl Meta {
    /// A request's account for `endpoint`, starting from the id the request-id layer gave it.
    pub fn for_request(headers: &HeaderMap, endpoint: &'static str) -> Self {
        Self {
            request_id: crate::request_id::of(headers),
            trace_id: crate::request_id::trace_id(headers).ok().flatten(),
            endpoint,
            ..Self::default()
        }
    }

    /// The request's span: every line logged on its path carries its id, and (for a stream) it
    /// closes when the stream ends, not when the handler returns.
    pub fn span(&self) -> tracing::Span {
        let endpoint = self.endpoint;
        tracing::info_span!("request", id = self.request_id.as_deref(), endpoint)
    }

    /// The Portkey and deja headers a client reads about its answer.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(HEADER_RETRY_COUNT, HeaderValue::from(self.retries));
        if let Some(cache) = self.cache {
            let value = HeaderValue::from_static(cache.header_value());
            headers.insert(HEADER_CACHE_STATUS, value);
        }
        if let Some((index, path)) = &self.target {
            headers.insert(HEADER_LAST_USED_OPTION, HeaderValue::from(*index));
            if let Ok(path) = HeaderValue::from_str(path) {
                headers.insert(HEADER_TARGET, path);
            }
        }
        let text_headers = [
            (HEADER_MODEL, self.target_model.clone()),
            (HEADER_CONFIG_VERSION, self.config_version.clone()),
            (
                HEADER_SIMILARITY,
                self.similarity.map(|s| format!("{s:.4}")),
            ),
            (HEADER_REFUSED, self.refused.clone()),
        ];
        for (name, value) in text_headers {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
    }

    /// The answering target as the request log shows it: `targets[1] api.anthropic.com`, or the
    /// host alone when the plan had no strategy.
    fn target_label(&self) -> String {
        let host = self.upstream_host.as_deref().unwrap_or_default();
        match &self.target {
            Some((_, path)) if !path.is_empty() => format!("{path} {host}").trim_end().to_owned(),
            _ => host.to_owned(),
        }
    }

    /// The request-log row, `tokens` still to be read from the answer.
    fn row(&self, endpoint: &str, route: &str, status: u16, elapsed: Duration) -> LogRecord {
        LogRecord {
            id: self
                .request_id
                .clone()
                .unwrap_or_else(|| format!("req_{}", crate::store::random_hex(8))),
            at: crate::clock::now_ms(),
            endpoint: endpoint.to_owned(),
            route: route.to_owned(),
            tenant: self.tenant.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            config_version: self.config_version.clone().unwrap_or_default(),
            config: self.config.clone().unwrap_or_default(),
            virtual_key: self.virtual_key.clone().unwrap_or_default(),
            cache_status: self.cache.map_or("none", CacheStatus::label).to_owned(),
            similarity: self.similarity.map(f64::from),
            nearest: self.nearest.map(f64::from),
            guard: self.guard.unwrap_or_default().to_owned(),
            target: self.target_label(),
            trace_id: self.trace_id.clone().unwrap_or_default(),
            judge_model: self
                .judge
                .as_ref()
                .map(|j| j.model.clone())
                .unwrap_or_default(),
            judge_tokens: self
                .judge
                .as_ref()
                .map_or(0, |j| i64::try_from(j.tokens).unwrap_or(i64::MAX)),
            judge_ms: self
                .judge
                .as_ref()
                .map_or(0.0, |j| j.took.as_secs_f64() * 1000.0),
            attempts: i64::from(self.attempts),
            status: i64::from(status),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            ..LogRecord::default()
        }
    }
}

/// Counts the request, logs it (the access line now, the request-log row now or when a stream
/// ends) and hands the account to the response for its headers.
pub(super) fn finish(
    state: &AppState,
    mut meta: Meta,
    result: &mut Result<GatewayResponse, AppError>,
    (started, span): (Instant, tracing::Span),
) {
    let _entered = span.enter();
    let elapsed = started.elapsed();
    let endpoint = meta.endpoint;
    let route = meta.route.as_deref().unwrap_or("unmatched");
    let status = match result {
        Ok(r) => r.answer.status,
        Err(e) => e.status(),
    };
    let cache = meta.cache.map_or("none", CacheStatus::label);
    state
        .metrics
        .request(route, status_label(status.as_u16()), cache, elapsed);
    let error = result.as_ref().err().map(AppError::kind);
    tracing::info!(
        endpoint,
        route,
        model = meta.model.as_deref(),
        status = status.as_u16(),
        cache,
        similarity = meta.similarity,
        attempts = meta.attempts,
        note = meta.note,
        target = meta.target.as_ref().map(|(_, path)| path.as_str()),
        stream = meta.stream,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        error,
        "request"
    );
    if let Some(log) = &state.request_log {
        let answer = result.as_ref().ok().and_then(|r| match &r.answer.body {
            AnswerBody::Full(body) => Some(body.clone()),
            AnswerBody::Stream(_) => None,
        });
        let draft = Draft {
            record: meta.row(endpoint, route, status.as_u16(), elapsed),
            answer,
            prompt: meta.prompt.take(),
            stream_usage: None,
        };
        record_when_done(log, draft, result);
    }
    if let Ok(response) = result {
        if let AnswerBody::Stream(stream) = &mut response.answer.body {
            let inner = std::mem::replace(stream, futures_util::stream::empty().boxed());
            *stream = until_end(
                inner,
                StreamEnd {
                    span: span.clone(),
                    started,
                },
            )
            .boxed();
        }
        response.meta = meta;
    }
}

/// Held by a streamed answer's body: when the stream ends (or the client hangs up) it logs the
/// stream's whole time and lets the request's span close.
struct StreamEnd {
    span: tracing::Span,
    started: Instant,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(parent: &self.span, latency_ms, "stream ended");
    }
}

/// `stream` with `end` entered around each chunk and dropped with it.
fn until_end(
    stream: ByteStream,
    end: StreamEnd,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream.map(move |chunk| {
        let _entered = end.span.enter();
        chunk
    })
}

/// Hands `draft` to the request log: now for a plain answer; for a stream, when it is over,
/// with the usage its last chunk carried (or, replayed from the cache, the stored answer's).
fn record_when_done(
    log: &Arc<RequestLog>,
    draft: Draft,
    result: &mut Result<GatewayResponse, AppError>,
) {
    let replayed_from = result.as_ref().ok().and_then(|r| r.replayed_from.clone());
    let Some(AnswerBody::Stream(stream)) = result.as_mut().ok().map(|r| &mut r.answer.body) else {
        log.record(draft);
        return;
    };
    let log = Arc::clone(log);
    let inner = std::mem::replace(stream, futures_util::stream::empty().boxed());
    let on_end = Box::new(move |usage: Option<Bytes>| {
        log.record(Draft {
            stream_usage: usage.or(replayed_from),
            ..draft
        });
    });
    *stream = UsageTap::new(inner, on_end).boxed();
}
