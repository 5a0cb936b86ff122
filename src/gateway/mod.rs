//! The request path, free of HTTP framework types: who is calling (`auth`), which route, the
//! per-request config (inline or saved, and its virtual key: `saved`), the cache (`cached`), the
//! upstream call with retries or through a strategy's targets (`strategy`), then count and log (`meta`).

mod admission;
mod breaker;
mod cached;
pub mod judge;
mod meta;
mod strategy;
mod verify;
mod writeback;

pub use crate::policy::Call;
pub use admission::{Admission, Slot};
pub use breaker::Breakers;
pub use meta::{CacheStatus, Meta};
pub use verify::VerifyBudget;

use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use crate::auth;
use crate::error::AppError;
use crate::policy::{self, CallContext, Node};
use crate::portkey::HEADER_ROUTE;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::upstream::{Answer, AnswerBody};
use meta::finish;

/// A finished answer, ready for the HTTP edge.
#[derive(Debug)]
pub struct GatewayResponse {
    /// The upstream's (or cached) answer.
    pub answer: Answer,
    /// The stored answer a streamed cache hit is replayed from; the request log reads its
    /// `usage` when the replay carries none.
    pub replayed_from: Option<Bytes>,
    /// What the request path decided; filled in by `finish`, read for the response headers.
    pub meta: Meta,
}

impl GatewayResponse {
    /// An answer as it came, nothing replayed.
    fn new(answer: Answer) -> Self {
        Self {
            answer,
            replayed_from: None,
            meta: Meta::default(),
        }
    }

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

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    state: &AppState,
    call: Call<'_>,
    body: Result<Bytes, AppError>,
) -> Result<GatewayResponse, AppError> {
    let started = Instant::now();
    let mut meta = Meta::for_request(call.headers, "chat.completions");
    let span = meta.span();
    let mut result = chat_inner(state, &call, body, &mut meta)
        .instrument(span.clone())
        .await;
    finish(state, meta, &mut result, (started, span));
    result
}

async fn chat_inner(
    state: &AppState,
    call: &Call<'_>,
    body: Result<Bytes, AppError>,
    meta: &mut Meta,
) -> Result<GatewayResponse, AppError> {
    let principal = auth::caller(state, call.headers)?;
    meta.tenant = principal.as_ref().map(|p| p.tenant.clone());
    crate::request_id::trace_id(call.headers)?;
    // Named before the body is read, so even a refused body is counted under its route.
    meta.route = policy::choose_route(&state.config, call, None)
        .ok()
        .filter(|_| call.path_route.is_some() || call.headers.contains_key(HEADER_ROUTE))
        .map(|r| r.name.clone());
    let request = ChatRequest::parse(body?)?;
    let route = policy::choose_route(&state.config, call, Some(&request.model));
    // And a refused config under the route the model chose.
    meta.route = route.as_ref().ok().map(|r| r.name.clone());
    if state.request_log.as_ref().is_some_and(|l| l.bodies()) {
        meta.prompt = Some(request.raw.clone());
    }
    meta.model = Some(request.model.clone());
    meta.stream = request.stream;
    let ctx = match route {
        Ok(route) => policy::resolve(state, call, route, principal).await,
        Err(e) => Err(e),
    };
    let ctx = meta.resolved(ctx)?;
    let request = match ctx.route.model_aliases.get(&request.model) {
        Some(model) => request.with_model(model),
        None => request,
    };
    let slot = state.admission.admit(&ctx.route.name).await?;
    let mut response = cached::answer(state, &ctx, request, meta).await?;
    response.hold(slot);
    Ok(response)
}

impl Meta {
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
    meta: &mut Meta,
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
        Node::Leaf(target) if !ctx.plan.strategic => strategy::leaf(&run, target, meta).await,
        _ => strategy::run(&run, &ctx.plan, meta).await,
    }
}

/// `GET /v1/models`, passed through under the route's retry policy.
pub async fn models(state: &AppState, call: Call<'_>) -> Result<GatewayResponse, AppError> {
    let started = Instant::now();
    let mut meta = Meta::for_request(call.headers, "models");
    let span = meta.span();
    let mut result = async {
        let principal = auth::caller(state, call.headers)?;
        meta.tenant = principal.as_ref().map(|p| p.tenant.clone());
        crate::request_id::trace_id(call.headers)?;
        let ctx = match policy::choose_route(&state.config, &call, None) {
            Ok(route) => policy::resolve(state, &call, route, principal).await,
            Err(e) => Err(e),
        };
        let ctx = meta.resolved(ctx)?;
        forward(state, &ctx, "/models", None, false, &mut meta).await
    }
    .instrument(span.clone())
    .await;
    finish(state, meta, &mut result, (started, span));
    result
}
