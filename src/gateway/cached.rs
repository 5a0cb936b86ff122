//! The cached path of a chat completion: key the request, look it up in the exact tier, then the
//! semantic tier, join the single flight of identical misses, forward, and write back what may
//! be stored to both tiers. Streams take the same path: a hit is replayed as a stream, a miss is
//! recorded as it passes and stored once it ended cleanly.

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use tokio::task::JoinHandle;

use super::writeback::{Embedding, WriteBack};
use super::{CacheStatus, GatewayResponse, Meta, forward};
use super::{judge, verify};
use crate::cache::coalesce::{self, Flight, Leader, Shared};
use crate::cache::key::{CacheKeys, cache_keys};
use crate::cache::semantic::{Decision, Lookup, Refusal, SemanticTier, Shed};
use crate::config::{CacheMode, RouteConfig};
use crate::embedding::{EmbedError, Embedded};
use crate::error::AppError;
use crate::policy::CallContext;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::stream::record::{OnComplete, Recorder};
use crate::stream::replay::{ReplayOptions, replay};
use crate::upstream::{Answer, AnswerBody};

const CHAT_PATH: &str = "/chat/completions";

/// Answers `request` from cache when the context's cache settings allow it.
pub(super) async fn answer(
    state: &AppState,
    ctx: &CallContext<'_>,
    request: ChatRequest,
    meta: &mut Meta,
) -> Result<GatewayResponse, AppError> {
    let route = ctx.route;
    let keys = match ctx.cache.mode() {
        CacheMode::Off => None,
        CacheMode::Simple | CacheMode::Semantic => {
            cache_keys(&ctx.partition_scope, &route.name, &request.json)
        }
    };
    let replay = request.stream.then_some(ReplayOptions {
        chunk_chars: state.config.cache.replay_chunk_chars,
        include_usage: request.include_usage,
    });
    let mut flow = Flow {
        state,
        ctx,
        request: &request.json,
        keys: keys.as_ref(),
        replay,
        embedding: Embedding::None,
    };
    let Some(keys) = &keys else {
        meta.cache = Some(CacheStatus::Disabled);
        return flow.forward_and_store(request.raw, None, meta).await;
    };
    if ctx.refresh_refused {
        state.metrics.force_refresh_refused(&route.name);
    }
    if ctx.force_refresh {
        meta.cache = Some(CacheStatus::Refresh);
        // No lookup on a refresh: the vector is only for writing the fresh answer back.
        if let Ok(embedded) = flow.embed_final_turn(meta).await {
            flow.embedding = Embedding::Ready(embedded);
        }
        return flow.forward_and_store(request.raw, None, meta).await;
    }
    if let Some(entry) = state.cache.lookup_exact(&route.name, &keys.exact).await
        && let Some(hit) = flow.cached_answer(entry.body)
    {
        meta.cache = Some(CacheStatus::Hit);
        return Ok(hit);
    }
    if let Some(hit) = flow.semantic_lookup(meta).await {
        return Ok(hit);
    }
    meta.cache = Some(CacheStatus::Miss);
    let leader = match state.cache.join(&keys.exact) {
        Flight::Leader(leader) => Some(leader),
        // A stream does not wait for another request's whole answer: its client wants the
        // first token now. It asks upstream itself (and may store the same answer again).
        Flight::Follower(_) if request.stream => None,
        Flight::Follower(slot) => match coalesce::wait(slot).await {
            Some(shared) => return Ok(shared_answer(&shared, meta)),
            // The leader left without an answer: ask upstream ourselves.
            None => None,
        },
    };
    flow.forward_and_store(request.raw, leader, meta).await
}

struct Flow<'a> {
    state: &'a AppState,
    ctx: &'a CallContext<'a>,
    /// The request as parsed, for verification.
    request: &'a serde_json::Value,
    /// `None` when the request is not cached.
    keys: Option<&'a CacheKeys>,
    /// How to replay a cached answer, when the client asked for a stream.
    replay: Option<ReplayOptions>,
    /// The final turn's embedding as the lookup left it, for the write-back.
    embedding: Embedding,
}

impl<'a> Flow<'a> {
    fn route(&self) -> &RouteConfig {
        self.ctx.route
    }

    fn semantic_tier(&self) -> Option<(&'a SemanticTier, &'a str)> {
        if self.ctx.cache.mode() != CacheMode::Semantic {
            return None;
        }
        Some((
            self.state.cache.semantic()?,
            self.keys?.final_user_text.as_deref()?,
        ))
    }

    /// Embeds the final turn when the semantic tier applies, waiting at most
    /// `[embedding] max_lookup_wait`. `Err` carries the lookup result to count (`skipped`: the
    /// model does not know most of the prompt's tokens; `shed`: no session soon enough, or the
    /// embedding took too long; `rebuilding`; `error`), or `None` when the tier does not apply.
    /// Whatever the lookup gave up on, the write-back still gets (see [`Embedding`]).
    async fn embed_final_turn(
        &mut self,
        meta: &mut Meta,
    ) -> Result<Embedded, Option<&'static str>> {
        let (tier, text) = self.semantic_tier().ok_or(None)?;
        let settings = &self.state.config.embedding;
        let shed = |flow: &mut Self, meta: &mut Meta, embedding: Embedding, reason: Shed| {
            meta.note = Some("semantic tier shed: embeddings behind");
            flow.state
                .metrics
                .semantic_shed(&flow.route().name, reason.label());
            flow.embedding = embedding;
            Err(Some("shed"))
        };
        if !self.state.cache.semantic_ready() {
            meta.note = Some("semantic tier skipped: index rebuilding");
            self.embedding = Embedding::Later;
            return Err(Some("rebuilding"));
        }
        if let Some(reason) = tier.behind(settings.lookup_budget()) {
            return shed(self, meta, Embedding::Later, reason);
        }
        let mut task = self.spawn_embedding(text);
        let embedded = match tokio::time::timeout(settings.max_lookup_wait, &mut task).await {
            Ok(Ok(Some(embedded))) => embedded,
            Ok(_) => return Err(Some("error")),
            Err(_) => return shed(self, meta, Embedding::Running(task), Shed::Timeout),
        };
        match embedded {
            Ok(e) if e.unknown_ratio > settings.max_unknown_token_ratio => {
                meta.note = Some("semantic tier skipped: prompt mostly unknown to the model");
                Err(Some("skipped"))
            }
            Ok(e) => Ok(e),
            Err(e) => {
                let route = &self.route().name;
                tracing::warn!(route = %route, error = %e, "embedding failed; semantic tier skipped");
                Err(Some("error"))
            }
        }
    }

    /// Starts embedding `text` on the embedding threads; the caller decides how long to wait.
    fn spawn_embedding(&self, text: &str) -> JoinHandle<Option<Result<Embedded, EmbedError>>> {
        let (state, owned) = (self.state.clone(), text.to_owned());
        tokio::spawn(async move {
            let tier = state.cache.semantic()?;
            Some(tier.embed(&owned).await)
        })
    }

    async fn semantic_lookup(&mut self, meta: &mut Meta) -> Option<GatewayResponse> {
        let (tier, asked) = self.semantic_tier()?;
        let partition = &self.keys?.partition;
        let ctx = self.ctx;
        let route = &ctx.route.name;
        if self.state.cache.semantic_ready() && !tier.holds(route, partition) {
            // Nothing is stored in this partition: no candidate to find, so the lookup embeds
            // nothing. The write-back's embedding starts now, beside the upstream call.
            self.state.cache.semantic_unsearched(route, "empty");
            let budget = self.state.config.embedding.lookup_budget();
            // Behind for any reason, it waits in the bounded background queue instead. Started
            // beside every upstream call, such embeddings can pile up on the sessions: a run that
            // did so shed 353 of the 1,000 lookups that followed (paraphrases bench), none now.
            self.embedding = if tier.behind(budget).is_some() {
                Embedding::Later
            } else {
                Embedding::Beside(self.spawn_embedding(asked))
            };
            return None;
        }
        let embedded = match self.embed_final_turn(meta).await {
            Ok(embedded) => embedded,
            Err(result) => {
                if let Some(result) = result {
                    self.state.cache.semantic_unsearched(route, result);
                }
                return None;
            }
        };
        let decision = Decision {
            threshold: self.ctx.cache.similarity_threshold,
            max_wrong: self.ctx.cache.max_wrong,
            guards: &self.ctx.cache.guards,
            judge_max_wrong: self
                .ctx
                .cache
                .judge
                .enabled
                .then_some(self.ctx.cache.judge.grey_max_wrong),
        };
        let found = self
            .state
            .cache
            .lookup_semantic(route, partition, (asked, &embedded), decision)
            .await;
        self.embedding = Embedding::Ready(embedded);
        let found = match found? {
            Lookup::Unsure {
                hit,
                stored_prompt,
                stored,
                score,
            } => {
                self.judge(hit, (&stored_prompt, stored), score, asked, meta)
                    .await
            }
            other => other,
        };
        match found {
            Lookup::Unsure { .. } => None,
            Lookup::Hit(hit) => {
                let similarity = Some(hit.similarity);
                verify::maybe_verify(self.state, self.ctx.cache.verify_sample_rate, || {
                    verify::Sample {
                        route: route.clone(),
                        request: self.request.clone(),
                        served: hit.body.clone(),
                        asked_id: self
                            .keys
                            .map_or(String::new(), |k| k.exact[..16].to_owned()),
                        target: self.ctx.plan.first_target().cloned(),
                    }
                });
                let answer = self.cached_answer(hit.body)?;
                meta.cache = Some(CacheStatus::SemanticHit);
                meta.similarity = similarity;
                Some(answer)
            }
            Lookup::Miss { nearest } => {
                meta.nearest = nearest;
                None
            }
            Lookup::Refused {
                reason,
                stored,
                similarity,
            } => {
                // Ids (exact keys), never text: prompts may hold personal data.
                let asked_id = self.keys.map_or("", |k| &k.exact[..16]);
                let stored_id = stored.get(..16).unwrap_or(&stored);
                tracing::info!(route = %route, reason = %reason.header(), asked = asked_id,
                    stored = stored_id, "semantic candidate refused");
                meta.nearest = Some(similarity);
                meta.guard = Some(reason.label());
                meta.refused = Some(reason.header());
                None
            }
        }
    }

    /// Puts an unsure candidate to the route's judge: its yes makes it a hit, else a refusal.
    async fn judge(
        &self,
        hit: crate::cache::semantic::SemanticHit,
        (stored, stored_id): (&str, String),
        score: f32,
        asked: &str,
        meta: &mut Meta,
    ) -> Lookup {
        let route = &self.ctx.route.name;
        let model = self
            .request
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let question = judge::Question {
            route,
            partition: self.keys.map_or("", |k| k.partition.as_str()),
            judge: &self.ctx.cache.judge,
            model,
            asked,
            stored,
            target: self.ctx.plan.first_target(),
        };
        let (verdict, cost) = judge::decide(self.state, &question).await;
        meta.judge = cost;
        match verdict {
            Ok(()) => {
                self.state.cache.judged(route, &hit, None);
                Lookup::Hit(hit)
            }
            Err(verdict) => {
                let reason = Refusal::Judge { score, verdict };
                self.state.cache.judged(route, &hit, Some(reason));
                Lookup::Refused {
                    reason,
                    stored: stored_id,
                    similarity: hit.similarity,
                }
            }
        }
    }

    /// A cached answer in the shape the client asked for: the stored JSON, or replayed as a
    /// stream. `None` when a stored entry cannot be replayed (then it is treated as a miss).
    fn cached_answer(&self, body: Bytes) -> Option<GatewayResponse> {
        let (content_type, replayed_from, body) = match self.replay {
            None => ("application/json", None, AnswerBody::Full(body)),
            Some(options) => {
                let Some(events) = replay(&body, options) else {
                    tracing::warn!(route = %self.route().name, "cached entry is not a chat completion; treated as a miss");
                    return None;
                };
                let events = futures_util::stream::iter(events.into_iter().map(Ok));
                let events = AnswerBody::Stream(events.boxed());
                ("text/event-stream", Some(body), events)
            }
        };
        let mut response = GatewayResponse::new(Answer {
            status: http::StatusCode::OK,
            content_type: Some(HeaderValue::from_static(content_type)),
            body,
        });
        response.replayed_from = replayed_from;
        Some(response)
    }

    /// Forwards, then writes a cacheable answer back: a plain one before returning it, a stream
    /// once it ended cleanly. Every stream goes through a [`Recorder`] (recording or not), so a
    /// broken or stalled upstream always ends it with an error event.
    async fn forward_and_store(
        mut self,
        body: Bytes,
        leader: Option<Leader>,
        meta: &mut Meta,
    ) -> Result<GatewayResponse, AppError> {
        let stream = self.replay.is_some();
        let mut response =
            forward(self.state, self.ctx, CHAT_PATH, Some(body), stream, meta).await?;
        let writeback = self.keys.map(|keys| WriteBack {
            state: self.state.clone(),
            route: self.route().name.clone(),
            keys: keys.clone(),
            ttl: self.ctx.cache.ttl,
            embedding: std::mem::replace(&mut self.embedding, Embedding::None),
            leader,
            retries: meta.retries,
        });
        let answer = &mut response.answer;
        match std::mem::replace(&mut answer.body, AnswerBody::Full(Bytes::new())) {
            AnswerBody::Full(body) => {
                if let Some(writeback) = writeback {
                    let content_type = answer.content_type.clone();
                    writeback.finish(answer.status, content_type, &body).await;
                }
                answer.body = AnswerBody::Full(body);
            }
            AnswerBody::Stream(upstream) => {
                let record: Option<(usize, OnComplete)> = writeback.map(|w| {
                    let max_bytes = self.state.config.cache.max_entry_bytes;
                    (max_bytes, w.on_stream_complete())
                });
                let idle = self.ctx.timeout;
                let recorder = Recorder::new(
                    upstream,
                    idle,
                    record,
                    &self.route().name,
                    self.state.metrics.clone(),
                );
                answer.body = AnswerBody::Stream(recorder.boxed());
            }
        }
        Ok(response)
    }
}

/// The answer an identical request in flight got.
fn shared_answer(shared: &Shared, meta: &mut Meta) -> GatewayResponse {
    meta.retries = shared.retries;
    GatewayResponse::new(Answer {
        status: shared.status,
        content_type: shared.content_type.clone(),
        body: AnswerBody::Full(shared.body.clone()),
    })
}
