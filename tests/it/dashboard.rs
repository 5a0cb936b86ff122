//! The Grafana dashboard beside `docker-compose.yml` queries only metrics deja really exports:
//! every `deja_*` name in its PromQL (with Prometheus' `_total`, `_bucket`, `_sum`, `_count`
//! suffixes) is a family in a live gateway's `/metrics`, and every label it groups or filters by
//! is one that family carries.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Gateway, Upstream, ask, config, question};
use serde_json::Value;

fn queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("grafana/dashboards/deja.json").unwrap())
            .unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// `deja_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("deja_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// Family name → label names seen, from the text exposition.
fn families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.entry(rest.split(' ').next().unwrap().to_owned())
                .or_default();
        } else if !line.starts_with('#') {
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = out
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned();
            if let Some(family) = family {
                let names = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, _)| k.to_owned());
                out.get_mut(&family).unwrap().extend(names);
            }
        }
    }
    out
}

/// Labels in `by (...)` and `{label="..."}` of an expression, minus `le`.
fn used_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for group in expr.split("by (").skip(1) {
        out.extend(
            group
                .split(')')
                .next()
                .unwrap()
                .split(',')
                .map(|l| l.trim().to_owned()),
        );
    }
    for selector in expr.split('{').skip(1) {
        let inner = selector.split('}').next().unwrap();
        out.extend(
            inner
                .split(',')
                .filter_map(|p| p.split(['=', '!']).next())
                .map(|l| l.trim().to_owned()),
        );
    }
    out.remove("le");
    out.retain(|l| !l.is_empty());
    out
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    for _ in 0..2 {
        ask(&gw, &question("fill the metrics"), &[]).await;
    }
    let exported = families(&gw.scrape_metrics().await);
    let queries = queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no deja metric in `{expr}`");
        for name in names {
            // The series name Prometheus sees for each registered family and type.
            let family = deja::metrics::ALL
                .iter()
                .find(|(family, kind)| match *kind {
                    "counter" => name == format!("{family}_total"),
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{family}{s}")),
                    _ => name == *family,
                })
                .map(|(family, _)| *family)
                .unwrap_or_else(|| panic!("`{name}` in `{expr}` is not a series deja exports"));
            let empty = BTreeSet::new();
            let labels = exported.get(family).unwrap_or(&empty);
            // Labels the query groups or filters by must be the family's own (checked where
            // traffic has produced samples; `le` is the histogram's).
            if !labels.is_empty() {
                for label in used_labels(expr) {
                    assert!(
                        labels.contains(&label),
                        "`{expr}` uses label `{label}` that `{family}` lacks ({labels:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn the_scrape_config_points_at_deja() {
    let text = std::fs::read_to_string("prometheus.yml").unwrap();
    assert!(text.contains("targets: [\"deja:8080\"]") && text.contains("metrics_path: /metrics"));
}
