//! The request path, free of HTTP framework types: who is calling (`auth`), which route, the
//! per-request config (inline or saved, and its virtual key: `saved`), the cache (`cached`), the
//! upstream call with retries or through a strategy's targets (`strategy`), then count and log.

mod admission;
mod breaker;
mod cached;
mod strategy;
mod verify;
mod writeback;

pub use crate::policy::Call;
pub use admission::{Admission, Slot};
pub use breaker::Breakers;
pub use verify::VerifyBudget;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth;
use crate::error::AppError;
use crate::policy::{self, CallContext, Node};
use crate::portkey::HEADER_ROUTE;
use crate::reqlog::{Pending, RequestLogger};
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::store::logs::LogRecord;
use crate::stream::usage::UsageTap;
use crate::upstream::{Answer, AnswerBody, status_label};

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

/// A finished answer, ready for the HTTP edge.
#[derive(Debug)]
pub struct GatewayResponse {
    /// The upstream's (or cached) answer.
    pub answer: Answer,
    /// Retries made upstream.
    pub retries: u32,
    /// What the cache did; `None` for endpoints that are never cached.
    pub cache: Option<CacheStatus>,
    /// Cosine similarity of a semantic hit.
    pub similarity: Option<f32>,
    /// Version of the saved config the request named, sent as `x-deja-config-version`.
    pub config_version: Option<String>,
    /// The strategy target that answered: its index among its siblings and its path.
    pub target: Option<(usize, String)>,
    /// The model a target's `override_params` asked for, sent as `x-deja-model`.
    pub model: Option<String>,
    /// The stored answer a streamed cache hit is replayed from; the request log reads its
    /// `usage` when the replay carries none.
    pub replayed_from: Option<Bytes>,
}

impl GatewayResponse {
    /// Keeps the route's slot until a streamed body ends (a plain body is complete already, so
    /// the slot is released when this returns).
    fn hold(&mut self, slot: Option<Slot>) {
        use futures_util::StreamExt;
        let Some(slot) = slot else { return };
        let body = std::mem::replace(&mut self.answer.body, AnswerBody::Full(Bytes::new()));
        self.answer.body = match body {
            AnswerBody::Stream(stream) => AnswerBody::Stream(
                stream
                    .map(move |chunk| {
                        let _slot = &slot;
                        chunk
                    })
                    .boxed(),
            ),
            full => full,
        };
    }
}

#[derive(Default)]
struct RequestLog {
    /// The id deja gave the request (`x-request-id`): the log row's id.
    request_id: Option<String>,
    route: Option<String>,
    model: Option<String>,
    attempts: u32,
    stream: bool,
    cache: Option<CacheStatus>,
    similarity: Option<f32>,
    note: Option<&'static str>,
    tenant: Option<String>,
    config_version: Option<String>,
    /// Saved config slug and virtual key slug the call named.
    config: Option<String>,
    virtual_key: Option<String>,
    /// On a semantic miss, the nearest candidate's similarity and the guard that refused it.
    nearest: Option<f32>,
    guard: Option<&'static str>,
    target: Option<String>,
    /// The request body, kept for the request log only with `[log] bodies = true`.
    prompt: Option<Bytes>,
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    state: &AppState,
    call: Call<'_>,
    body: Result<Bytes, AppError>,
) -> Result<GatewayResponse, AppError> {
    let started = Instant::now();
    let mut log = RequestLog {
        request_id: crate::request_id::of(call.headers),
        ..RequestLog::default()
    };
    let mut result = chat_inner(state, &call, body, &mut log).await;
    finish(
        state,
        "chat.completions",
        &log,
        &mut result,
        started.elapsed(),
    );
    result
}

async fn chat_inner(
    state: &AppState,
    call: &Call<'_>,
    body: Result<Bytes, AppError>,
    log: &mut RequestLog,
) -> Result<GatewayResponse, AppError> {
    let principal = auth::caller(state, call.headers)?;
    log.tenant = principal.as_ref().map(|p| p.tenant.clone());
    // Named before the body is read, so even a refused body is counted under its route.
    log.route = policy::choose_route(&state.config, call, None)
        .ok()
        .filter(|_| call.path_route.is_some() || call.headers.contains_key(HEADER_ROUTE))
        .map(|r| r.name.clone());
    let request = ChatRequest::parse(body?)?;
    let route = policy::choose_route(&state.config, call, Some(&request.model));
    // And a refused config under the route the model chose.
    log.route = route.as_ref().ok().map(|r| r.name.clone());
    if state.request_log.as_ref().is_some_and(|l| l.bodies()) {
        log.prompt = Some(request.raw.clone());
    }
    log.model = Some(request.model.clone());
    log.stream = request.stream;
    let ctx = match route {
        Ok(route) => policy::resolve(state, call, route, principal).await,
        Err(e) => Err(e),
    };
    let ctx = log.resolved(ctx)?;
    let slot = state.admission.admit(&ctx.route.name).await?;
    let mut response = cached::answer(state, &ctx, request, log).await?;
    response.config_version = ctx.saved.as_ref().map(|(_, v)| v.clone());
    response.hold(slot);
    Ok(response)
}

impl RequestLog {
    /// Notes what the context decided (or, when resolving failed, which route was named).
    fn resolved<'a>(
        &mut self,
        ctx: Result<CallContext<'a>, AppError>,
    ) -> Result<CallContext<'a>, AppError> {
        let ctx = ctx?;
        self.route = Some(ctx.route.name.clone());
        self.virtual_key = ctx.virtual_key().map(str::to_owned);
        if let Some((slug, version)) = &ctx.saved {
            self.config = Some(slug.clone());
            self.config_version = Some(version.clone());
        }
        Ok(ctx)
    }
}

/// Sends one call upstream through the context's plan.
async fn forward(
    state: &AppState,
    ctx: &CallContext<'_>,
    path: &'static str,
    body: Option<Bytes>,
    stream: bool,
    log: &mut RequestLog,
) -> Result<GatewayResponse, AppError> {
    let run = strategy::Ctx {
        state,
        route: ctx.route,
        caller_plan: ctx.plan.caller,
        path,
        body,
        stream,
    };
    match &ctx.plan.root {
        Node::Leaf(target) if !ctx.plan.strategic => strategy::leaf(&run, target, log).await,
        _ => strategy::run(&run, &ctx.plan, log).await,
    }
}

/// `GET /v1/models`, passed through under the route's retry policy.
pub async fn models(state: &AppState, call: Call<'_>) -> Result<GatewayResponse, AppError> {
    let started = Instant::now();
    let mut log = RequestLog {
        request_id: crate::request_id::of(call.headers),
        ..RequestLog::default()
    };
    let mut result = async {
        let principal = auth::caller(state, call.headers)?;
        log.tenant = principal.as_ref().map(|p| p.tenant.clone());
        let ctx = match policy::choose_route(&state.config, &call, None) {
            Ok(route) => policy::resolve(state, &call, route, principal).await,
            Err(e) => Err(e),
        };
        let ctx = log.resolved(ctx)?;
        forward(state, &ctx, "/models", None, false, &mut log).await
    }
    .await;
    finish(state, "models", &log, &mut result, started.elapsed());
    result
}

/// Hands `pending` to the log: now for a plain answer; for a stream, when it is over, with the
/// usage its last chunk carried (or, replayed from the cache, the stored answer's).
fn record_when_done(
    logger: &Arc<RequestLogger>,
    pending: Pending,
    result: &mut Result<GatewayResponse, AppError>,
) {
    use futures_util::StreamExt;
    let replayed_from = result.as_ref().ok().and_then(|r| r.replayed_from.clone());
    let Some(AnswerBody::Stream(stream)) = result.as_mut().ok().map(|r| &mut r.answer.body) else {
        logger.record(pending);
        return;
    };
    let logger = Arc::clone(logger);
    let inner = std::mem::replace(stream, futures_util::stream::empty().boxed());
    let on_end = Box::new(move |usage: Option<Bytes>| {
        logger.record(Pending {
            stream_usage: usage.or(replayed_from),
            ..pending
        });
    });
    *stream = UsageTap::new(inner, on_end).boxed();
}

fn finish(
    state: &AppState,
    endpoint: &'static str,
    log: &RequestLog,
    result: &mut Result<GatewayResponse, AppError>,
    elapsed: Duration,
) {
    let route = log.route.as_deref().unwrap_or("unmatched");
    let status = match result {
        Ok(r) => r.answer.status,
        Err(e) => e.status(),
    };
    let cache = log.cache.map_or("none", CacheStatus::label);
    state
        .metrics
        .request(route, status_label(status.as_u16()), cache, elapsed);
    if let Some(logger) = &state.request_log {
        let answer = result.as_ref().ok().and_then(|r| match &r.answer.body {
            AnswerBody::Full(body) => Some(body.clone()),
            AnswerBody::Stream(_) => None,
        });
        let pending = Pending {
            record: LogRecord {
                id: log
                    .request_id
                    .clone()
                    .unwrap_or_else(|| format!("req_{}", crate::store::random_hex(8))),
                at: crate::store::now_ms(),
                endpoint: endpoint.to_owned(),
                route: route.to_owned(),
                tenant: log.tenant.clone().unwrap_or_default(),
                model: log.model.clone().unwrap_or_default(),
                config_version: log.config_version.clone().unwrap_or_default(),
                config: log.config.clone().unwrap_or_default(),
                virtual_key: log.virtual_key.clone().unwrap_or_default(),
                cache_status: cache.to_owned(),
                similarity: log.similarity.map(f64::from),
                nearest: log.nearest.map(f64::from),
                guard: log.guard.unwrap_or_default().to_owned(),
                attempts: i64::from(log.attempts),
                status: i64::from(status.as_u16()),
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                ..LogRecord::default()
            },
            answer,
            prompt: log.prompt.clone(),
            stream_usage: None,
        };
        record_when_done(logger, pending, result);
    }
    let error = result.as_ref().err().map(AppError::kind);
    tracing::info!(
        endpoint,
        route,
        model = log.model.as_deref(),
        status = status.as_u16(),
        cache,
        similarity = log.similarity,
        attempts = log.attempts,
        note = log.note,
        target = log.target.as_deref(),
        stream = log.stream,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        error,
        "request"
    );
}
