//! Analytics over HTTP from a real request log: Portkey's graph endpoints (shape, units, filters,
//! errors) and deja's cache report with the real model (semantic hits, guard refusals, near
//! misses and the threshold in force).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, Reply, Upstream, client, config_with_mode, shared_embedder};
use deja::store::Store;
use deja::store::keys::Scope;
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    upstream: Upstream,
    admin: String,
    inference: String,
    _dir: tempfile::TempDir,
}

async fn setup(mode: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display());
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let (_, inference) = store.create_key("acme", Scope::Inference).await.unwrap();
    let upstream = Upstream::spawn().await;
    let config = config_with_mode(
        &upstream.url,
        mode,
        &format!("[store]\nurl = \"{url}\"\n{extra}"),
    );
    let gw = if mode == "semantic" {
        let gw = Gateway::spawn_with_embedder(config, shared_embedder()).await;
        common::wait_ready(&gw).await;
        gw
    } else {
        Gateway::spawn(config).await
    };
    Setup {
        gw,
        upstream,
        admin,
        inference,
        _dir: dir,
    }
}

async fn ask(s: &Setup, question: &str, headers: &[(&str, &str)]) -> String {
    let body =
        json!({"model": "yi-lightning", "messages": [{"role": "user", "content": question}]});
    let mut all = vec![("authorization", format!("Bearer {}", s.inference))];
    all.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::chat(&s.gw, &body, &all).await.1
}

async fn get(s: &Setup, path: &str, key: &str) -> (u16, Value) {
    let res = client()
        .get(format!("{}{path}", s.gw.url))
        .header("x-portkey-api-key", key)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// Waits for the asynchronous log writer to hold `n` rows.
async fn logged(s: &Setup, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let rows = get(s, "/v1/logs?limit=1000", &s.admin).await.1;
        if rows["data"].as_array().map_or(0, Vec::len) >= n {
            return rows;
        }
        assert!(Instant::now() < deadline, "{n} rows not logged: {rows}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn window() -> String {
    let now = std::time::SystemTime::now();
    let iso = |t| humantime::format_rfc3339_millis(t).to_string();
    format!(
        "time_of_generation_min={}&time_of_generation_max={}",
        iso(now - Duration::from_secs(3600)),
        iso(now + Duration::from_secs(60))
    )
}

#[tokio::test]
async fn portkey_graphs_come_from_the_request_log_in_portkey_shape() {
    let s = setup("simple", "").await;
    for _ in 0..3 {
        ask(&s, "what is deja?", &[]).await;
    }
    s.upstream.script([Reply::status(400)]);
    ask(&s, "a question the provider refuses", &[]).await;
    logged(&s, 4).await;
    let w = window();

    let (status, requests) = get(&s, &format!("/v1/analytics/graphs/requests?{w}"), &s.admin).await;
    assert_eq!(status, 200, "{requests}");
    assert_eq!(requests["object"], "analytics-graph");
    assert_eq!(
        requests["summary"],
        json!({"total": 4, "success": 3, "failed": 1})
    );
    let points = requests["data_points"].as_array().unwrap();
    assert_eq!(points.len(), 62, "one point a minute, empty ones included");
    let counted: u64 = points.iter().map(|p| p["total"].as_u64().unwrap()).sum();
    assert_eq!(counted, 4);
    assert!(points[0]["timestamp"].as_str().unwrap().ends_with('Z'));

    // The SDK's spelling and Portkey's reference spelling are the same graph.
    for path in ["cache-hit-rate", "cache/hit-rate"] {
        let (_, g) = get(&s, &format!("/v1/analytics/graphs/{path}?{w}"), &s.admin).await;
        assert_eq!(g["summary"]["hits"], 2, "{g}");
        // The refused question was a miss too: the cache was asked and could not answer.
        assert_eq!(g["summary"]["misses"], 2, "{g}");
        assert_eq!(g["summary"]["rate"], 50.0, "{g}");
    }
    let (_, tokens) = get(&s, &format!("/v1/analytics/graphs/tokens?{w}"), &s.admin).await;
    assert_eq!(
        tokens["summary"],
        json!({"total": 30, "prompt": 15, "completion": 15})
    );
    let (_, rate) = get(
        &s,
        &format!("/v1/analytics/graphs/errors-rate?{w}"),
        &s.admin,
    )
    .await;
    assert_eq!(rate["summary"]["rate"], 25.0);
    let (_, cost) = get(&s, &format!("/v1/analytics/graphs/cost?{w}"), &s.admin).await;
    // One paid miss of 10 tokens of yi-lightning at $0.14 per million, in cents.
    assert!(
        (cost["summary"]["total"].as_f64().unwrap() - 0.0001).abs() < 1e-9,
        "{cost}"
    );
    for graph in [
        "latency",
        "errors",
        "cache-latency",
        "errors/rate",
        "cache/latency",
    ] {
        let (status, g) = get(&s, &format!("/v1/analytics/graphs/{graph}?{w}"), &s.admin).await;
        assert_eq!(
            (status, g["object"].as_str()),
            (200, Some("analytics-graph")),
            "{graph}: {g}"
        );
    }
    let (_, summary) = get(&s, &format!("/v1/analytics/summary/cache?{w}"), &s.admin).await;
    assert_eq!(summary["summary"]["tokens_saved"], 20, "{summary}");

    // Filters narrow the rows.
    let (_, only_hits) = get(
        &s,
        &format!("/v1/analytics/graphs/requests?{w}&cache_status=HIT"),
        &s.admin,
    )
    .await;
    assert_eq!(only_hits["summary"]["total"], 2);
    let (_, refused) = get(
        &s,
        &format!("/v1/analytics/graphs/requests?{w}&status_code=400,503"),
        &s.admin,
    )
    .await;
    assert_eq!(refused["summary"]["total"], 1);

    // Bad calls say what is wrong.
    let (status, e) = get(&s, "/v1/analytics/graphs/requests", &s.admin).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time_of_generation_min"),
        "{e}"
    );
    let (status, e) = get(
        &s,
        &format!("/v1/analytics/graphs/requests?{w}&metadata=%7B%7D"),
        &s.admin,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("metadata"),
        "{e}"
    );
    let (status, e) = get(&s, &format!("/v1/analytics/graphs/users?{w}"), &s.admin).await;
    assert_eq!(status, 404);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cache-hit-rate"),
        "{e}"
    );
    let (status, _) = get(
        &s,
        &format!("/v1/analytics/graphs/requests?{w}"),
        &s.inference,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_cache_report_shows_hits_refusals_near_misses_and_the_threshold() {
    let s = setup(
        "semantic",
        "[[routes]]\nname = \"support\"\nmodels = [\"yi-*\"]\n[routes.cache]\nsimilarity_threshold = 0.94\n",
    )
    .await;
    let asked = [
        "What is an AI gateway?",
        "What's an AI gateway?", // a semantic hit
        "How many refunds did we process in 2023?",
        "How many refunds did we process in 2024?", // 0.948: over, refused by `numbers`
        "How do I cancel my subscription?",
        "I want to stop my subscription.", // 0.914: a near miss under 0.94
        "How do I reset my password?",
        "How can I change my password?", // 0.960: over, refused by `content`
    ];
    let mut statuses = Vec::new();
    for q in asked {
        statuses.push(ask(&s, q, &[]).await);
    }
    assert_eq!(&statuses[..4], ["MISS", "SEMANTIC HIT", "MISS", "MISS"]);
    let rows = logged(&s, asked.len()).await;
    let (status, report) = get(&s, "/v1/analytics/cache?window=10m&buckets=10", &s.admin).await;
    assert_eq!(status, 200, "{report}");
    let r = &report["routes"][0];
    assert_eq!(
        (r["route"].as_str(), r["threshold"].as_f64()),
        (Some("support"), Some(f64::from(0.94f32)))
    );
    assert_eq!(r["requests"], asked.len());
    assert_eq!(
        r["guard_refusals"]["numbers"], 1,
        "2023 vs 2024 is refused by the numbers guard"
    );
    let sum = |key: &str| -> u64 {
        r["similarity"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(r["guard_refusals"]["content"], 1, "reset vs change");
    assert_eq!(sum("hits"), 1);
    assert_eq!(sum("refused"), 2);
    // Every miss that had a stored question to compare with has its nearest similarity logged.
    let data = rows["data"].as_array().unwrap();
    let with_nearest: Vec<f64> = data
        .iter()
        .filter(|row| row["cache_status"] == "miss" && row["guard"] == "")
        .filter_map(|row| row["nearest"].as_f64())
        .collect();
    assert_eq!(sum("misses"), with_nearest.len() as u64);
    let near = with_nearest
        .iter()
        .filter(|s| (0.91..0.94).contains(*s))
        .count();
    assert_eq!(r["near_misses"]["count"], near);
    assert_eq!(near, 1, "the subscription pair: {with_nearest:?}");
    assert_eq!(r["series"].as_array().unwrap().len(), 10);
    let served: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(served, asked.len() as u64);
}
