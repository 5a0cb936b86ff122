//! Writing an answer back to the cache, for a plain answer (before it is returned, so the next
//! identical request finds it) and for a stream (once it ended cleanly, off the client's path),
//! and handing it to the requests that waited on the same single flight.

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode};

use crate::cache::coalesce::{Leader, Shared};
use crate::cache::key::CacheKeys;
use crate::state::AppState;
use crate::stream::record::OnComplete;

/// Everything a write-back needs, owned, so a stream can finish it after the handler returned.
pub(super) struct WriteBack {
    pub state: AppState,
    pub route: String,
    pub keys: CacheKeys,
    pub ttl: Duration,
    /// The final turn's embedding when the semantic tier applies.
    pub vector: Option<Vec<f32>>,
    /// No embedding was made on the request path: make it in the background.
    pub embed_later: bool,
    pub leader: Option<Leader>,
    pub retries: u32,
}

impl WriteBack {
    /// Stores a 2xx answer in both tiers (each checks it is a finished one), then shares the
    /// answer, whatever its status, with the waiting requests.
    pub async fn finish(
        mut self,
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: &Bytes,
    ) {
        if status.is_success() {
            self.store(body).await;
        }
        if let Some(leader) = self.leader.take() {
            leader.publish(Shared {
                status,
                content_type,
                body: body.clone(),
                retries: self.retries,
            });
        }
    }

    /// The hook a recorded stream calls with its assembled completion.
    pub fn on_stream_complete(self) -> OnComplete {
        Box::new(move |completion: Bytes| {
            // A task of its own, so a client hanging up at `[DONE]` cannot cut a write in half.
            let task = tokio::spawn(async move {
                let json = HeaderValue::from_static("application/json");
                self.finish(StatusCode::OK, Some(json), &completion).await;
            });
            async move {
                let _ = task.await;
            }
            .boxed()
        })
    }

    async fn store(&mut self, body: &Bytes) {
        let route = self.route.as_str();
        let cache = &self.state.cache;
        let Some(tokens) = cache
            .put_exact(route, &self.keys.exact, body, self.ttl)
            .await
        else {
            return;
        };
        let Some(prompt) = self.keys.final_user_text.as_deref() else {
            return;
        };
        match self.vector.take() {
            Some(vector) => {
                cache
                    .put_semantic(
                        route,
                        &self.keys,
                        (prompt, vector),
                        body,
                        (tokens, self.ttl),
                    )
                    .await;
            }
            None if self.embed_later => self.embed_in_background(body, tokens),
            None => {}
        }
    }

    /// Embeds the prompt off the request path (waiting for a session as long as it takes) and
    /// adds the semantic entry, within the bounded write-back queue; past it the entry is
    /// dropped and counted.
    fn embed_in_background(&self, body: &Bytes, tokens: u64) {
        let Some(tier) = self.state.cache.semantic() else {
            return;
        };
        let Some(slot) = tier.later_slot() else {
            self.state
                .metrics
                .cache_write(&self.route, "semantic", "dropped");
            return;
        };
        let (state, route, keys) = (self.state.clone(), self.route.clone(), self.keys.clone());
        let (body, ttl) = (body.clone(), self.ttl);
        tokio::spawn(async move {
            let _slot = slot;
            let (Some(tier), Some(prompt)) = (state.cache.semantic(), &keys.final_user_text) else {
                return;
            };
            let most_unknown = state.config.embedding.max_unknown_token_ratio;
            match tier.embed(prompt).await {
                // The lookup would have skipped it: so does the write.
                Ok(embedded) if embedded.unknown_ratio > most_unknown => {}
                Ok(embedded) => {
                    let asked = (prompt.as_str(), embedded.vector);
                    state
                        .cache
                        .put_semantic(&route, &keys, asked, &body, (tokens, ttl))
                        .await;
                }
                Err(e) => {
                    tracing::warn!(route = %route, error = %e, "background embedding failed");
                    state.metrics.cache_write(&route, "semantic", "error");
                }
            }
        });
    }
}
