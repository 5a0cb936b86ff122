//! Prometheus metrics: names, labels and the registry they live in. One registry per app state,
//! so tests in one process never see each other's counts.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Self {
            registry,
            requests,
            duration,
            attempts,
            retries,
        }
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

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
