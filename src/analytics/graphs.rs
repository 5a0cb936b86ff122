//! Portkey's `GET /v1/analytics/graphs/*` and `/v1/analytics/summary/cache`, from the request
//! log. Each graph is `{"object": "analytics-graph", "summary": {...}, "data_points": [...]}`
//! with one point per time bucket (empty buckets included, so charts keep their time axis);
//! costs are in cents and latencies in ms, as Portkey reports them.

use serde_json::{Value, json};

use super::query::{AnalyticsQuery, format_time};
use super::{asked_judge, cost_usd, is_hit, judge_cost_usd, quantile};
use crate::store::logs::LogRecord;

/// Bucket widths to choose from, ms: the smallest giving at most [`MAX_POINTS`] points.
const WIDTHS: &[i64] = &[
    60_000,
    300_000,
    900_000,
    3_600_000,
    10_800_000,
    21_600_000,
    86_400_000,
    604_800_000,
];
const MAX_POINTS: i64 = 120;

/// One of Portkey's graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    /// Requests: total, success, failed.
    Requests,
    /// Spend on upstream calls, cents.
    Cost,
    /// Latency: avg, p50, p90, p99.
    Latency,
    /// Tokens: total, prompt, completion.
    Tokens,
    /// Errors (4xx and 5xx).
    Errors,
    /// Errors as a percentage of requests.
    ErrorsRate,
    /// Cache hits as a percentage of cacheable requests.
    CacheHitRate,
    /// Latency of cache hits.
    CacheLatency,
}

/// Names in the path, as `portkey-ai` 3.x sends them and as Portkey's API reference spells them.
pub const NAMES: &[(&str, Graph)] = &[
    ("requests", Graph::Requests),
    ("cost", Graph::Cost),
    ("latency", Graph::Latency),
    ("tokens", Graph::Tokens),
    ("errors", Graph::Errors),
    ("errors-rate", Graph::ErrorsRate),
    ("errors/rate", Graph::ErrorsRate),
    ("cache-hit-rate", Graph::CacheHitRate),
    ("cache/hit-rate", Graph::CacheHitRate),
    ("cache-latency", Graph::CacheLatency),
    ("cache/latency", Graph::CacheLatency),
];

impl Graph {
    /// The graph a path names.
    pub fn named(name: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, g)| *g)
    }
}

/// Cost of a row in cents: its answer's, nothing when served from cache, plus the judge's call
/// when it asked one (a hit the judge let through still paid for the judge).
fn cost_cents(prices: &[(String, f64)], row: &LogRecord) -> f64 {
    let answer = if is_hit(row) {
        0.0
    } else {
        cost_usd(prices, row)
    };
    (answer + judge_cost_usd(prices, row)) * 100.0
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The mean of `values`, 0 when there are none.
fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The rows `query` keeps (only chat completions with `chat_only`).
fn kept<'a>(
    rows: &'a [LogRecord],
    query: &AnalyticsQuery,
    prices: &[(String, f64)],
    chat_only: bool,
) -> Vec<&'a LogRecord> {
    rows.iter()
        .filter(|r| !chat_only || r.endpoint == "chat.completions")
        .filter(|r| query.keeps(r, cost_cents(prices, r)))
        .collect()
}

fn round(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// The figures of one bucket (or of the whole window, for the summary).
fn figures(graph: Graph, rows: &[&LogRecord], prices: &[(String, f64)]) -> Value {
    let count = |keep: &dyn Fn(&LogRecord) -> bool| rows.iter().filter(|r| keep(r)).count();
    let failed = count(&|r| r.status >= 400);
    match graph {
        Graph::Requests => json!({
            "total": rows.len(), "success": rows.len() - failed, "failed": failed,
        }),
        Graph::Cost => {
            let cents = || rows.iter().map(|r| cost_cents(prices, r));
            json!({"total": round(cents().sum()), "avg": round(mean(cents()))})
        }
        Graph::Latency => {
            let mut ms: Vec<f64> = rows.iter().map(|r| r.latency_ms).collect();
            ms.sort_by(f64::total_cmp);
            json!({
                "avg": round(mean(ms.iter().copied())), "p50": round(quantile(&ms, 0.5)),
                "p90": round(quantile(&ms, 0.9)), "p99": round(quantile(&ms, 0.99)),
            })
        }
        Graph::Tokens => json!({
            "total": rows.iter().map(|r| r.tokens).sum::<i64>(),
            "prompt": rows.iter().map(|r| r.prompt_tokens).sum::<i64>(),
            "completion": rows.iter().map(|r| r.completion_tokens).sum::<i64>(),
            "judge": rows.iter().map(|r| r.judge_tokens).sum::<i64>(),
        }),
        Graph::Errors => json!({"total": failed}),
        Graph::ErrorsRate => json!({"rate": round(percent(failed, rows.len()))}),
        Graph::CacheHitRate => {
            let hits = count(&|r| r.cache_status == "hit");
            let semantic = count(&|r| r.cache_status == "semantic_hit");
            let misses = count(&|r| r.cache_status == "miss" || r.cache_status == "refresh");
            json!({
                "rate": round(percent(hits + semantic, hits + semantic + misses)),
                "hits": hits + semantic, "simple_hits": hits, "semantic_hits": semantic,
                "misses": misses,
            })
        }
        Graph::CacheLatency => {
            let ms: Vec<f64> = rows
                .iter()
                .filter(|r| is_hit(r))
                .map(|r| r.latency_ms)
                .collect();
            json!({"total": ms.len(), "avg": round(mean(ms.iter().copied()))})
        }
    }
}

/// The bucket width for a window.
fn width(span: i64) -> i64 {
    WIDTHS
        .iter()
        .copied()
        .find(|w| span / w < MAX_POINTS)
        .unwrap_or(WIDTHS[WIDTHS.len() - 1])
}

/// The graph over the rows `query` keeps.
pub fn graph(
    graph: Graph,
    rows: &[LogRecord],
    query: &AnalyticsQuery,
    prices: &[(String, f64)],
) -> Value {
    let cache_graph = matches!(graph, Graph::CacheHitRate | Graph::CacheLatency);
    let kept = kept(rows, query, prices, cache_graph);
    let width = width(query.to - query.from);
    let first = query.from.div_euclid(width) * width;
    let buckets = usize::try_from((query.to - first) / width + 1).unwrap_or(1);
    let mut grouped: Vec<Vec<&LogRecord>> = vec![Vec::new(); buckets];
    for row in &kept {
        let i = usize::try_from((row.at - first) / width)
            .unwrap_or(0)
            .min(buckets - 1);
        grouped[i].push(row);
    }
    let data_points: Vec<Value> = grouped
        .iter()
        .enumerate()
        .map(|(i, rows)| {
            let mut point = figures(graph, rows, prices);
            if let Value::Object(fields) = &mut point {
                fields.insert(
                    "timestamp".to_owned(),
                    json!(format_time(first + i as i64 * width)),
                );
            }
            point
        })
        .collect();
    json!({
        "object": "analytics-graph",
        "summary": figures(graph, &kept, prices),
        "data_points": data_points,
    })
}

/// `GET /v1/analytics/summary/cache`: what the cache did over the window.
pub fn cache_summary(
    rows: &[LogRecord],
    query: &AnalyticsQuery,
    prices: &[(String, f64)],
) -> Value {
    let kept = kept(rows, query, prices, true);
    let hits: Vec<&&LogRecord> = kept.iter().filter(|r| is_hit(r)).collect();
    let misses: Vec<&&LogRecord> = kept.iter().filter(|r| r.cache_status == "miss").collect();
    let avg = |rs: &[&&LogRecord]| mean(rs.iter().map(|r| r.latency_ms));
    let judged: Vec<&&LogRecord> = kept.iter().filter(|r| asked_judge(r)).collect();
    let cost_saved = hits
        .iter()
        .map(|r| cost_usd(prices, r) * 100.0)
        .sum::<f64>();
    let judge_cost = judged
        .iter()
        .map(|r| judge_cost_usd(prices, r) * 100.0)
        .sum::<f64>();
    json!({
        "object": "analytics-summary",
        "summary": {
            "hits": hits.len(),
            "semantic_hits": hits.iter().filter(|r| r.cache_status == "semantic_hit").count(),
            "misses": misses.len(),
            "hit_rate": round(percent(hits.len(), hits.len() + misses.len())),
            "avg_latency_hit": round(avg(&hits)),
            "avg_latency_miss": round(avg(&misses)),
            "tokens_saved": hits.iter().map(|r| r.tokens).sum::<i64>(),
            "cost_saved": round(cost_saved),
            "judge_calls": judged.len(),
            "judge_tokens": judged.iter().map(|r| r.judge_tokens).sum::<i64>(),
            "judge_cost": round(judge_cost),
            "avg_latency_judge": round(mean(judged.iter().map(|r| r.judge_ms))),
            "net_cost_saved": round(cost_saved - judge_cost),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;

    fn query(from: i64, to: i64) -> AnalyticsQuery {
        let mut q = AnalyticsQuery::default();
        (q.from, q.to) = (from, to);
        q
    }

    #[test]
    fn every_path_name_is_known_and_buckets_keep_the_time_axis() {
        for (name, g) in NAMES {
            assert_eq!(Graph::named(name), Some(*g));
        }
        assert_eq!(Graph::named("users"), None);
        assert_eq!(width(3_600_000), 60_000);
        assert_eq!(width(86_400_000), 900_000);
        let prices = crate::config::LogConfig::default().price_list();
        let rows = [LogRecord {
            at: 30 * 60_000,
            ..row("miss", 5.0, 10, "yi-lightning")
        }];
        let g = graph(Graph::Requests, &rows, &query(0, 3_600_000), &prices);
        let points = g["data_points"].as_array().unwrap();
        assert_eq!(points.len(), 61);
        assert_eq!(points[30]["total"], 1);
        assert_eq!(points[29]["total"], 0);
        assert_eq!(points[0]["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(g["summary"]["total"], 1);
    }

    #[test]
    fn figures_follow_portkey_units() {
        let prices = crate::config::LogConfig::default().price_list();
        let rows = [
            LogRecord {
                at: 1,
                status: 503,
                ..row("miss", 100.0, 0, "yi-lightning")
            },
            LogRecord {
                at: 2,
                prompt_tokens: 600_000,
                completion_tokens: 400_000,
                ..row("miss", 300.0, 1_000_000, "yi-lightning")
            },
            LogRecord {
                at: 3,
                ..row("hit", 1.0, 1_000_000, "yi-lightning")
            },
            LogRecord {
                at: 4,
                // A hit the judge let through: its 1M judge tokens were paid for.
                judge_model: "yi-large".to_owned(),
                judge_tokens: 1_000_000,
                ..row("semantic_hit", 5.0, 1_000_000, "yi-lightning")
            },
        ];
        let q = query(0, 10);
        let s = |g: Graph| graph(g, &rows, &q, &prices)["summary"].clone();
        assert_eq!(
            s(Graph::Requests),
            json!({"total": 4, "success": 3, "failed": 1})
        );
        // One paid miss of 1M tokens at $0.14: 14 cents; hits cost nothing but the judge's
        // 1M tokens of yi-large at $2.80: 280 cents.
        assert_eq!(s(Graph::Cost)["total"], json!(294.0));
        assert_eq!(
            s(Graph::Tokens),
            json!({"total": 3_000_000, "prompt": 600_000, "completion": 400_000, "judge": 1_000_000})
        );
        assert_eq!(s(Graph::ErrorsRate), json!({"rate": 25.0}));
        let rate = s(Graph::CacheHitRate);
        assert_eq!(
            (rate["rate"].as_f64(), rate["semantic_hits"].as_u64()),
            (Some(50.0), Some(1))
        );
        assert_eq!(s(Graph::CacheLatency), json!({"total": 2, "avg": 3.0}));
        assert_eq!(s(Graph::Latency)["p99"], json!(300.0));
        let summary = cache_summary(&rows, &q, &prices);
        assert_eq!(summary["summary"]["cost_saved"], json!(28.0));
        assert_eq!(summary["summary"]["judge_calls"], json!(1));
        assert_eq!(summary["summary"]["judge_cost"], json!(280.0));
        assert_eq!(summary["summary"]["net_cost_saved"], json!(-252.0));
    }
}
