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
        let (Some(vector), Some(prompt)) =
            (self.vector.take(), self.keys.final_user_text.as_deref())
        else {
            return;
        };
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
}
