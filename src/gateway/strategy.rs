//! Running a request through a config's `strategy` and `targets`: fallback tries targets in order
//! and moves on when one fails (its retries exhausted on a status the strategy names, or no
//! connection); loadbalance picks one by weight. Nested nodes run the same way. Each leaf is one
//! upstream call with the settings it inherited; circuit breakers skip targets that keep failing.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use rand::Rng;
use serde_json::{Map, Value};

use super::breaker::Breakers;
use super::{GatewayResponse, RequestLog, saved};
use crate::config::{RetryConfig, RouteConfig};
use crate::error::AppError;
use crate::portkey::{CircuitBreaker, RequestConfig, StrategyMode};
use crate::state::AppState;
use crate::upstream::{UpstreamCall, UpstreamError, providers};

/// What stays the same across one request's targets.
pub(super) struct Ctx<'a> {
    pub state: &'a AppState,
    pub route: &'a RouteConfig,
    pub path: &'static str,
    pub body: Option<Bytes>,
    pub stream: bool,
}

/// Settings a node passes to its targets; each target replaces what it sets.
#[derive(Clone)]
struct Inherited {
    retry: RetryConfig,
    timeout: Duration,
    auth: Option<HeaderValue>,
    base_url: Option<String>,
    params: Map<String, Value>,
    breaker: Option<CircuitBreaker>,
}

/// The final answer (or failure), with the target path and its index among its siblings.
type Outcome = (Result<GatewayResponse, AppError>, String, usize);

/// Runs `top` (a config with targets) and marks the answer with the target that gave it.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    top: &RequestConfig,
    timeout: Duration,
    log: &mut RequestLog,
) -> Result<GatewayResponse, AppError> {
    let base = Inherited {
        retry: top.retry_over(&ctx.route.retry)?,
        timeout,
        auth: top.provider_auth.clone(),
        base_url: None,
        params: Map::new(),
        breaker: None,
    };
    let base = inherit(ctx, &base, top, false).await?;
    let (result, target, index) = node(ctx, top, base, String::new(), 0, log).await;
    let mut response = result?;
    ctx.state.metrics.target_answer(&ctx.route.name, &target);
    log.target = Some(target.clone());
    response.target = Some((index, target));
    Ok(response)
}

fn node<'a>(
    ctx: &'a Ctx<'a>,
    config: &'a RequestConfig,
    settings: Inherited,
    path: String,
    index: usize,
    log: &'a mut RequestLog,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let fields = &config.targets_fields;
        let Some(children) = fields.targets.as_ref().filter(|t| !t.is_empty()) else {
            return (leaf(ctx, &settings, log).await, path, index);
        };
        let strategy = fields.strategy.as_ref();
        let moves_on = |status: http::StatusCode| {
            strategy
                .and_then(|s| s.on_status_codes.as_ref())
                .map_or(!status.is_success(), |codes| {
                    codes.contains(&status.as_u16())
                })
        };
        let child_path = |i: usize| {
            if path.is_empty() {
                format!("targets[{i}]")
            } else {
                format!("{path}.targets[{i}]")
            }
        };
        let breakers: &Breakers = &ctx.state.breakers;
        let route = ctx.route.name.as_str();
        match strategy.map_or(StrategyMode::Fallback, |s| s.mode) {
            StrategyMode::Fallback => {
                let mut last: Option<Outcome> = None;
                for (i, child) in children.iter().enumerate() {
                    let target = child_path(i);
                    let inherited = match inherit(ctx, &settings, child, true).await {
                        Ok(inherited) => inherited,
                        Err(e) => {
                            last = Some((Err(e), target, i));
                            continue;
                        }
                    };
                    let breaker = inherited.breaker;
                    if !breakers.allow(&format!("{route}:{target}"), breaker) {
                        continue;
                    }
                    let outcome = node(ctx, child, inherited, target.clone(), i, log).await;
                    let ok = matches!(&outcome.0, Ok(r) if r.answer.status.is_success());
                    breakers.record((route, &target), breaker, ok, &ctx.state.metrics);
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
            StrategyMode::Loadbalance => {
                let candidates: Vec<(usize, f64)> = children
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i, c.targets_fields.weight.unwrap_or(1.0)))
                    .filter(|(i, w)| {
                        let own = children[*i].targets_fields.cb_config.or(settings.breaker);
                        *w > 0.0 && breakers.allow(&format!("{route}:{}", child_path(*i)), own)
                    })
                    .collect();
                let total: f64 = candidates.iter().map(|(_, w)| w).sum();
                let mut roll = rand::rng().random::<f64>() * total;
                let Some(&(i, _)) = candidates
                    .iter()
                    .find(|(_, w)| {
                        roll -= w;
                        roll < 0.0
                    })
                    .or(candidates.last())
                else {
                    return (Err(all_open()), path, index);
                };
                let target = child_path(i);
                let inherited = match inherit(ctx, &settings, &children[i], true).await {
                    Ok(inherited) => inherited,
                    Err(e) => return (Err(e), target, i),
                };
                let breaker = inherited.breaker;
                let outcome = node(ctx, &children[i], inherited, target.clone(), i, log).await;
                let ok = matches!(&outcome.0, Ok(r) if r.answer.status.is_success());
                breakers.record((route, &target), breaker, ok, &ctx.state.metrics);
                outcome
            }
        }
    })
}

fn all_open() -> AppError {
    AppError::Upstream {
        source: UpstreamError::Unreachable(
            "every target is disabled or its circuit is open".to_owned(),
        ),
        retries: 0,
    }
}

/// `parent`'s settings with what `node` sets laid over them. A node's `retry` replaces the
/// parent's (laid over the route's policy, not the parent's).
async fn inherit(
    ctx: &Ctx<'_>,
    parent: &Inherited,
    node: &RequestConfig,
    child: bool,
) -> Result<Inherited, AppError> {
    let fields = &node.targets_fields;
    let mut out = parent.clone();
    if child && node.retry.is_some() {
        out.retry = node.retry_over(&ctx.route.retry)?;
    }
    if let Some(ms) = node.request_timeout.filter(|ms| *ms > 0) {
        out.timeout = Duration::from_millis(ms);
    }
    if let Some(key) = &fields.api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.0)).map_err(|_| {
            AppError::InvalidField {
                param: crate::portkey::HEADER_CONFIG,
                message: "an api_key holds characters not allowed in a header".to_owned(),
            }
        })?;
        value.set_sensitive(true);
        out.auth = Some(value);
    } else if let Some(slug) = node.virtual_key.as_deref().filter(|_| child) {
        out.auth = Some(saved::credential(ctx.state, slug).await?);
    }
    if let Some(host) = &fields.custom_host {
        out.base_url = Some(host.clone());
    } else if let Some(url) = fields
        .provider
        .as_deref()
        .and_then(providers::base_url)
        .filter(|u| !u.is_empty())
    {
        out.base_url = Some(url.to_owned());
    }
    if let Some(params) = &fields.override_params {
        for (k, v) in params {
            out.params.insert(k.clone(), v.clone());
        }
    }
    out.breaker = fields.cb_config.or(parent.breaker);
    Ok(out)
}

/// One upstream call with a leaf's settings.
async fn leaf(
    ctx: &Ctx<'_>,
    settings: &Inherited,
    log: &mut RequestLog,
) -> Result<GatewayResponse, AppError> {
    let body = match &ctx.body {
        Some(raw) if !settings.params.is_empty() => Some(with_params(raw, &settings.params)?),
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
            timeout: settings.timeout,
            retry: &settings.retry,
            auth: settings.auth.as_ref(),
            base_url: settings.base_url.as_deref(),
        })
        .await;
    log.attempts += forwarded.retries + 1;
    let answer = forwarded.result.map_err(|source| AppError::Upstream {
        source,
        retries: forwarded.retries,
    })?;
    let model = settings
        .params
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(GatewayResponse {
        answer,
        retries: forwarded.retries,
        cache: log.cache,
        similarity: None,
        config_version: None,
        target: None,
        model,
        replayed_from: None,
    })
}

/// The request body with `params` laid over its top-level fields.
fn with_params(raw: &Bytes, params: &Map<String, Value>) -> Result<Bytes, AppError> {
    let mut body: Value =
        serde_json::from_slice(raw).map_err(|e| AppError::InvalidJson(e.to_string()))?;
    if let Some(object) = body.as_object_mut() {
        for (k, v) in params {
            object.insert(k.clone(), v.clone());
        }
    }
    Ok(Bytes::from(body.to_string()))
}
