//! Analytics computed from the request log: deja's own per-route cache report
//! (`GET /v1/analytics/cache`, which the dashboard draws) and Portkey's graph endpoints
//! ([`graphs`]).

pub mod graphs;
pub mod query;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::logs::LogRecord;

/// Default prices in USD per million tokens, by model glob; `[log] prices` overrides them.
pub const DEFAULT_PRICES: &[(&str, f64)] = &[
    ("yi-lightning", 0.14),
    ("yi-large*", 2.80),
    ("yi-medium*", 0.35),
    ("yi-spark", 0.14),
    ("yi-vision*", 0.84),
];

/// The similarity histogram covers 0.80..1.00 in steps of 0.01; lower values fall in the first.
const HISTOGRAM_FROM: f64 = 0.80;
const HISTOGRAM_STEP: f64 = 0.01;
const HISTOGRAM_BUCKETS: usize = 20;
/// How far under the threshold a miss's nearest candidate still counts as a near miss.
pub const NEAR_MISS_BAND: f64 = 0.03;

/// p50 and p95 of a set of latencies, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// How many.
    pub count: usize,
}

/// Similarities of one route's semantic lookups, bucketed by lower bound.
#[derive(Debug, Clone, Serialize)]
pub struct SimilarityHistogram {
    /// Lower bound of each bucket.
    pub buckets: Vec<f64>,
    /// Semantic hits served.
    pub hits: Vec<usize>,
    /// Misses, by how close the nearest stored question came.
    pub misses: Vec<usize>,
    /// Candidates over the threshold that a guard refused.
    pub refused: Vec<usize>,
}

/// Misses whose nearest candidate was just under the threshold: the signal for lowering it.
#[derive(Debug, Clone, Serialize)]
pub struct NearMisses {
    /// Misses whose nearest candidate was within [`NEAR_MISS_BAND`] under the threshold.
    pub count: usize,
    /// Their share of the semantic misses.
    pub share_of_misses: f64,
    /// The band: `[threshold - band, threshold)`.
    pub band: f64,
}

/// One time bucket of a route's traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Bucket start, Unix ms.
    pub at: i64,
    /// Chat completions answered.
    pub requests: usize,
    /// Share answered from cache (either tier).
    pub hit_ratio: f64,
    /// Share answered by the semantic tier.
    pub semantic_hit_ratio: f64,
    /// Share answered with a 4xx or 5xx.
    pub error_ratio: f64,
    /// Share that needed more than one upstream attempt.
    pub retry_ratio: f64,
    /// Median latency of hits and of misses, ms (0 when none).
    pub hit_p50_ms: f64,
    /// Median latency of misses.
    pub miss_p50_ms: f64,
    /// Cost saved by hits in the bucket, USD.
    pub cost_saved_usd: f64,
}

/// What the grey zone's judge cost a route: its calls are paid for like any other.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct JudgeCosts {
    /// Requests that asked the judge (a remembered verdict asks nothing).
    pub calls: usize,
    /// Tokens those calls cost.
    pub tokens: i64,
    /// Those tokens at the judge model's price.
    pub cost_usd: f64,
    /// How long requests waited for the judge, ms.
    pub latency: Spread,
}

/// One route's cache over the window.
#[derive(Debug, Clone, Serialize)]
pub struct RouteCache {
    /// Route name.
    pub route: String,
    /// The similarity threshold in force (the route's, else the model's default).
    pub threshold: f64,
    /// Chat completions answered.
    pub requests: usize,
    /// Share answered by the exact tier.
    pub exact_hit_ratio: f64,
    /// Share answered by the semantic tier.
    pub semantic_hit_ratio: f64,
    /// Share answered with a 4xx or 5xx.
    pub error_ratio: f64,
    /// Share that needed more than one upstream attempt.
    pub retry_ratio: f64,
    /// Latency of exact hits, semantic hits and misses (ms).
    pub latency: BTreeMap<&'static str, Spread>,
    /// Time callers did not wait: hits × (median miss − median hit), ms.
    pub latency_saved_ms: f64,
    /// `usage.total_tokens` of the answers served from cache.
    pub tokens_saved: i64,
    /// Those tokens at the model's price (the judge's cost not taken off: see `judge`).
    pub cost_saved_usd: f64,
    /// What the judge cost.
    pub judge: JudgeCosts,
    /// Similarities of hits, misses' nearest candidates, and refused candidates.
    pub similarity: SimilarityHistogram,
    /// Candidates refused, by guard.
    pub guard_refusals: BTreeMap<String, usize>,
    /// Misses just under the threshold.
    pub near_misses: NearMisses,
    /// The window in buckets, oldest first.
    pub series: Vec<Point>,
}

/// What the report needs to know besides the rows.
pub struct ReportSpec<'a> {
    /// Prices per million tokens by model glob.
    pub prices: &'a [(String, f64)],
    /// The similarity threshold of a route.
    pub threshold: &'a dyn Fn(&str) -> f64,
    /// The window, Unix ms.
    pub from: i64,
    /// End of the window, Unix ms.
    pub to: i64,
    /// How many buckets the series has.
    pub buckets: usize,
}

/// p50 and p95 of `values`.
pub fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    Spread {
        p50: quantile(&values, 0.5),
        p95: quantile(&values, 0.95),
        count: values.len(),
    }
}

/// The `q` quantile of sorted `values` (nearest rank), 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        0.0
    } else {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }
}

/// The price per million tokens of `model`.
pub fn price(prices: &[(String, f64)], model: &str) -> f64 {
    prices
        .iter()
        .find(|(glob, _)| wildmatch::WildMatch::new(glob).matches(model))
        .map_or(0.0, |(_, p)| *p)
}

/// What a row cost (or, served from cache, saved), USD.
pub fn cost_usd(prices: &[(String, f64)], row: &LogRecord) -> f64 {
    row.tokens as f64 * price(prices, &row.model) / 1e6
}

/// What the judge's call cost a row, USD (0 when none was made).
pub fn judge_cost_usd(prices: &[(String, f64)], row: &LogRecord) -> f64 {
    if row.judge_tokens == 0 {
        return 0.0;
    }
    row.judge_tokens as f64 * price(prices, &row.judge_model) / 1e6
}

/// Whether the row's request asked the judge.
pub fn asked_judge(row: &LogRecord) -> bool {
    !row.judge_model.is_empty()
}

fn judge_costs(rows: &[&LogRecord], prices: &[(String, f64)]) -> JudgeCosts {
    let judged: Vec<&LogRecord> = rows.iter().copied().filter(|r| asked_judge(r)).collect();
    JudgeCosts {
        calls: judged.len(),
        tokens: judged.iter().map(|r| r.judge_tokens).sum(),
        cost_usd: judged.iter().map(|r| judge_cost_usd(prices, r)).sum(),
        latency: spread(judged.iter().map(|r| r.judge_ms).collect()),
    }
}

/// Served from either cache tier.
pub fn is_hit(row: &LogRecord) -> bool {
    row.cache_status == "hit" || row.cache_status == "semantic_hit"
}

fn is_error(row: &LogRecord) -> bool {
    row.status >= 400
}

fn share(part: usize, whole: usize) -> f64 {
    part as f64 / whole.max(1) as f64
}

fn bucket_of(similarity: f64) -> usize {
    let i = ((similarity - HISTOGRAM_FROM) / HISTOGRAM_STEP + 1e-9).floor();
    (i.max(0.0) as usize).min(HISTOGRAM_BUCKETS - 1)
}

fn histogram(rows: &[&LogRecord]) -> SimilarityHistogram {
    let mut h = SimilarityHistogram {
        buckets: (0..HISTOGRAM_BUCKETS)
            .map(|i| ((HISTOGRAM_FROM + i as f64 * HISTOGRAM_STEP) * 100.0).round() / 100.0)
            .collect(),
        hits: vec![0; HISTOGRAM_BUCKETS],
        misses: vec![0; HISTOGRAM_BUCKETS],
        refused: vec![0; HISTOGRAM_BUCKETS],
    };
    for row in rows {
        if let (true, Some(s)) = (row.cache_status == "semantic_hit", row.similarity) {
            h.hits[bucket_of(s)] += 1;
        } else if let Some(s) = row.nearest {
            let counts = if row.guard.is_empty() {
                &mut h.misses
            } else {
                &mut h.refused
            };
            counts[bucket_of(s)] += 1;
        }
    }
    h
}

fn point(at: i64, rows: &[&LogRecord], prices: &[(String, f64)]) -> Point {
    let median = |keep: &dyn Fn(&LogRecord) -> bool| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.latency_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        quantile(&v, 0.5)
    };
    let count = |keep: &dyn Fn(&LogRecord) -> bool| rows.iter().filter(|r| keep(r)).count();
    Point {
        at,
        requests: rows.len(),
        hit_ratio: share(count(&is_hit), rows.len()),
        semantic_hit_ratio: share(count(&|r| r.cache_status == "semantic_hit"), rows.len()),
        error_ratio: share(count(&is_error), rows.len()),
        retry_ratio: share(count(&|r| r.attempts > 1), rows.len()),
        hit_p50_ms: median(&is_hit),
        miss_p50_ms: median(&|r| r.cache_status == "miss"),
        cost_saved_usd: rows
            .iter()
            .filter(|r| is_hit(r))
            .map(|r| cost_usd(prices, r))
            .sum(),
    }
}

fn series(rows: &[&LogRecord], spec: &ReportSpec<'_>) -> Vec<Point> {
    let buckets = spec.buckets.max(1);
    let width = ((spec.to - spec.from) / buckets as i64).max(1);
    let mut grouped: Vec<Vec<&LogRecord>> = vec![Vec::new(); buckets];
    for row in rows {
        let i = ((row.at - spec.from) / width).clamp(0, buckets as i64 - 1) as usize;
        grouped[i].push(row);
    }
    grouped
        .iter()
        .enumerate()
        .map(|(i, rows)| point(spec.from + i as i64 * width, rows, spec.prices))
        .collect()
}

fn route_report(route: &str, rows: &[&LogRecord], spec: &ReportSpec<'_>) -> RouteCache {
    let of = |status: &str| -> Vec<&LogRecord> {
        rows.iter()
            .copied()
            .filter(|r| r.cache_status == status)
            .collect()
    };
    let (exact, semantic, miss) = (of("hit"), of("semantic_hit"), of("miss"));
    let latencies = |rs: &[&LogRecord]| spread(rs.iter().map(|r| r.latency_ms).collect());
    let mut latency = BTreeMap::new();
    latency.insert("hit", latencies(&exact));
    latency.insert("semantic_hit", latencies(&semantic));
    latency.insert("miss", latencies(&miss));
    let hits: Vec<&LogRecord> = exact.iter().chain(&semantic).copied().collect();
    let threshold = (spec.threshold)(route);
    let mut guard_refusals = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.guard.is_empty()) {
        *guard_refusals.entry(r.guard.clone()).or_default() += 1;
    }
    let looked_up_and_missed = miss.iter().filter(|r| r.nearest.is_some()).count();
    let near = miss
        .iter()
        .filter(|r| r.guard.is_empty())
        .filter_map(|r| r.nearest)
        .filter(|s| *s < threshold && *s >= threshold - NEAR_MISS_BAND)
        .count();
    RouteCache {
        route: route.to_owned(),
        threshold,
        requests: rows.len(),
        exact_hit_ratio: share(exact.len(), rows.len()),
        semantic_hit_ratio: share(semantic.len(), rows.len()),
        error_ratio: share(rows.iter().filter(|r| is_error(r)).count(), rows.len()),
        retry_ratio: share(rows.iter().filter(|r| r.attempts > 1).count(), rows.len()),
        latency_saved_ms: if miss.is_empty() {
            0.0
        } else {
            hits.len() as f64 * (latency["miss"].p50 - latencies(&hits).p50).max(0.0)
        },
        latency,
        tokens_saved: hits.iter().map(|r| r.tokens).sum(),
        cost_saved_usd: hits.iter().map(|r| cost_usd(spec.prices, r)).sum(),
        judge: judge_costs(rows, spec.prices),
        similarity: histogram(rows),
        guard_refusals,
        near_misses: NearMisses {
            count: near,
            share_of_misses: share(near, looked_up_and_missed),
            band: NEAR_MISS_BAND,
        },
        series: series(rows, spec),
    }
}

/// Per-route figures from the log rows of chat completions.
pub fn cache_report(rows: &[LogRecord], spec: &ReportSpec<'_>) -> Vec<RouteCache> {
    let mut by_route: BTreeMap<&str, Vec<&LogRecord>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.endpoint == "chat.completions") {
        by_route.entry(row.route.as_str()).or_default().push(row);
    }
    by_route
        .into_iter()
        .map(|(route, rows)| route_report(route, &rows, spec))
        .collect()
}

#[cfg(test)]
mod tests;
