//! The cached path of a chat completion: key the request, look it up, join the single flight
//! of identical misses, forward, and write back what may be stored.

use bytes::Bytes;
use http::HeaderValue;

use super::{CacheStatus, Call, GatewayResponse, RequestLog, forward, header_str};
use crate::cache::coalesce::{self, Flight, Leader, Shared};
use crate::cache::key::{CacheKeys, cache_keys};
use crate::config::{CacheMode, RouteCacheConfig, RouteConfig};
use crate::error::AppError;
use crate::portkey::{HEADER_CACHE_NAMESPACE, HEADER_FORCE_REFRESH, RequestConfig};
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::upstream::{Answer, AnswerBody};

const CHAT_PATH: &str = "/chat/completions";

/// Answers `request` from cache when the route's (or the request's) cache settings allow it.
pub(super) async fn answer(
    state: &AppState,
    call: &Call<'_>,
    route: &RouteConfig,
    overrides: &RequestConfig,
    request: ChatRequest,
    log: &mut RequestLog,
) -> Result<GatewayResponse, AppError> {
    let settings = overrides.cache_over(&route.cache)?;
    let namespace = header_str(call.headers, HEADER_CACHE_NAMESPACE).unwrap_or("");
    // Streams are passed through uncached until they can be recorded and replayed.
    let keys = match settings.mode {
        CacheMode::Off => None,
        _ if request.stream => None,
        CacheMode::Simple | CacheMode::Semantic => {
            cache_keys(namespace, &route.name, &request.json)
        }
    };
    let Some(keys) = keys else {
        log.cache = Some(CacheStatus::Disabled);
        let body = Some(request.raw);
        return forward(
            state,
            route,
            overrides,
            CHAT_PATH,
            body,
            request.stream,
            log,
        )
        .await;
    };
    let flow = Flow {
        state,
        route,
        overrides,
        settings: &settings,
        keys: &keys,
    };
    if header_str(call.headers, HEADER_FORCE_REFRESH)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        log.cache = Some(CacheStatus::Refresh);
        return flow.forward_and_store(request.raw, None, log).await;
    }
    if let Some(entry) = state.cache.lookup_exact(&route.name, &keys.exact).await {
        log.cache = Some(CacheStatus::Hit);
        return Ok(GatewayResponse::from_cache(entry.body, CacheStatus::Hit));
    }
    log.cache = Some(CacheStatus::Miss);
    let leader = match state.cache.join(&keys.exact) {
        Flight::Leader(leader) => Some(leader),
        Flight::Follower(slot) => match coalesce::wait(slot).await {
            Some(shared) => return Ok(GatewayResponse::from_shared(&shared)),
            // The leader left without an answer: ask upstream ourselves.
            None => None,
        },
    };
    flow.forward_and_store(request.raw, leader, log).await
}

struct Flow<'a> {
    state: &'a AppState,
    route: &'a RouteConfig,
    overrides: &'a RequestConfig,
    settings: &'a RouteCacheConfig,
    keys: &'a CacheKeys,
}

impl Flow<'_> {
    async fn forward_and_store(
        &self,
        body: Bytes,
        leader: Option<Leader>,
        log: &mut RequestLog,
    ) -> Result<GatewayResponse, AppError> {
        let response = forward(
            self.state,
            self.route,
            self.overrides,
            CHAT_PATH,
            Some(body),
            false,
            log,
        )
        .await?;
        if let AnswerBody::Full(body) = &response.answer.body {
            if response.answer.status.is_success() {
                // Written before answering, so the next identical request finds it.
                self.state
                    .cache
                    .store(&self.route.name, &self.keys.exact, body, self.settings.ttl)
                    .await;
            }
            if let Some(leader) = leader {
                leader.publish(Shared {
                    status: response.answer.status,
                    content_type: response.answer.content_type.clone(),
                    body: body.clone(),
                    retries: response.retries,
                });
            }
        }
        Ok(response)
    }
}

impl GatewayResponse {
    /// An answer read from a cache tier: 200, JSON, as stored.
    fn from_cache(body: Bytes, cache: CacheStatus) -> Self {
        Self {
            answer: Answer {
                status: http::StatusCode::OK,
                content_type: Some(HeaderValue::from_static("application/json")),
                body: AnswerBody::Full(body),
            },
            retries: 0,
            cache: Some(cache),
        }
    }

    /// The answer an identical request in flight got.
    fn from_shared(shared: &Shared) -> Self {
        Self {
            answer: Answer {
                status: shared.status,
                content_type: shared.content_type.clone(),
                body: AnswerBody::Full(shared.body.clone()),
            },
            retries: shared.retries,
            cache: Some(CacheStatus::Miss),
        }
    }
}
