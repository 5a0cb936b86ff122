//! The cached path of a chat completion: key the request, look it up in the exact tier, then the
//! semantic tier, join the single flight of identical misses, forward, and write back what may
//! be stored to both tiers.

use bytes::Bytes;
use http::HeaderValue;

use super::{CacheStatus, Call, GatewayResponse, RequestLog, forward, header_str};
use crate::cache::coalesce::{self, Flight, Leader, Shared};
use crate::cache::key::{CacheKeys, cache_keys};
use crate::cache::semantic::{Lookup, SemanticTier};
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
    let keys = match settings.mode() {
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
    let mut flow = Flow {
        state,
        route,
        overrides,
        settings: &settings,
        keys: &keys,
        vector: None,
    };
    if header_str(call.headers, HEADER_FORCE_REFRESH)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        log.cache = Some(CacheStatus::Refresh);
        // No lookup on a refresh: the vector is only for writing the fresh answer back.
        flow.vector = flow.embed_final_turn(log).await.ok();
        return flow.forward_and_store(request.raw, None, log).await;
    }
    if let Some(entry) = state.cache.lookup_exact(&route.name, &keys.exact).await {
        log.cache = Some(CacheStatus::Hit);
        return Ok(GatewayResponse::from_cache(
            entry.body,
            CacheStatus::Hit,
            None,
        ));
    }
    if let Some(hit) = flow.semantic_lookup(log).await {
        return Ok(hit);
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
    /// The final turn's embedding, kept from the lookup for the write-back.
    vector: Option<Vec<f32>>,
}

impl Flow<'_> {
    fn semantic_tier(&self) -> Option<(&SemanticTier, &str)> {
        if self.settings.mode() != CacheMode::Semantic {
            return None;
        }
        Some((
            self.state.cache.semantic()?,
            self.keys.final_user_text.as_deref()?,
        ))
    }

    /// Embeds the final turn when the semantic tier applies. `Err` carries the lookup result
    /// to count (`skipped`: the model does not know most of the prompt's tokens; `error`), or
    /// `None` when the tier does not apply at all.
    async fn embed_final_turn(
        &self,
        log: &mut RequestLog,
    ) -> Result<Vec<f32>, Option<&'static str>> {
        let (tier, text) = self.semantic_tier().ok_or(None)?;
        match tier.embed(text).await {
            Ok(e) if e.unknown_ratio > self.state.config.embedding.max_unknown_token_ratio => {
                log.note = Some("semantic tier skipped: prompt mostly unknown to the model");
                Err(Some("skipped"))
            }
            Ok(e) => Ok(e.vector),
            Err(e) => {
                let route = &self.route.name;
                tracing::warn!(route = %route, error = %e, "embedding failed; semantic tier skipped");
                Err(Some("error"))
            }
        }
    }

    async fn semantic_lookup(&mut self, log: &mut RequestLog) -> Option<GatewayResponse> {
        let (tier, asked) = self.semantic_tier()?;
        let route = &self.route.name;
        let metrics = &self.state.metrics;
        let vector = match self.embed_final_turn(log).await {
            Ok(vector) => vector,
            Err(result) => {
                if let Some(result) = result {
                    metrics.cache_lookup(route, "semantic", result);
                }
                return None;
            }
        };
        let threshold = self
            .settings
            .similarity_threshold
            .unwrap_or_else(|| tier.embedder().model().default_threshold());
        let found = tier
            .lookup(
                route,
                &self.keys.partition,
                (asked, &vector),
                threshold,
                &self.settings.guards,
            )
            .await;
        self.vector = Some(vector);
        match found {
            Ok(Lookup::Hit(hit)) => {
                metrics.cache_lookup(route, "semantic", "hit");
                metrics.semantic_hit(route, hit.similarity);
                metrics.tokens_saved(route, "semantic", hit.total_tokens);
                log.cache = Some(CacheStatus::SemanticHit);
                log.similarity = Some(hit.similarity);
                Some(GatewayResponse::from_cache(
                    hit.body,
                    CacheStatus::SemanticHit,
                    Some(hit.similarity),
                ))
            }
            Ok(Lookup::Miss) => {
                metrics.cache_lookup(route, "semantic", "miss");
                None
            }
            Ok(Lookup::Refused(guard)) => {
                // Ids, never text: prompts may hold personal data.
                tracing::info!(route = %route, guard = guard.label(), partition = %&self.keys.partition[..16],
                    "semantic candidate refused by a guard");
                metrics.cache_lookup(route, "semantic", "miss");
                metrics.guard_refusal(route, guard.label());
                None
            }
            Err(e) => {
                tracing::warn!(route = %route, error = e.kind(), "semantic lookup failed; going on without it");
                metrics.cache_lookup(route, "semantic", "error");
                None
            }
        }
    }

    async fn forward_and_store(
        mut self,
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
                let route = &self.route.name;
                let stored = self
                    .state
                    .cache
                    .store(route, &self.keys.exact, body, self.settings.ttl)
                    .await;
                if let (Some(tokens), Some(vector), Some((tier, prompt))) =
                    (stored, self.vector.take(), self.semantic_tier())
                {
                    self.store_semantic(tier, (prompt, vector), body, tokens)
                        .await;
                }
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

    async fn store_semantic(
        &self,
        tier: &SemanticTier,
        entry: (&str, Vec<f32>),
        body: &Bytes,
        tokens: u64,
    ) {
        let route = &self.route.name;
        let outcome = tier
            .insert(
                route,
                &self.keys.exact,
                &self.keys.partition,
                entry,
                body,
                tokens,
                self.settings.ttl,
            )
            .await;
        let result = match outcome {
            Ok(()) => "stored",
            Err(e) => {
                tracing::warn!(route = %route, error = e.kind(), "semantic cache write failed");
                "error"
            }
        };
        self.state.metrics.cache_write(route, "semantic", result);
    }
}

impl GatewayResponse {
    /// An answer read from a cache tier: 200, JSON, as stored.
    fn from_cache(body: Bytes, cache: CacheStatus, similarity: Option<f32>) -> Self {
        Self {
            answer: Answer {
                status: http::StatusCode::OK,
                content_type: Some(HeaderValue::from_static("application/json")),
                body: AnswerBody::Full(body),
            },
            retries: 0,
            cache: Some(cache),
            similarity,
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
            similarity: None,
        }
    }
}
