//! Writing an answer back to the cache, for a plain answer (before it is returned, so the next
//! identical request finds it) and for a stream (once it ended cleanly, off the client's path),
//! and handing it to the requests that waited on the same single flight.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode};

use tokio::task::JoinHandle;

use crate::cache::coalesce::{Leader, Shared};
use crate::cache::key::CacheKeys;
use crate::embedding::{EmbedError, Embedded};
use crate::state::AppState;
use crate::stream::record::OnComplete;

/// The final turn's embedding, as the lookup left it for the write-back.
pub(super) enum Embedding {
    /// The semantic tier does not apply (or the prompt is not one to store).
    None,
    /// Made on the request path.
    Ready(Embedded),
    /// Still running: the lookup stopped waiting for it ([`EmbeddingConfig::max_lookup_wait`]).
    /// The write-back takes it when it is done, off the request path.
    ///
    /// [`EmbeddingConfig::max_lookup_wait`]: crate::config::EmbeddingConfig::max_lookup_wait
    Running(JoinHandle<Option<Result<Embedded, EmbedError>>>),
    /// Not started (shed, or the index was rebuilding): made in the background queue.
    Later,
    /// Started beside the upstream call, the lookup having needed none (its partition was
    /// empty): the write-back waits for it up to `max_lookup_wait`, so the entry is normally
    /// stored before the answer returns; past that it is stored when the embedding is done.
    Beside(JoinHandle<Option<Result<Embedded, EmbedError>>>),
}

/// What a finished embedding task made, unless it failed (logged and counted) or the prompt is
/// mostly unknown to the model (a lookup would skip such a prompt: so does the write).
fn finished(
    state: &AppState,
    route: &str,
    done: Result<Option<Result<Embedded, EmbedError>>, tokio::task::JoinError>,
) -> Option<Embedded> {
    let most_unknown = state.config.embedding.max_unknown_token_ratio;
    match done {
        Ok(Some(Ok(embedded))) if embedded.unknown_ratio <= most_unknown => Some(embedded),
        Ok(Some(Ok(_)) | None) => None,
        Ok(Some(Err(e))) => {
            tracing::warn!(route = %route, error = %e, "write-back embedding failed");
            state.metrics.cache_write(route, "semantic", "error");
            None
        }
        Err(e) => {
            tracing::error!(route = %route, error = %e, "write-back embedding task failed");
            state.metrics.cache_write(route, "semantic", "error");
            None
        }
    }
}

/// Everything a write-back needs, owned, so a stream can finish it after the handler returned.
pub(super) struct WriteBack {
    pub state: AppState,
    pub route: String,
    pub keys: CacheKeys,
    pub ttl: Duration,
    /// The final turn's embedding when the semantic tier applies.
    pub embedding: Embedding,
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
        let embedded = match std::mem::replace(&mut self.embedding, Embedding::None) {
            Embedding::Ready(embedded) => Some(embedded),
            Embedding::Running(task) => {
                self.when_embedded(task, body, tokens);
                None
            }
            Embedding::Later => {
                self.embed_in_background(body, tokens);
                None
            }
            Embedding::Beside(mut task) => {
                // Waited for as a lookup's would be, at most `max_lookup_wait`: past it the
                // entry is stored when the embedding is done, off the answer's path.
                let wait = self.state.config.embedding.max_lookup_wait;
                match tokio::time::timeout(wait, &mut task).await {
                    Ok(done) => finished(&self.state, route, done),
                    Err(_) => {
                        self.when_embedded(task, body, tokens);
                        None
                    }
                }
            }
            Embedding::None => None,
        };
        if let Some(embedded) = embedded {
            cache
                .put_semantic(
                    route,
                    &self.keys,
                    (prompt, embedded),
                    body,
                    (tokens, self.ttl),
                )
                .await;
        }
    }

    /// Adds the semantic entry once the lookup's own embedding, still running, is done.
    fn when_embedded(
        &self,
        task: JoinHandle<Option<Result<Embedded, EmbedError>>>,
        body: &Bytes,
        tokens: u64,
    ) {
        let late = self.late(body, tokens);
        tokio::spawn(async move {
            if let Some(embedded) = finished(&late.state, &late.route, task.await) {
                late.store(embedded).await;
            }
        });
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
        /// Counts an answer in the queue until its entry is stored or given up, however that ends.
        struct Queued {
            state: AppState,
            _slot: tokio::sync::OwnedSemaphorePermit,
        }
        impl Drop for Queued {
            fn drop(&mut self) {
                self.state.metrics.writeback_queue(-1);
            }
        }
        self.state.metrics.writeback_queue(1);
        let queued = Queued {
            state: self.state.clone(),
            _slot: slot,
        };
        let late = self.late(body, tokens);
        tokio::spawn(async move {
            let _queued = queued;
            let (Some(tier), Some(prompt)) =
                (late.state.cache.semantic(), &late.keys.final_user_text)
            else {
                return;
            };
            let made = Some(tier.embed_later(prompt).await);
            if let Some(embedded) = finished(&late.state, &late.route, Ok(made)) {
                late.store(embedded).await;
            }
        });
    }

    /// What storing the semantic entry after the answer returned needs, owned for its task.
    fn late(&self, body: &Bytes, tokens: u64) -> Late {
        Late {
            state: self.state.clone(),
            route: self.route.clone(),
            keys: self.keys.clone(),
            body: body.clone(),
            tokens,
            ttl: self.ttl,
            answered: Instant::now(),
        }
    }
}

/// A semantic entry to store once its embedding is done, the answer having already returned.
struct Late {
    state: AppState,
    route: String,
    keys: CacheKeys,
    body: Bytes,
    tokens: u64,
    ttl: Duration,
    answered: Instant,
}

impl Late {
    /// Stores the entry and times how long after its answer it came.
    async fn store(&self, embedded: Embedded) {
        let Some(prompt) = self.keys.final_user_text.as_deref() else {
            return;
        };
        let entry = (self.tokens, self.ttl);
        self.state
            .cache
            .put_semantic(
                &self.route,
                &self.keys,
                (prompt, embedded),
                &self.body,
                entry,
            )
            .await;
        self.state.metrics.writeback_lag(self.answered.elapsed());
    }
}
