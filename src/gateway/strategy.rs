//! Running a request through its resolved plan: fallback tries targets in order and moves on
//! when one fails (its retries exhausted on a status the strategy names, or no connection);
//! loadbalance picks one by weight. Nested groups run the same way. Each leaf is one upstream
//! call with the settings the policy resolved; circuit breakers skip targets that keep failing.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde_json::{Map, Value};

use super::{GatewayResponse, Meta};
use crate::config::RouteConfig;
use crate::error::AppError;
use crate::policy::{Child, Group, Node, Plan, Target};
use crate::portkey::StrategyMode;
use crate::state::AppState;
use crate::upstream::{UpstreamCall, UpstreamError};

/// What stays the same across one request's targets.
pub(super) struct Ctx<'a> {
    pub state: &'a AppState,
    pub route: &'a RouteConfig,
    /// The plan came from the caller: its target paths are not metric labels.
    pub caller_plan: bool,
    pub path: &'static str,
    pub body: Option<Bytes>,
    pub stream: bool,
}

/// The final answer (or failure), with the target path and its index among its siblings.
type Outcome = (Result<GatewayResponse, AppError>, String, usize);

/// Runs `plan` and marks the answer with the target that gave it.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    plan: &Plan,
    meta: &mut Meta,
) -> Result<GatewayResponse, AppError> {
    let (result, target, index) = node(ctx, &plan.root, String::new(), 0, meta).await;
    let response = result?;
    ctx.state
        .metrics
        .target_answer(&ctx.route.name, metric_label(ctx, &target));
    meta.target = Some((index, target));
    Ok(response)
}

fn node<'a>(
    ctx: &'a Ctx<'a>,
    node: &'a Node,
    path: String,
    index: usize,
    meta: &'a mut Meta,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        match node {
            Node::Leaf(target) => (leaf(ctx, target, meta).await, path, index),
            Node::Group(group) => match group.mode {
                StrategyMode::Fallback => fallback(ctx, group, path, index, meta).await,
                StrategyMode::Loadbalance => loadbalance(ctx, group, path, index, meta).await,
            },
        }
    })
}

async fn fallback(
    ctx: &Ctx<'_>,
    group: &Group,
    path: String,
    index: usize,
    meta: &mut Meta,
) -> Outcome {
    let moves_on = |status: http::StatusCode| {
        group
            .on_status_codes
            .as_ref()
            .map_or(!status.is_success(), |codes| {
                codes.contains(&status.as_u16())
            })
    };
    let mut last: Option<Outcome> = None;
    for child in &group.children {
        if !allowed(ctx, child) {
            continue;
        }
        let outcome = tried(ctx, child, meta).await;
        let move_on = match &outcome.0 {
            Ok(r) => moves_on(r.answer.status),
            Err(AppError::Upstream { .. }) => true,
            Err(_) => false,
        };
        if !move_on {
            return outcome;
        }
        last = Some(outcome);
    }
    last.unwrap_or_else(|| (Err(all_open()), path, index))
}

async fn loadbalance(
    ctx: &Ctx<'_>,
    group: &Group,
    path: String,
    index: usize,
    meta: &mut Meta,
) -> Outcome {
    let candidates: Vec<&Child> = group
        .children
        .iter()
        .filter(|c| c.weight > 0.0 && allowed(ctx, c))
        .collect();
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let mut roll = rand::rng().random::<f64>() * total;
    let Some(child) = candidates
        .iter()
        .find(|c| {
            roll -= c.weight;
            roll < 0.0
        })
        .or(candidates.last())
    else {
        return (Err(all_open()), path, index);
    };
    tried(ctx, child, meta).await
}

fn allowed(ctx: &Ctx<'_>, child: &Child) -> bool {
    child
        .breaker
        .as_ref()
        .is_none_or(|(key, _)| ctx.state.breakers.allow(key))
}

/// Runs `child` and records the outcome on its breaker.
async fn tried(ctx: &Ctx<'_>, child: &Child, meta: &mut Meta) -> Outcome {
    let outcome = node(ctx, &child.node, child.path.clone(), child.index, meta).await;
    if let Some((key, cb)) = &child.breaker {
        // Only the target's own failures count: a 4xx the caller's request caused (a bad
        // parameter) must not let one caller open a breaker others rely on.
        let ok = match &outcome.0 {
            Ok(r) => {
                let status = r.answer.status;
                !(status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS)
            }
            Err(AppError::Upstream { .. }) => false,
            Err(_) => true,
        };
        let label = (!ctx.caller_plan).then_some((ctx.route.name.as_str(), child.path.as_str()));
        ctx.state
            .breakers
            .record(key, label, *cb, ok, &ctx.state.metrics);
    }
    outcome
}

/// A target's metric label: its path in a route's plan; `caller` for a caller's own targets,
/// whose paths are theirs to choose (and would grow `/metrics` without bound).
fn metric_label<'p>(ctx: &Ctx<'_>, path: &'p str) -> &'p str {
    if ctx.caller_plan { "caller" } else { path }
}

fn all_open() -> AppError {
    AppError::Upstream {
        source: UpstreamError::Unreachable(
            "every target is disabled or its circuit is open".to_owned(),
        ),
        retries: 0,
    }
}

/// One upstream call to a resolved target.
pub(super) async fn leaf(
    ctx: &Ctx<'_>,
    target: &Target,
    meta: &mut Meta,
) -> Result<GatewayResponse, AppError> {
    let body = match &ctx.body {
        Some(raw) if !target.params.is_empty() => Some(with_params(raw, &target.params)?),
        other => other.clone(),
    };
    let forwarded = ctx
        .state
        .forwarder
        .send(UpstreamCall {
            route: &ctx.route.name,
            path: ctx.path,
            body,
            stream: ctx.stream,
            timeout: target.timeout,
            retry: &target.retry,
            auth: target.auth.as_ref(),
            base_url: &target.base_url,
            wire: &target.wire,
        })
        .await;
    meta.attempts += forwarded.retries + 1;
    let answer = forwarded.result.map_err(|source| AppError::Upstream {
        source,
        retries: forwarded.retries,
    })?;
    meta.retries = forwarded.retries;
    meta.upstream_host = target
        .base_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned));
    meta.target_model = target
        .params
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(GatewayResponse::new(answer))
}

/// The request body with `params` laid over its top-level fields.
pub(super) fn with_params(raw: &Bytes, params: &Map<String, Value>) -> Result<Bytes, AppError> {
    let mut body: Value =
        serde_json::from_slice(raw).map_err(|e| AppError::InvalidJson(e.to_string()))?;
    if let Some(object) = body.as_object_mut() {
        for (k, v) in params {
            object.insert(k.clone(), v.clone());
        }
    }
    Ok(Bytes::from(body.to_string()))
}
