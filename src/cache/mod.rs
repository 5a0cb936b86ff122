//! The response cache: keys (`key`), the exact tier (`exact`, in Redis or in process), the
//! semantic tier (`semantic`), single flight for identical misses (`coalesce`), and the rules for
//! what may be stored. Both tiers' lookups and writes are counted here, and only here.

pub mod coalesce;
pub mod exact;
pub mod guard;
pub mod index;
pub mod key;
pub mod redis_conn;
pub mod semantic;
pub mod verifier;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::config::Config;
use crate::embedding::{Embedded, Embedder};
use crate::metrics::Metrics;
use coalesce::{Coalescer, Flight};
use exact::{Entry, ExactTier};
use redis_conn::RedisConn;
use semantic::{Decision, Lookup, Refusal, SemanticHit, SemanticTier};

/// Why a cache operation failed; the request goes on without the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis refused or dropped the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Redis is known to be down (its breaker is open): not asked at all.
    #[error("redis is down (breaker open); the cache is bypassed")]
    Bypassed,
    /// Rebuilding an index from Redis stopped (its worker panicked).
    #[error("semantic index rebuild: {0}")]
    Rebuild(String),
}

impl CacheError {
    /// Short label for metrics and logs (never the message: it may hold the URL).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Timeout(_) => "timeout",
            Self::Bypassed => "bypassed",
            Self::Rebuild(_) => "rebuild",
        }
    }

    /// The metric result of a lookup or write that failed: `bypassed` while Redis is known to
    /// be down (counted, not logged: that would be a line per request), else `error`, logged.
    fn counted(&self, route: &str, what: &'static str) -> &'static str {
        if matches!(self, Self::Bypassed) {
            return "bypassed";
        }
        tracing::warn!(
            route,
            error = self.kind(),
            "{what} failed; going on without it"
        );
        "error"
    }
}

/// Cache tiers and the rules around them; one per process.
pub struct Cache {
    redis: Option<RedisConn>,
    exact: ExactTier,
    semantic: Option<SemanticTier>,
    semantic_ready: AtomicBool,
    coalescer: Arc<Coalescer>,
    metrics: Arc<Metrics>,
    max_entry_bytes: usize,
}

impl Cache {
    /// Builds the tiers from config: Redis when `[redis] url` is set, else in process. With an
    /// embedder, the semantic tier too.
    pub fn new(
        config: &Config,
        embedder: Option<Arc<dyn Embedder>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CacheError> {
        let redis = match &config.redis.url {
            Some(url) => Some(RedisConn::new(
                url,
                config.redis.timeout,
                config.redis.breaker_failures,
            )?),
            None => None,
        };
        let exact = match &redis {
            Some(store) => ExactTier::redis(store.clone()),
            None => ExactTier::memory(config.cache.memory_bytes),
        };
        let semantic =
            embedder.map(|e| SemanticTier::new(config, e, redis.clone(), Arc::clone(&metrics)));
        Ok(Self {
            redis,
            semantic_ready: AtomicBool::new(semantic.is_none()),
            semantic,
            exact,
            coalescer: Arc::new(Coalescer::default()),
            metrics,
            max_entry_bytes: config.cache.max_entry_bytes,
        })
    }

    /// The Redis both tiers use, when `[redis] url` is set.
    pub fn redis(&self) -> Option<&RedisConn> {
        self.redis.as_ref()
    }

    /// Where exact entries live: `redis` or `memory`.
    pub fn backend(&self) -> &'static str {
        self.exact.backend()
    }

    /// The exact tier's entry for `key`; errors count in metrics and read as a miss.
    pub async fn lookup_exact(&self, route: &str, key: &str) -> Option<Entry> {
        let found = self.exact.get(key).await;
        let result = match &found {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(e) => e.counted(route, "exact cache lookup"),
        };
        self.metrics.cache_lookup(route, "exact", result);
        let entry = found.ok().flatten()?;
        self.metrics
            .tokens_saved(route, "exact", entry.total_tokens);
        Some(entry)
    }

    /// Stores a 2xx answer if it is a finished one (see [`finished_answer`]); returns its
    /// `usage.total_tokens` when it was one, so the semantic write need not parse it again.
    pub async fn put_exact(
        &self,
        route: &str,
        key: &str,
        body: &Bytes,
        ttl: Duration,
    ) -> Option<u64> {
        let Some(total_tokens) = finished_answer(body, self.max_entry_bytes) else {
            self.metrics.cache_write(route, "exact", "refused");
            return None;
        };
        let entry = Entry {
            body: body.clone(),
            total_tokens,
        };
        let outcome = match self.exact.put(key, &entry, ttl).await {
            Ok(()) => "stored",
            Err(e) => e.counted(route, "exact cache write"),
        };
        self.metrics.cache_write(route, "exact", outcome);
        Some(total_tokens)
    }

    /// The semantic tier's verdict on `asked` (its final turn and that turn's embedding) among
    /// the entries of `partition`. An error is logged and reads as `None`, like a tier that is
    /// not loaded.
    pub async fn lookup_semantic(
        &self,
        route: &str,
        partition: &str,
        asked: (&str, &Embedded),
        decision: Decision<'_>,
    ) -> Option<Lookup> {
        let tier = self.semantic.as_ref()?;
        let found = tier.lookup(route, partition, asked, decision).await;
        let result = match &found {
            Ok(Lookup::Hit(hit)) => {
                self.count_semantic_hit(route, hit);
                "hit"
            }
            // Counted once the judge has spoken (`judged`).
            Ok(Lookup::Unsure { .. }) => return found.ok(),
            Ok(Lookup::Miss { .. }) => "miss",
            Ok(Lookup::Refused { reason, .. }) => {
                self.metrics.refusal(route, reason.label());
                "miss"
            }
            Err(e) => e.counted(route, "semantic lookup"),
        };
        self.metrics.cache_lookup(route, "semantic", result);
        found.ok()
    }

    /// Counts what became of an [`Lookup::Unsure`] candidate: served on the judge's yes, else
    /// refused for `refusal`.
    pub fn judged(&self, route: &str, hit: &SemanticHit, refusal: Option<Refusal>) {
        let result = match refusal {
            None => {
                self.count_semantic_hit(route, hit);
                "hit"
            }
            Some(r) => {
                self.metrics.refusal(route, r.label());
                "miss"
            }
        };
        self.metrics.cache_lookup(route, "semantic", result);
    }

    fn count_semantic_hit(&self, route: &str, hit: &SemanticHit) {
        self.metrics.semantic_hit(route, hit.similarity);
        self.metrics
            .tokens_saved(route, "semantic", hit.total_tokens);
    }

    /// Counts a semantic lookup that never reached the index: `skipped` (the model does not know
    /// most of the prompt) or `error` (the embedding failed).
    pub fn semantic_unsearched(&self, route: &str, result: &'static str) {
        self.metrics.cache_lookup(route, "semantic", result);
    }

    /// Adds an answer the exact tier took (its `total_tokens` from [`Cache::put_exact`]) to the
    /// semantic tier under its prompt's final turn and embedding.
    pub async fn put_semantic(
        &self,
        route: &str,
        keys: &key::CacheKeys,
        (prompt, embedded): (&str, Embedded),
        body: &Bytes,
        (total_tokens, ttl): (u64, Duration),
    ) {
        let Some(tier) = &self.semantic else { return };
        let (id, partition) = (&keys.exact, &keys.partition);
        let outcome = tier
            .insert(
                route,
                id,
                partition,
                (prompt, embedded),
                body,
                total_tokens,
                ttl,
            )
            .await;
        let result = match outcome {
            Ok(()) => "stored",
            Err(e) => e.counted(route, "semantic cache write"),
        };
        self.metrics.cache_write(route, "semantic", result);
    }

    /// The semantic tier, when an embedding model is loaded.
    pub fn semantic(&self) -> Option<&SemanticTier> {
        self.semantic.as_ref()
    }

    /// Whether the semantic indexes are rebuilt and serving (always true without them).
    pub fn semantic_ready(&self) -> bool {
        self.semantic_ready.load(Ordering::Acquire)
    }

    /// Rebuilds the semantic indexes from Redis, then marks the tier ready.
    pub async fn warm_up(&self) {
        if let (Some(tier), Some(_)) = (&self.semantic, &self.redis) {
            // Its own success line carries the entries and timings.
            if let Err(e) = tier.rebuild_from_redis().await {
                tracing::warn!(
                    error = e.kind(),
                    "semantic index rebuild from redis failed; starting empty"
                );
            }
        }
        self.semantic_ready.store(true, Ordering::Release);
    }

    /// Applies the other replicas' semantic-tier changes until the process ends (with Redis).
    pub async fn follow_replicas(&self) {
        if let Some(tier) = &self.semantic {
            tier.follow_replicas().await;
        }
    }

    /// Follows a Sentinel-managed master's moves until the process ends (other topologies:
    /// returns at once).
    pub async fn watch_redis(&self) {
        if let Some(redis) = &self.redis {
            redis.watch(|| self.metrics.redis_master_switched()).await;
        }
    }

    /// Probes Redis nodes taken for down until the process ends (see [`RedisConn::probe`]),
    /// keeping the breaker metrics current.
    pub async fn probe_redis(&self, every: Duration) {
        if let Some(redis) = &self.redis {
            redis
                .probe(every, |open| {
                    let opened = redis.breakers().opened();
                    self.metrics.redis_breakers(open.len(), opened);
                })
                .await;
        }
    }

    /// Joins the single flight for `key`.
    pub fn join(&self, key: &str) -> Flight {
        self.coalescer.join(key)
    }
}

/// `usage.total_tokens` when `body` is a complete chat completion worth storing: a JSON object
/// within the size limit whose `choices` are non-empty and each has a `finish_reason`.
pub fn finished_answer(body: &[u8], max_bytes: usize) -> Option<u64> {
    if body.len() > max_bytes {
        return None;
    }
    let json: Value = serde_json::from_slice(body).ok()?;
    let choices = json.get("choices")?.as_array()?;
    let all_finished = !choices.is_empty()
        && choices
            .iter()
            .all(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
    all_finished.then(|| {
        json.pointer("/usage/total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_answers_are_stored() {
        let ok = br#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"total_tokens":12}}"#;
        assert_eq!(finished_answer(ok, 1024), Some(12));
        assert_eq!(finished_answer(ok, 10), None, "over the size limit");
        let no_usage = br#"{"choices":[{"finish_reason":"length"}]}"#;
        assert_eq!(finished_answer(no_usage, 1024), Some(0));
        for bad in [
            &br#"{"choices":[{"finish_reason":null}]}"#[..],
            br#"{"choices":[{"finish_reason":"stop"},{"message":{}}]}"#,
            br#"{"choices":[]}"#,
            br#"{"error":{"message":"x"}}"#,
            b"not json",
        ] {
            assert_eq!(
                finished_answer(bad, 1024),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
