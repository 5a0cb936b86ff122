//! Prometheus metrics: names, labels and the registry they live in. One registry per app state,
//! so tests in one process never see each other's counts.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Requests answered, by route and HTTP status.
pub const REQUESTS: &str = "deja_requests";
/// Request latency as seen by the caller (to the first byte for streams), by route and cache status.
pub const REQUEST_DURATION: &str = "deja_request_duration_seconds";
/// Upstream attempts, by route and outcome (an HTTP status, `timeout` or `unreachable`).
pub const UPSTREAM_ATTEMPTS: &str = "deja_upstream_attempts";
/// Retries made after a first upstream try, by route.
pub const UPSTREAM_RETRIES: &str = "deja_upstream_retries";
/// Force-refresh asks from callers not allowed to force a refresh (ignored).
pub const FORCE_REFRESH_REFUSED: &str = "deja_force_refresh_refused";
/// Cache lookups, by route, tier (`exact`, `semantic`) and result (`hit`, `miss`, `error`).
pub const CACHE_LOOKUPS: &str = "deja_cache_lookups";
/// Cache writes, by route, tier and outcome (`stored`, `refused`, `error`).
pub const CACHE_WRITES: &str = "deja_cache_writes";
/// Time to embed one prompt (including the wait for a session).
pub const EMBEDDING_DURATION: &str = "deja_embedding_duration_seconds";
/// Live semantic entries, by route.
pub const INDEX_ENTRIES: &str = "deja_semantic_index_entries";
/// Cosine similarity of semantic hits, by route.
pub const SEMANTIC_SIMILARITY: &str = "deja_semantic_hit_similarity";
/// Semantic candidates refused, by route and reason (`verifier` or a guard's name).
pub const REFUSALS: &str = "deja_semantic_refusals";
/// Streams to clients by how they ended: `complete` (recorded whole and handed to the cache),
/// `ended` (not recorded), `unfinished`, `error_event`, `too_large`, `unsupported_delta`,
/// `malformed` (ended but not storable), `unreachable`/`timeout` (upstream broke or stalled
/// mid-stream), `client_gone`.
pub const STREAMS: &str = "deja_streams";
/// Semantic hits verified against a fresh upstream answer, by route and result (`agree`,
/// `disagree`, `error`, `skipped` when over `verify_max_per_second`).
pub const SEMANTIC_VERIFIED: &str = "deja_semantic_verified";
/// Request log records, by result: `written` to the store, `dropped` (queue full or write failed).
pub const REQUEST_LOG: &str = "deja_request_log_records";
/// Whether a target's circuit is open (1) or closed (0), by route and target path.
pub const CIRCUIT_OPEN: &str = "deja_target_circuit_open";
/// Answers by the target that gave them, by route and target path.
pub const TARGET_ANSWERS: &str = "deja_target_answers";
/// Tokens answered from cache instead of the provider (stored `usage.total_tokens`), by route and tier.
pub const TOKENS_SAVED: &str = "deja_cache_tokens_saved";
/// Requests waiting for a route's concurrency slot, by route.
pub const ROUTE_QUEUE: &str = "deja_route_queue_depth";
/// Requests turned away with 429 because a route was at capacity, by route and reason
/// (`queue_full`, `queue_timeout`).
pub const OVERLOAD: &str = "deja_overload_rejections";
/// Other replicas' semantic-tier changes applied, by result (`put`, `del`, `rebuild`, `error`).
pub const REPLICA_EVENTS: &str = "deja_replica_events";
/// Prompts waiting for an embedding session.
pub const EMBEDDING_QUEUE: &str = "deja_embedding_queue_depth";
/// Answers in the background write-back queue, waiting for their semantic entry's embedding.
pub const WRITEBACK_QUEUE: &str = "deja_semantic_writeback_queue_depth";
/// Time from an answer to its semantic entry stored, for entries stored after the answer went.
pub const WRITEBACK_LAG: &str = "deja_semantic_writeback_lag_seconds";
/// Times Sentinel named a new Redis master and the gateway moved to it.
pub const REDIS_MASTER_SWITCHES: &str = "deja_redis_master_switches";
/// Redis nodes whose breaker is open (the cache is bypassed for their keys).
pub const REDIS_BREAKER_OPEN: &str = "deja_redis_breaker_open";
/// Times a Redis breaker opened.
pub const REDIS_BREAKER_OPENED: &str = "deja_redis_breaker_opened";
/// Semantic lookups skipped because the embedding queue was too long.
pub const SEMANTIC_SHED: &str = "deja_semantic_shed";
/// Grey-zone candidates put to a route's judge model, by route and result (`yes`, `no`,
/// `cached`, `skipped` over the budget, `error`).
pub const JUDGE_CALLS: &str = "deja_judge_calls";
/// Tokens the judge's calls cost (their `usage.total_tokens`), by route.
pub const JUDGE_TOKENS: &str = "deja_judge_tokens";
/// Time a judge call added to the request, by route.
pub const JUDGE_DURATION: &str = "deja_judge_duration_seconds";

/// Every metric family deja registers, with its Prometheus type (for dashboards and their tests).
pub const ALL: &[(&str, &str)] = &[
    (REQUESTS, "counter"),
    (REQUEST_DURATION, "histogram"),
    (UPSTREAM_ATTEMPTS, "counter"),
    (UPSTREAM_RETRIES, "counter"),
    (FORCE_REFRESH_REFUSED, "counter"),
    (CACHE_LOOKUPS, "counter"),
    (CACHE_WRITES, "counter"),
    (EMBEDDING_DURATION, "histogram"),
    (INDEX_ENTRIES, "gauge"),
    (SEMANTIC_SIMILARITY, "histogram"),
    (REFUSALS, "counter"),
    (STREAMS, "counter"),
    (SEMANTIC_VERIFIED, "counter"),
    (REQUEST_LOG, "counter"),
    (CIRCUIT_OPEN, "gauge"),
    (TARGET_ANSWERS, "counter"),
    (TOKENS_SAVED, "counter"),
    (ROUTE_QUEUE, "gauge"),
    (OVERLOAD, "counter"),
    (EMBEDDING_QUEUE, "gauge"),
    (WRITEBACK_QUEUE, "gauge"),
    (WRITEBACK_LAG, "histogram"),
    (REPLICA_EVENTS, "counter"),
    (REDIS_MASTER_SWITCHES, "counter"),
    (JUDGE_CALLS, "counter"),
    (JUDGE_TOKENS, "counter"),
    (JUDGE_DURATION, "histogram"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCache {
    route: String,
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOutcome {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteResult {
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteTierResult {
    route: String,
    tier: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteTier {
    route: String,
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric deja records, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    duration: HistogramFamily<RouteCache>,
    attempts: Family<RouteOutcome, Counter>,
    retries: Family<RouteOnly, Counter>,
    refresh_refused: Family<RouteOnly, Counter>,
    lookups: Family<RouteTierResult, Counter>,
    writes: Family<RouteTierResult, Counter>,
    tokens_saved: Family<RouteTier, Counter>,
    embedding: Histogram,
    index_entries: Family<RouteOnly, Gauge>,
    similarity: HistogramFamily<RouteOnly>,
    refusals: Family<RouteReason, Counter>,
    streams: Family<RouteOutcome, Counter>,
    verified: Family<RouteResult, Counter>,
    request_log: Family<ResultOnly, Counter>,
    circuit: Family<RouteTarget, Gauge>,
    target_answers: Family<RouteTarget, Counter>,
    route_queue: Family<RouteOnly, Gauge>,
    overload: Family<RouteReason, Counter>,
    embedding_queue: Gauge,
    writeback_queue: Gauge,
    writeback_lag: Histogram,
    replica_events: Family<ResultOnly, Counter>,
    master_switches: Counter,
    breaker_open: Gauge,
    breaker_opened: Counter,
    semantic_shed: Family<RouteReason, Counter>,
    judge_calls: Family<RouteResult, Counter>,
    judge_tokens: Family<RouteOnly, Counter>,
    judge_duration: HistogramFamily<RouteOnly>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteTarget {
    route: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultOnly {
    result: &'static str,
}

fn similarity_histogram() -> Histogram {
    // Fine steps where thresholds live (0.80-1.00), coarse below.
    Histogram::new([
        0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0,
    ])
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~65 s: gateway overhead and cache hits at the bottom, slow models at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00025, 2.0, 19,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            REQUESTS,
            "Requests answered, by route and HTTP status",
            requests.clone(),
        );
        let duration: HistogramFamily<RouteCache> = Family::new_with_constructor(latency_histogram);
        registry.register(
            REQUEST_DURATION,
            "Request latency seen by the caller (first byte for streams), by route and cache status",
            duration.clone(),
        );
        let attempts = Family::default();
        registry.register(
            UPSTREAM_ATTEMPTS,
            "Upstream attempts, by route and outcome (HTTP status, timeout, unreachable)",
            attempts.clone(),
        );
        let retries = Family::default();
        registry.register(
            UPSTREAM_RETRIES,
            "Retries after a first upstream try, by route",
            retries.clone(),
        );
        let refresh_refused = Family::default();
        registry.register(
            FORCE_REFRESH_REFUSED,
            "Force-refresh asks ignored because the caller may not force a refresh, by route",
            refresh_refused.clone(),
        );
        let lookups = Family::default();
        registry.register(
            CACHE_LOOKUPS,
            "Cache lookups, by route, tier (exact, semantic) and result (hit, miss, error)",
            lookups.clone(),
        );
        let writes = Family::default();
        registry.register(
            CACHE_WRITES,
            "Cache writes, by route, tier and outcome (stored, refused, error)",
            writes.clone(),
        );
        let tokens_saved = Family::default();
        registry.register(
            TOKENS_SAVED,
            "Tokens answered from cache instead of the provider, by route and tier",
            tokens_saved.clone(),
        );
        let embedding = latency_histogram();
        registry.register(
            EMBEDDING_DURATION,
            "Time to embed one prompt, including the wait for a model session",
            embedding.clone(),
        );
        let index_entries = Family::default();
        registry.register(
            INDEX_ENTRIES,
            "Live semantic entries, by route",
            index_entries.clone(),
        );
        let similarity: HistogramFamily<RouteOnly> =
            Family::new_with_constructor(similarity_histogram);
        registry.register(
            SEMANTIC_SIMILARITY,
            "Cosine similarity of semantic hits, by route",
            similarity.clone(),
        );
        let refusals = Family::default();
        registry.register(
            REFUSALS,
            "Semantic candidates refused, by route and reason (verifier, or a guard without one)",
            refusals.clone(),
        );
        let streams = Family::default();
        registry.register(
            STREAMS,
            "Event streams sent to clients, by route and how they ended",
            streams.clone(),
        );
        let verified = Family::default();
        registry.register(
            SEMANTIC_VERIFIED,
            "Semantic hits checked against a fresh upstream answer, by route and result",
            verified.clone(),
        );
        let request_log = Family::default();
        registry.register(
            REQUEST_LOG,
            "Request log records, by result (written, dropped)",
            request_log.clone(),
        );
        let circuit = Family::default();
        registry.register(
            CIRCUIT_OPEN,
            "Whether a target's circuit breaker is open (1) or closed (0), by route and target",
            circuit.clone(),
        );
        let target_answers = Family::default();
        registry.register(
            TARGET_ANSWERS,
            "Answers by the target of a strategy that gave them, by route and target",
            target_answers.clone(),
        );
        let route_queue = Family::default();
        registry.register(
            ROUTE_QUEUE,
            "Requests waiting for a route's concurrency slot, by route",
            route_queue.clone(),
        );
        let overload = Family::default();
        registry.register(
            OVERLOAD,
            "Requests answered 429 because a route was at capacity, by route and reason",
            overload.clone(),
        );
        let embedding_queue = Gauge::default();
        registry.register(
            EMBEDDING_QUEUE,
            "Prompts waiting for an embedding session",
            embedding_queue.clone(),
        );
        let writeback_queue = Gauge::default();
        registry.register(
            WRITEBACK_QUEUE,
            "Answers waiting in the background write-back queue for their semantic entry's embedding",
            writeback_queue.clone(),
        );
        let writeback_lag = latency_histogram();
        registry.register(
            WRITEBACK_LAG,
            "Time from an answer to its semantic entry stored, for entries stored after the answer",
            writeback_lag.clone(),
        );
        let replica_events = Family::default();
        registry.register(
            REPLICA_EVENTS,
            "Other replicas' semantic-tier changes applied, by result (put, del, rebuild, error)",
            replica_events.clone(),
        );
        let master_switches = Counter::default();
        registry.register(
            REDIS_MASTER_SWITCHES,
            "Times Sentinel named a new Redis master and the gateway moved to it",
            master_switches.clone(),
        );
        let breaker_open = Gauge::default();
        registry.register(
            REDIS_BREAKER_OPEN,
            "Redis nodes taken for down (breaker open): their cache lookups and writes are bypassed",
            breaker_open.clone(),
        );
        let breaker_opened = Counter::default();
        registry.register(
            REDIS_BREAKER_OPENED,
            "Times a Redis breaker opened after consecutive failures",
            breaker_opened.clone(),
        );
        let semantic_shed = Family::default();
        registry.register(
            SEMANTIC_SHED,
            "Semantic lookups skipped (exact tier and provider only) for want of embedding capacity, by reason: queue (the wait for a session was longer than [embedding] max_queue_wait), slow (at the pace embeddings run now, it would not be done within max_lookup_wait), timeout (it was not done within max_lookup_wait)",
            semantic_shed.clone(),
        );
        let judge_calls = Family::default();
        registry.register(
            JUDGE_CALLS,
            "Grey-zone semantic candidates put to the route's judge model, by route and verdict",
            judge_calls.clone(),
        );
        let judge_tokens = Family::default();
        registry.register(
            JUDGE_TOKENS,
            "Tokens the judge's calls cost, by route",
            judge_tokens.clone(),
        );
        let judge_duration: HistogramFamily<RouteOnly> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            JUDGE_DURATION,
            "Time a judge call added to the request, by route",
            judge_duration.clone(),
        );
        Self {
            judge_calls,
            judge_tokens,
            judge_duration,
            breaker_open,
            breaker_opened,
            semantic_shed,
            master_switches,
            replica_events,
            route_queue,
            overload,
            embedding_queue,
            writeback_queue,
            writeback_lag,
            circuit,
            target_answers,
            request_log,
            verified,
            streams,
            refusals,
            embedding,
            index_entries,
            similarity,
            registry,
            requests,
            duration,
            attempts,
            retries,
            refresh_refused,
            lookups,
            writes,
            tokens_saved,
        }
    }

    /// Sets how many requests wait for a slot on `route`.
    pub fn route_queue(&self, route: &str, waiting: usize) {
        self.route_queue
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Counts a request turned away because `route` was at capacity.
    pub fn overload(&self, route: &str, reason: &'static str) {
        self.overload
            .get_or_create(&RouteReason {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts one change read from the other replicas.
    pub fn replica_event(&self, result: &'static str) {
        self.replica_events
            .get_or_create(&ResultOnly { result })
            .inc();
    }

    /// Counts one move to a new Redis master named by Sentinel.
    pub fn redis_master_switched(&self) {
        self.master_switches.inc();
    }

    /// The Redis breakers' state: how many nodes are open, and the total opens so far.
    pub fn redis_breakers(&self, open: usize, opened_total: u64) {
        self.breaker_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        let counted = self.breaker_opened.get();
        if opened_total > counted {
            self.breaker_opened.inc_by(opened_total - counted);
        }
    }

    /// Counts a semantic lookup shed for want of embedding capacity, and why.
    pub fn semantic_shed(&self, route: &str, reason: &'static str) {
        self.semantic_shed
            .get_or_create(&RouteReason {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// Moves the count of prompts waiting for an embedding session by `delta`.
    pub fn embedding_queue(&self, delta: i64) {
        self.embedding_queue.inc_by(delta);
    }

    /// Moves the background write-back queue's depth by `delta`.
    pub fn writeback_queue(&self, delta: i64) {
        self.writeback_queue.inc_by(delta);
    }

    /// Records how long after its answer a semantic entry was stored.
    pub fn writeback_lag(&self, lag: Duration) {
        self.writeback_lag.observe(lag.as_secs_f64());
    }

    /// Counts one answered request and its latency.
    pub fn request(
        &self,
        route: &str,
        status: &'static str,
        cache: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteCache {
                route: route.to_owned(),
                cache,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one upstream attempt by its outcome.
    pub fn upstream_attempt(&self, route: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&RouteOutcome {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts retries made for one request.
    pub fn retries(&self, route: &str, retries: u32) {
        self.retries
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .inc_by(u64::from(retries));
    }

    /// Counts a force-refresh ask that was ignored.
    pub fn force_refresh_refused(&self, route: &str) {
        self.refresh_refused
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .inc();
    }

    /// Counts one cache lookup.
    pub fn cache_lookup(&self, route: &str, tier: &'static str, result: &'static str) {
        self.lookups
            .get_or_create(&RouteTierResult {
                route: route.to_owned(),
                tier,
                result,
            })
            .inc();
    }

    /// Counts one cache write by its outcome.
    pub fn cache_write(&self, route: &str, tier: &'static str, result: &'static str) {
        self.writes
            .get_or_create(&RouteTierResult {
                route: route.to_owned(),
                tier,
                result,
            })
            .inc();
    }

    /// Adds the tokens a hit saved.
    pub fn tokens_saved(&self, route: &str, tier: &'static str, tokens: u64) {
        self.tokens_saved
            .get_or_create(&RouteTier {
                route: route.to_owned(),
                tier,
            })
            .inc_by(tokens);
    }

    /// Records the time one embedding took.
    pub fn embedding(&self, elapsed: Duration) {
        self.embedding.observe(elapsed.as_secs_f64());
    }

    /// Sets a route's live semantic entry count.
    pub fn index_entries(&self, route: &str, entries: usize) {
        self.index_entries
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Records the similarity of a semantic hit.
    pub fn semantic_hit(&self, route: &str, similarity: f32) {
        self.similarity
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .observe(f64::from(similarity));
    }

    /// Counts a semantic candidate refused for `reason`.
    pub fn refusal(&self, route: &str, reason: &'static str) {
        self.refusals
            .get_or_create(&RouteReason {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a stream to a client that ended with `outcome`.
    pub fn stream_outcome(&self, route: &str, outcome: &'static str) {
        self.streams
            .get_or_create(&RouteOutcome {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts a judge verdict and, for a call made, its tokens and time.
    pub fn judge(&self, route: &str, verdict: &'static str, call: Option<(u64, Duration)>) {
        let route = route.to_owned();
        if let Some((tokens, took)) = call {
            let only = RouteOnly {
                route: route.clone(),
            };
            self.judge_tokens.get_or_create(&only).inc_by(tokens);
            self.judge_duration
                .get_or_create(&only)
                .observe(took.as_secs_f64());
        }
        self.judge_calls
            .get_or_create(&RouteResult {
                route,
                result: verdict,
            })
            .inc();
    }

    /// Counts a verification of a semantic hit.
    pub fn semantic_verified(&self, route: &str, result: &'static str) {
        self.verified
            .get_or_create(&RouteResult {
                route: route.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts request log records `written` or `dropped`.
    pub fn request_log(&self, result: &'static str, n: u64) {
        self.request_log
            .get_or_create(&ResultOnly { result })
            .inc_by(n);
    }

    /// Sets whether a target's circuit is open.
    pub fn circuit(&self, route: &str, target: &str, open: bool) {
        self.circuit
            .get_or_create(&RouteTarget {
                route: route.to_owned(),
                target: target.to_owned(),
            })
            .set(i64::from(open));
    }

    /// Counts an answer given by a strategy's target.
    pub fn target_answer(&self, route: &str, target: &str) {
        self.target_answers
            .get_or_create(&RouteTarget {
                route: route.to_owned(),
                target: target.to_owned(),
            })
            .inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
