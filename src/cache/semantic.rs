//! The semantic tier: embeds the final user turn on the blocking pool, searches the route's
//! `SemanticIndex` inside the request's partition, and keeps every entry in Redis too
//! (`deja:v1:sem:{model}:{route}:{id}`: partition, vector, response, expiry) so a restarted
//! gateway rebuilds its indexes from Redis. Without Redis, answers live in the index itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::CacheError;
use super::guard::{self, Guard};
use super::index::{NewEntry, SemanticIndex};
use super::redis_conn::{KEY_PREFIX, RedisConn};
use super::verifier::{Side, Verifier};
use crate::config::Config;
use crate::embedding::workers::EmbedWorkers;
use crate::embedding::{EmbedError, Embedded, Embedder, TokenStates};
use crate::metrics::Metrics;

mod replicate;

/// Keys read per SCAN round while rebuilding.
const SCAN_BATCH: usize = 500;
/// While lookups are shed for slow embeddings, one goes through when no embedding has been
/// timed for this long, so that a pace measured in a passing spike cannot keep the tier off.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a lookup skipped the semantic tier for want of embedding capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// It would have waited too long for a session (`max_queue_wait`), or, with that wait, its
    /// embedding would not have been done within `max_lookup_wait`.
    Queue,
    /// Embeddings run slower than `max_lookup_wait` allows even with a session free.
    Slow,
    /// It waited `max_lookup_wait` for its embedding in vain.
    Timeout,
}

impl Shed {
    /// The `reason` label of `deja_semantic_shed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Slow => "slow",
            Self::Timeout => "timeout",
        }
    }
}

/// What a semantic lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A stored answer to serve.
    Hit(SemanticHit),
    /// Nothing close enough.
    Miss {
        /// How close the nearest stored question came (none stored: `None`).
        nearest: Option<f32>,
    },
    /// A candidate the verifier is unsure of (between the route's cut and its judge's): the
    /// caller asks the judge, then serves `hit` or refuses it.
    Unsure {
        /// The stored answer, if the judge says yes.
        hit: SemanticHit,
        /// The stored question, for the judge.
        stored_prompt: String,
        /// The stored entry's id, for the log.
        stored: String,
        /// The verifier's score.
        score: f32,
    },
    /// A close entry, refused by the verifier or a guard.
    Refused {
        /// Why.
        reason: Refusal,
        /// The stored entry's id (its exact key), for the log.
        stored: String,
        /// Its similarity.
        similarity: f32,
    },
}

/// Why a candidate was not served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// The verifier scored the pair at or below the route's cut.
    Verifier {
        /// Its score (0..1).
        score: f32,
    },
    /// A guard refused it (routes without a verifier).
    Guard(Guard),
    /// The verifier was unsure and the route's judge said no (or could not be asked).
    Judge {
        /// The verifier's score.
        score: f32,
        /// `no`, `skipped` (over budget) or `error`.
        verdict: &'static str,
    },
}

impl Refusal {
    /// Metric and log label: `verifier` or the guard's name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Verifier { .. } => "verifier",
            Self::Guard(g) => g.label(),
            Self::Judge { .. } => "judge",
        }
    }

    /// The `x-deja-refused` header: `verifier 0.31` or `guard numbers`.
    pub fn header(self) -> String {
        match self {
            Self::Verifier { score } => format!("verifier {score:.2}"),
            Self::Guard(g) => format!("guard {}", g.label()),
            Self::Judge { score, verdict } => format!("judge {verdict} (verifier {score:.2})"),
        }
    }
}

/// How a route decides on a candidate: its floor and, with a verifier, the share of look-alikes
/// it accepts; without one, its guards.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// The route's `similarity_threshold`, if set.
    pub threshold: Option<f32>,
    /// The route's `max_wrong`.
    pub max_wrong: f32,
    /// The route's guards.
    pub guards: &'a [Guard],
    /// With a judge: the share of look-alikes at the grey zone's lower edge.
    pub judge_max_wrong: Option<f32>,
}

/// A semantic hit.
#[derive(Debug, Clone)]
pub struct SemanticHit {
    /// Cosine similarity to the stored question.
    pub similarity: f32,
    /// The stored answer.
    pub body: Bytes,
    /// Tokens the stored answer cost.
    pub total_tokens: u64,
}

/// Embedder, per-route indexes and their Redis copies.
pub struct SemanticTier {
    embedder: Arc<dyn Embedder>,
    /// The threads embeddings run on, below the request path's priority.
    workers: EmbedWorkers,
    permits: Arc<Semaphore>,
    sessions: usize,
    /// Lookups waiting for a session now.
    waiting: AtomicUsize,
    /// Recent time one embedding takes on its session, ns (moving average).
    embed_ns: AtomicU64,
    /// When an embedding was last timed, ms after `born`.
    timed_ms: AtomicU64,
    born: Instant,
    /// Write-backs allowed to wait for an embedding in the background.
    later: Arc<Semaphore>,
    /// Background embeddings running at once: half the sessions (at least one), so lookups on
    /// the request path always find sessions the background does not hold.
    later_running: Arc<Semaphore>,
    indexes: HashMap<String, Arc<SemanticIndex>>,
    /// Decides on candidates; without it (no weights for the model) the guards do.
    verifier: Option<Verifier>,
    redis: Option<RedisConn>,
    prefix: String,
    metrics: Arc<Metrics>,
    /// This process among the replicas sharing Redis; its own published changes are skipped.
    replica: String,
}

/// The verifier for `model`, when its weights are there; else the routes' guards decide, which
/// is said once at start.
fn load_verifier(config: &Config, model: &str) -> Option<Verifier> {
    let path = config.embedding.verifier_path();
    match Verifier::load(&path, model) {
        Ok(v) => {
            tracing::info!(path = %path.display(), pairs = v.weights().training.pairs,
                data = %v.weights().training.sha256.get(..12).unwrap_or_default(),
                "semantic hit verifier loaded");
            Some(v)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no semantic hit verifier; routes' similarity thresholds and guards decide");
            None
        }
    }
}

/// Unix milliseconds now, as the index's expiry times count them.
fn now() -> u64 {
    crate::clock::now_ms().unsigned_abs()
}

/// The partition's first 128 bits, which is how the index groups entries.
pub fn partition_id(partition_hex: &str) -> u128 {
    partition_hex
        .get(..32)
        .and_then(|h| u128::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl SemanticTier {
    /// One index per route that may use semantic mode (every route: a request can ask for it).
    pub fn new(
        config: &Config,
        embedder: Arc<dyn Embedder>,
        redis: Option<RedisConn>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The guards' segmenter loads its dictionary once, here at start, not on a lookup.
        guard::warm();
        let verifier = load_verifier(config, embedder.model().slug());
        let indexes = config
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Arc::new(SemanticIndex::new(r.cache.max_entries)),
                )
            })
            .collect();
        Self {
            prefix: format!("{KEY_PREFIX}:sem:{}", embedder.model().slug()),
            permits: Arc::new(Semaphore::new(config.embedding.sessions)),
            workers: EmbedWorkers::start(config.embedding.sessions),
            sessions: config.embedding.sessions,
            waiting: AtomicUsize::new(0),
            // A short prompt on one core, until the first embeddings are timed.
            embed_ns: AtomicU64::new(5_000_000),
            timed_ms: AtomicU64::new(0),
            born: Instant::now(),
            later: Arc::new(Semaphore::new(config.embedding.writeback_queue)),
            later_running: Arc::new(Semaphore::new((config.embedding.sessions / 2).max(1))),
            embedder,
            indexes,
            verifier,
            redis,
            metrics,
            replica: crate::store::random_hex(8),
        }
    }

    /// The embedding model in use.
    pub fn embedder(&self) -> &dyn Embedder {
        self.embedder.as_ref()
    }

    /// Why a lookup arriving now should skip the semantic tier, if it should: it would wait
    /// longer than `queue` for a session (none is free and the lookups ahead of it, shared among
    /// the sessions, take longer than that), or its embedding, at the pace embeddings run now,
    /// would not be done within `lookup` (it would only wait that out for nothing). A slow pace
    /// sheds only while embeddings are still being timed: see [`PROBE_EVERY`].
    pub fn behind(&self, (queue, lookup): (Duration, Duration)) -> Option<Shed> {
        let each = self.embed_ns.load(Ordering::Relaxed);
        let waited = if self.permits.available_permits() > 0 {
            0
        } else {
            let ahead = self.waiting.load(Ordering::Acquire) as u64 + 1;
            ahead
                .div_ceil(self.sessions.max(1) as u64)
                .saturating_mul(each)
        };
        let timed_ms = self.timed_ms.load(Ordering::Relaxed);
        let since_timed = self
            .born
            .elapsed()
            .saturating_sub(Duration::from_millis(timed_ms));
        let too_slow = |ns: u64| Duration::from_nanos(ns) > lookup && since_timed < PROBE_EVERY;
        if Duration::from_nanos(waited) > queue
            || (waited > 0 && too_slow(waited.saturating_add(each)))
        {
            Some(Shed::Queue)
        } else if too_slow(each) {
            Some(Shed::Slow)
        } else {
            None
        }
    }

    /// A place in the background write-back queue, if one is free.
    pub fn later_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.later).try_acquire_owned().ok()
    }

    /// Embeds one prompt for a background write-back, behind the lookups: at most half the
    /// sessions run background embeddings at once.
    pub async fn embed_later(&self, text: &str) -> Result<Embedded, EmbedError> {
        let _running = Arc::clone(&self.later_running)
            .acquire_owned()
            .await
            .map_err(|_| EmbedError::Pool)?;
        self.embed(text).await
    }

    /// Embeds one prompt on the blocking pool; at most `sessions` at once, the rest wait here.
    pub async fn embed(&self, text: &str) -> Result<Embedded, EmbedError> {
        let started = Instant::now();
        let permit = {
            // Counted while waiting, however the wait ends (a caller may hang up meanwhile).
            struct Waiting<'a>(&'a Metrics, &'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.embedding_queue(-1);
                    self.1.fetch_sub(1, Ordering::AcqRel);
                }
            }
            self.metrics.embedding_queue(1);
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let _waiting = Waiting(&self.metrics, &self.waiting);
            Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| EmbedError::Pool)?
        };
        // The permit moves into the job: a caller that hangs up does not free a session slot
        // while its embedding still runs.
        let (result, ran) = self
            .workers
            .embed(Arc::clone(&self.embedder), text.to_owned(), permit)
            .await?;
        let ran = u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX);
        // An eighth of each new timing: steady under noise, a few dozen embeddings to follow a
        // real change.
        let average = self.embed_ns.load(Ordering::Relaxed);
        self.embed_ns
            .store(average - average / 8 + ran / 8, Ordering::Relaxed);
        let timed_ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.timed_ms.store(timed_ms, Ordering::Relaxed);
        self.metrics.embedding(started.elapsed());
        result?
            .pop()
            .ok_or_else(|| EmbedError::Inference("no vector returned".to_owned()))
    }

    fn redis_key(&self, route: &str, id: &str) -> String {
        format!("{}:{route}:{id}", self.prefix)
    }

    /// Whether the route's index holds any entry of `partition`: without one no lookup can
    /// find a candidate, so it needs no embedding.
    pub fn holds(&self, route: &str, partition: &str) -> bool {
        self.indexes
            .get(route)
            .is_some_and(|index| index.holds(partition_id(partition)))
    }

    /// The lowest similarity a candidate needs: the route's threshold, else the verifier's
    /// calibrated floor, else the model's default threshold.
    pub fn floor(&self, threshold: Option<f32>) -> f32 {
        match (&self.verifier, threshold) {
            (Some(v), t) => v.floor_for(t),
            (None, t) => t.unwrap_or_else(|| self.embedder.model().default_threshold()),
        }
    }

    /// The best entry of `partition` at or above the route's floor, with its answer, unless the
    /// verifier (or, without one, a guard) refuses it for the question `asked`.
    pub async fn lookup(
        &self,
        route: &str,
        partition: &str,
        (asked, embedded): (&str, &Embedded),
        decision: Decision<'_>,
    ) -> Result<Lookup, CacheError> {
        let Some(index) = self.indexes.get(route) else {
            return Ok(Lookup::Miss { nearest: None });
        };
        let floor = self.floor(decision.threshold);
        let found =
            match index.search_scored(partition_id(partition), &embedded.vector, floor, now()) {
                Ok(found) => found,
                Err(nearest) => return Ok(Lookup::Miss { nearest }),
            };
        let refused = |reason| Lookup::Refused {
            reason,
            stored: found.id.clone(),
            similarity: found.similarity,
        };
        if self.verifier.is_none()
            && let Some(g) = guard::refuse(decision.guards, asked, &found.prompt)
        {
            return Ok(refused(Refusal::Guard(g)));
        }
        let (body, states) = match (&found.body, &self.redis) {
            (Some(body), _) => (Some(body.clone()), found.states.clone()),
            (None, Some(redis)) => {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.redis_key(route, &found.id))
                    .arg("response")
                    .arg("states");
                let (body, states) = redis
                    .run::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&cmd)
                    .await?;
                (body.map(Bytes::from), states.map(Bytes::from))
            }
            (None, None) => (None, None),
        };
        if let (Some(verifier), Some(_)) = (&self.verifier, &body) {
            let stored_states = states
                .as_deref()
                .and_then(TokenStates::from_bytes)
                .unwrap_or_default();
            // Without states on either side (an entry written before them, or an unreadable
            // field) the verifier would read every piece as aligned: the old rule decides.
            if stored_states.is_empty() || embedded.tokens.is_empty() {
                let model = self.embedder.model();
                if found.similarity < model.default_threshold() {
                    return Ok(refused(Refusal::Verifier { score: 0.0 }));
                }
                if let Some(g) = guard::refuse(decision.guards, asked, &found.prompt) {
                    return Ok(refused(Refusal::Guard(g)));
                }
            } else {
                let score = verifier.score(
                    &Side {
                        text: asked,
                        vector: &embedded.vector,
                        tokens: &embedded.tokens,
                    },
                    &Side {
                        text: &found.prompt,
                        vector: &found.vector,
                        tokens: &stored_states,
                    },
                );
                if score <= verifier.cut(decision.max_wrong) {
                    let unsure = decision
                        .judge_max_wrong
                        .is_some_and(|grey| score > verifier.cut(grey));
                    if let (true, Some(body)) = (unsure, body) {
                        return Ok(Lookup::Unsure {
                            hit: SemanticHit {
                                similarity: found.similarity,
                                body,
                                total_tokens: found.total_tokens,
                            },
                            stored_prompt: found.prompt.clone(),
                            stored: found.id.clone(),
                            score,
                        });
                    }
                    return Ok(refused(Refusal::Verifier { score }));
                }
            }
        }
        match body {
            Some(body) => Ok(Lookup::Hit(SemanticHit {
                similarity: found.similarity,
                body,
                total_tokens: found.total_tokens,
            })),
            None => {
                // Gone from Redis (expired or evicted there): drop it here too.
                index.remove(&found.id);
                self.metrics.index_entries(route, index.len());
                Ok(Lookup::Miss { nearest: None })
            }
        }
    }

    /// Stores an answered question under `id` (the exact key) for `ttl`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the fields are the entry"
    )]
    pub async fn insert(
        &self,
        route: &str,
        id: &str,
        partition: &str,
        (prompt, embedded): (&str, Embedded),
        body: &Bytes,
        total_tokens: u64,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let states = Bytes::from(embedded.tokens.to_bytes());
        let vector = embedded.vector;
        let Some(index) = self.indexes.get(route) else {
            return Ok(());
        };
        let expires_at_ms =
            now().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        if let Some(redis) = &self.redis {
            let key = self.redis_key(route, id);
            let vector_bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("HSET")
                .arg(&key)
                .arg("partition")
                .arg(partition)
                .arg("prompt")
                .arg(prompt)
                .arg("vector")
                .arg(vector_bytes)
                .arg("response")
                .arg(body.as_ref())
                .arg("expires")
                .arg(expires_at_ms)
                .arg("tokens")
                .arg(total_tokens)
                .arg("states")
                .arg(states.as_ref())
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(expires_at_ms)
                .ignore();
            redis
                .transaction_then(&pipe, vec![self.event("put", route, id)])
                .await?;
        }
        let evicted = index.insert(NewEntry {
            id: id.to_owned(),
            partition: partition_id(partition),
            vector,
            prompt: prompt.to_owned(),
            expires_at_ms,
            body: self.redis.is_none().then(|| body.clone()),
            states: self.redis.is_none().then_some(states),
            total_tokens,
        });
        self.metrics.index_entries(route, index.len());
        if let (Some(redis), false) = (&self.redis, evicted.is_empty()) {
            // One UNLINK per entry: on a Cluster the entries live in different slots.
            let unlink = evicted.iter().map(|gone| {
                let mut cmd = redis::cmd("UNLINK");
                cmd.arg(self.redis_key(route, gone));
                cmd
            });
            let events = evicted.iter().map(|gone| self.event("del", route, gone));
            redis.each(unlink.chain(events).collect()).await?;
        }
        Ok(())
    }

    /// Loads every live entry of this model from Redis into the indexes; returns how many.
    /// Entries are read [`SCAN_BATCH`] at a time in one round trip and added to their index's
    /// graph on every core, off the async runtime.
    pub async fn rebuild_from_redis(&self) -> Result<usize, CacheError> {
        let Some(redis) = &self.redis else {
            return Ok(0);
        };
        let pattern = format!("{}:*", self.prefix);
        let started = Instant::now();
        let keys = redis.scan_match(&pattern, SCAN_BATCH).await?;
        let scanned = started.elapsed();
        let mut loaded = 0;
        // Each batch is read from Redis while the one before goes into the graphs.
        let mut indexing: Option<tokio::task::JoinHandle<()>> = None;
        for batch in keys.chunks(SCAN_BATCH) {
            let mut by_index: Vec<(Arc<SemanticIndex>, Vec<NewEntry>)> = Vec::new();
            for (route, entry) in self.read_entries(redis, batch).await? {
                let Some(index) = self.indexes.get(route) else {
                    continue;
                };
                loaded += 1;
                match by_index.iter_mut().find(|(i, _)| Arc::ptr_eq(i, index)) {
                    Some((_, entries)) => entries.push(entry),
                    None => by_index.push((Arc::clone(index), vec![entry])),
                }
            }
            if let Some(previous) = indexing.take() {
                previous
                    .await
                    .map_err(|e| CacheError::Rebuild(e.to_string()))?;
            }
            indexing = Some(tokio::task::spawn_blocking(move || {
                for (index, entries) in by_index {
                    index.insert_many(entries);
                }
            }));
        }
        if let Some(last) = indexing {
            last.await.map_err(|e| CacheError::Rebuild(e.to_string()))?;
        }
        for (route, index) in &self.indexes {
            self.metrics.index_entries(route, index.len());
        }
        tracing::info!(
            entries = loaded,
            scan_ms = scanned.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "semantic index rebuilt from redis"
        );
        Ok(loaded)
    }

    /// Loads one entry (another replica's write) into its index; false when it is gone.
    pub(super) async fn load_one(&self, redis: &RedisConn, key: &str) -> Result<bool, CacheError> {
        let keys = [key.to_owned()];
        let mut loaded = false;
        for (route, entry) in self.read_entries(redis, &keys).await? {
            if let Some(index) = self.indexes.get(route) {
                index.insert(entry);
                self.metrics.index_entries(route, index.len());
                loaded = true;
            }
        }
        Ok(loaded)
    }

    /// The live entries stored under `keys`, with their routes, in one round trip.
    async fn read_entries<'k>(
        &self,
        redis: &RedisConn,
        keys: &'k [String],
    ) -> Result<Vec<(&'k str, NewEntry)>, CacheError> {
        type Fields = (
            Option<String>,
            Option<Vec<u8>>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        );
        let cmds: Vec<redis::Cmd> = keys
            .iter()
            .map(|key| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(key)
                    .arg("partition")
                    .arg("vector")
                    .arg("expires")
                    .arg("tokens")
                    .arg("prompt");
                cmd
            })
            .collect();
        let replies: Vec<Fields> = redis.run_many(&cmds).await?;
        let (dim, now) = (self.embedder.dim(), now());
        let mut entries = Vec::with_capacity(keys.len());
        for (key, fields) in keys.iter().zip(replies) {
            let Some((route, id)) = key
                .strip_prefix(&self.prefix)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.rsplit_once(':'))
            else {
                continue;
            };
            let (Some(partition), Some(vector), Some(expires), tokens, Some(prompt)) = fields
            else {
                continue;
            };
            if expires <= now || vector.len() != dim * 4 {
                continue;
            }
            let vector = vector
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            entries.push((
                route,
                NewEntry {
                    id: id.to_owned(),
                    partition: partition_id(&partition),
                    vector,
                    prompt,
                    expires_at_ms: expires,
                    body: None,
                    states: None,
                    total_tokens: tokens.unwrap_or(0),
                },
            ));
        }
        Ok(entries)
    }

    /// Tombstones expired entries and compacts indexes whose tombstones pass `ratio`.
    pub fn maintain(&self, ratio: f32) {
        let now = self::now();
        for (route, index) in &self.indexes {
            index.sweep_expired(now);
            if index.tombstone_ratio() > ratio {
                index.compact();
            }
            self.metrics.index_entries(route, index.len());
        }
    }

    /// Whether the model loads at start: whenever semantic mode is reachable, which (callers'
    /// configs may ask for it on any route) is unless `[embedding] enabled = false`.
    pub fn needed_by(config: &Config) -> bool {
        config.embedding.enabled
    }
}
