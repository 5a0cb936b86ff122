//! Alert rules evaluated in the background on deja's own metrics: every `[alerting] interval`
//! the counters are read, and each rule's value over its window is the change since the snapshot
//! that window ago. A rule POSTs its webhook when it starts firing and when it resolves, never
//! while it keeps firing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{AlertMetric, AlertRule, Comparison, Config};
use crate::metrics::Metrics;

/// Every series of one scrape: `name{labels}` → value, with labels parsed.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Snapshot {
    fn read(metrics: &Metrics) -> Self {
        let text = metrics.encode().unwrap_or_default();
        let mut series = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = name_labels.split_once('{').unwrap_or((name_labels, "}"));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            series.push((name.to_owned(), labels, value));
        }
        Self { series }
    }

    /// Sum of `name` over series whose labels pass `keep`.
    fn sum(&self, name: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| n == name && keep(labels))
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// The value of `rule` between `old` and `new`; `None` when nothing happened in the window.
fn value(rule: &AlertRule, old: &Snapshot, new: &Snapshot) -> Option<f64> {
    let on_route = |labels: &BTreeMap<String, String>| {
        rule.route
            .as_ref()
            .is_none_or(|r| labels.get("route") == Some(r))
    };
    let delta = |name: &str, keep: &dyn Fn(&BTreeMap<String, String>) -> bool| {
        new.sum(name, |l| on_route(l) && keep(l)) - old.sum(name, |l| on_route(l) && keep(l))
    };
    let ratio = |part: f64, whole: f64| (whole > 0.0).then(|| part / whole);
    let label_is = |key: &'static str, pred: fn(&str) -> bool| {
        move |l: &BTreeMap<String, String>| l.get(key).is_some_and(|v| pred(v))
    };
    match rule.metric {
        AlertMetric::ErrorRatio => ratio(
            delta(
                "deja_requests_total",
                &label_is("status", |s| s.starts_with('4') || s.starts_with('5')),
            ),
            delta("deja_requests_total", &|_| true),
        ),
        AlertMetric::HitRatio => ratio(
            delta(
                "deja_cache_lookups_total",
                &label_is("result", |r| r == "hit"),
            ),
            delta(
                "deja_cache_lookups_total",
                // A lookup in an empty partition is a miss too (it only skipped the embedding).
                &label_is("result", |r| r == "hit" || r == "miss" || r == "empty"),
            ),
        ),
        AlertMetric::Upstream429Ratio => ratio(
            delta(
                "deja_upstream_attempts_total",
                &label_is("outcome", |o| o == "429"),
            ),
            delta("deja_upstream_attempts_total", &|_| true),
        ),
        AlertMetric::FalseHitRatio => ratio(
            delta(
                "deja_semantic_verified_total",
                &label_is("result", |r| r == "disagree"),
            ),
            delta(
                "deja_semantic_verified_total",
                &label_is("result", |r| r == "agree" || r == "disagree"),
            ),
        ),
        AlertMetric::P95LatencyMs => {
            // Cumulative bucket counts in the window: the newer scrape's minus the older's.
            let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
            for (snapshot, sign) in [(new, 1.0), (old, -1.0)] {
                for (name, labels, v) in &snapshot.series {
                    if name == "deja_request_duration_seconds_bucket" && on_route(labels) {
                        let le = labels
                            .get("le")
                            .and_then(|l| l.parse::<f64>().ok())
                            .unwrap_or(f64::INFINITY);
                        *buckets.entry(le.to_bits()).or_default() += sign * v;
                    }
                }
            }
            let mut bounds: Vec<(f64, f64)> = buckets
                .into_iter()
                .map(|(b, c)| (f64::from_bits(b), c))
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = bounds.last().map_or(0.0, |b| b.1);
            // The upper bound of the bucket holding the 95th percentile, as Prometheus'
            // histogram_quantile would give without interpolating.
            (total > 0.0).then(|| {
                let bound = bounds
                    .iter()
                    .find(|(_, cumulative)| *cumulative >= 0.95 * total)
                    .map_or(f64::INFINITY, |b| b.0);
                bound * 1000.0
            })
        }
    }
}

/// Evaluates the rules until the process ends.
pub async fn run(config: Arc<Config>, metrics: Arc<Metrics>, client: reqwest::Client) {
    if config.alerts.is_empty() {
        return;
    }
    let interval = config.alerting.interval;
    let longest = config
        .alerts
        .iter()
        .map(|a| a.window)
        .max()
        .unwrap_or(interval);
    let mut history: VecDeque<(Instant, Snapshot)> = VecDeque::new();
    let mut firing = vec![false; config.alerts.len()];
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let snapshot = Snapshot::read(&metrics);
        history.push_back((now, snapshot.clone()));
        while history.len() > 2 && now.duration_since(history[1].0) >= longest + interval {
            history.pop_front();
        }
        for (i, rule) in config.alerts.iter().enumerate() {
            // The newest snapshot at least `window` old, else the oldest there is.
            let old = history
                .iter()
                .rev()
                .find(|(at, _)| now.duration_since(*at) >= rule.window)
                .or(history.front())
                .map(|(_, s)| s);
            let Some(value) = old.and_then(|old| value(rule, old, &snapshot)) else {
                continue;
            };
            let breaking = match rule.op {
                Comparison::Above => value > rule.threshold,
                Comparison::Below => value < rule.threshold,
            };
            if breaking != firing[i] {
                firing[i] = breaking;
                notify(&client, rule, breaking, value).await;
            }
        }
    }
}

async fn notify(client: &reqwest::Client, rule: &AlertRule, firing: bool, value: f64) {
    let status = if firing { "firing" } else { "resolved" };
    let body = json!({
        "alert": rule.name, "status": status, "metric": rule.metric,
        "route": rule.route, "value": value, "threshold": rule.threshold,
        "op": match rule.op { Comparison::Above => ">", Comparison::Below => "<" },
        "window_s": rule.window.as_secs_f64(), "at_ms": crate::clock::now_ms(),
    });
    let sent = client
        .post(secrecy::ExposeSecret::expose_secret(&rule.webhook))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(alert = %rule.name, status, value, "alert sent")
        }
        Ok(r) => {
            tracing::warn!(alert = %rule.name, status = r.status().as_u16(), "alert webhook refused")
        }
        Err(e) => tracing::warn!(alert = %rule.name, error = %e, "alert webhook unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(metric: AlertMetric, route: Option<&str>) -> AlertRule {
        AlertRule {
            name: "t".to_owned(),
            metric,
            route: route.map(str::to_owned),
            op: Comparison::Above,
            threshold: 0.0,
            window: Duration::from_secs(60),
            webhook: String::new().into(),
        }
    }

    fn requests(metrics: &Metrics, route: &str, n: usize, ms: u64, status: &'static str) {
        for _ in 0..n {
            metrics.request(route, status, "miss", Duration::from_millis(ms));
        }
    }

    #[test]
    fn p95_is_the_bucket_bound_holding_the_95th_percentile_of_the_window_only() {
        let metrics = Metrics::new();
        // Before the window: slow requests that must not count.
        requests(&metrics, "chat", 50, 5_000, "200");
        let old = Snapshot::read(&metrics);
        requests(&metrics, "chat", 94, 10, "200");
        requests(&metrics, "chat", 6, 2_000, "200");
        requests(&metrics, "other", 100, 30_000, "200");
        let new = Snapshot::read(&metrics);
        let on_chat = rule(AlertMetric::P95LatencyMs, Some("chat"));
        // 94 of 100 under 16 ms: the 95th is in the 2.048 s bucket.
        assert_eq!(value(&on_chat, &old, &new), Some(2048.0));

        let old = Snapshot::read(&metrics);
        requests(&metrics, "chat", 96, 10, "200");
        requests(&metrics, "chat", 4, 2_000, "200");
        let new = Snapshot::read(&metrics);
        assert_eq!(value(&on_chat, &old, &new), Some(16.0));
        // Nothing happened in a window: no value, so no alert either way.
        assert_eq!(value(&on_chat, &new, &new), None);
    }

    #[test]
    fn error_ratio_counts_4xx_and_5xx_on_the_rule_route() {
        let metrics = Metrics::new();
        let old = Snapshot::read(&metrics);
        requests(&metrics, "chat", 3, 1, "200");
        requests(&metrics, "chat", 1, 1, "503");
        requests(&metrics, "other", 4, 1, "500");
        let new = Snapshot::read(&metrics);
        let ratio = value(&rule(AlertMetric::ErrorRatio, Some("chat")), &old, &new);
        assert_eq!(ratio, Some(0.25));
        let all = value(&rule(AlertMetric::ErrorRatio, None), &old, &new);
        assert_eq!(all, Some(5.0 / 8.0));
    }
}
