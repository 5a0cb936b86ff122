//! `GET /v1/analytics/cache`: what the cache did per route over a window, computed from the
//! request log: hit ratio by tier, latency of hits and misses, latency, tokens and cost saved,
//! and the similarity of semantic hits.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::logs::LogRecord;

/// Default prices in USD per million tokens, by model glob; `[analytics] prices` overrides them.
pub const DEFAULT_PRICES: &[(&str, f64)] = &[
    ("yi-lightning", 0.14),
    ("yi-large*", 2.80),
    ("yi-medium*", 0.35),
    ("yi-spark", 0.14),
    ("yi-vision*", 0.84),
];

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

/// One route's cache over the window.
#[derive(Debug, Clone, Serialize)]
pub struct RouteCache {
    /// Route name.
    pub route: String,
    /// Chat completions answered.
    pub requests: usize,
    /// Share answered by the exact tier.
    pub exact_hit_ratio: f64,
    /// Share answered by the semantic tier.
    pub semantic_hit_ratio: f64,
    /// Latency of exact hits, semantic hits and misses (ms).
    pub latency: BTreeMap<&'static str, Spread>,
    /// Time callers did not wait: hits × (median miss − median hit), ms.
    pub latency_saved_ms: f64,
    /// `usage.total_tokens` of the answers served from cache.
    pub tokens_saved: i64,
    /// Those tokens at the model's price.
    pub cost_saved_usd: f64,
    /// Semantic hits by similarity bucket (upper bound → count).
    pub similarity: BTreeMap<String, usize>,
}

fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if values.is_empty() {
            0.0
        } else {
            values[((values.len() - 1) as f64 * q).round() as usize]
        }
    };
    Spread {
        p50: at(0.5),
        p95: at(0.95),
        count: values.len(),
    }
}

/// The price per million tokens of `model`.
pub fn price(prices: &[(String, f64)], model: &str) -> f64 {
    prices
        .iter()
        .find(|(glob, _)| wildmatch::WildMatch::new(glob).matches(model))
        .map_or(0.0, |(_, p)| *p)
}

/// Per-route figures from the log rows of chat completions.
pub fn cache_report(rows: &[LogRecord], prices: &[(String, f64)]) -> Vec<RouteCache> {
    let mut by_route: BTreeMap<&str, Vec<&LogRecord>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.endpoint == "chat.completions") {
        by_route.entry(row.route.as_str()).or_default().push(row);
    }
    by_route
        .into_iter()
        .map(|(route, rows)| {
            let of = |status: &str| -> Vec<&&LogRecord> {
                rows.iter().filter(|r| r.cache_status == status).collect()
            };
            let (exact, semantic, miss) = (of("hit"), of("semantic_hit"), of("miss"));
            let latencies = |rs: &[&&LogRecord]| spread(rs.iter().map(|r| r.latency_ms).collect());
            let mut latency = BTreeMap::new();
            latency.insert("hit", latencies(&exact));
            latency.insert("semantic_hit", latencies(&semantic));
            latency.insert("miss", latencies(&miss));
            let hits: Vec<&&LogRecord> = exact.iter().chain(&semantic).copied().collect();
            let hit_median = latencies(&hits).p50;
            let miss_median = latency["miss"].p50;
            let tokens_saved: i64 = hits.iter().map(|r| r.tokens).sum();
            let cost_saved_usd = hits
                .iter()
                .map(|r| r.tokens as f64 * price(prices, &r.model) / 1e6)
                .sum();
            let mut similarity = BTreeMap::new();
            for r in &semantic {
                let s = r.similarity.unwrap_or(0.0);
                let bucket = [0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
                    .into_iter()
                    .find(|b| s <= *b)
                    .unwrap_or(1.0);
                *similarity.entry(format!("{bucket:.2}")).or_default() += 1;
            }
            let share = |n: usize| n as f64 / rows.len().max(1) as f64;
            RouteCache {
                route: route.to_owned(),
                requests: rows.len(),
                exact_hit_ratio: share(exact.len()),
                semantic_hit_ratio: share(semantic.len()),
                latency,
                latency_saved_ms: if miss.is_empty() {
                    0.0
                } else {
                    hits.len() as f64 * (miss_median - hit_median).max(0.0)
                },
                tokens_saved,
                cost_saved_usd,
                similarity,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        cache: &str,
        latency_ms: f64,
        tokens: i64,
        similarity: Option<f64>,
        model: &str,
    ) -> LogRecord {
        LogRecord {
            endpoint: "chat.completions".to_owned(),
            route: "support".to_owned(),
            model: model.to_owned(),
            cache_status: cache.to_owned(),
            similarity,
            attempts: 1,
            status: 200,
            latency_ms,
            tokens,
            ..LogRecord::default()
        }
    }

    #[test]
    fn the_report_counts_hits_latency_tokens_cost_and_similarity() {
        let rows = [
            row("miss", 900.0, 100, None, "yi-lightning"),
            row("miss", 1100.0, 100, None, "yi-lightning"),
            row("hit", 1.0, 100, None, "yi-lightning"),
            row("semantic_hit", 6.0, 1000, Some(0.975), "yi-large-turbo"),
        ];
        let prices: Vec<(String, f64)> = crate::config::LogConfig::default().price_list();
        let report = cache_report(&rows, &prices);
        assert_eq!(report.len(), 1);
        let r = &report[0];
        assert_eq!(
            (r.requests, r.exact_hit_ratio, r.semantic_hit_ratio),
            (4, 0.25, 0.25)
        );
        assert_eq!(r.latency["miss"].p50, 1100.0);
        assert_eq!(r.tokens_saved, 1100);
        let expected = 100.0 * 0.14 / 1e6 + 1000.0 * 2.80 / 1e6;
        assert!(
            (r.cost_saved_usd - expected).abs() < 1e-12,
            "{}",
            r.cost_saved_usd
        );
        assert_eq!(r.similarity.get("0.98"), Some(&1));
        assert!(r.latency_saved_ms > 2000.0, "{}", r.latency_saved_ms);
        assert_eq!(price(&prices, "some-other-model"), 0.0);
    }
}
