//! Analytics over HTTP from a real request log: Portkey's graph endpoints (shape, units, filters,
//! errors) and deja's cache report with the real model (semantic hits, guard refusals, near
//! misses and the threshold in force).

use crate::common;

use std::time::Duration;

use common::{Endpoint, Gateway, Reply, Upstream, config_with_mode, question};
use deja::store::Store;
use deja::store::keys::Scope;
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    store: Store,
    upstream: Upstream,
    admin: String,
    inference: String,
    _dir: tempfile::TempDir,
}

async fn setup(mode: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let (_, inference) = store.create_key("acme", Scope::Inference).await.unwrap();
    let upstream = Upstream::spawn().await;
    let config = config_with_mode(
        &upstream.url,
        mode,
        &format!("[store]\nurl = \"{url}\"\n{extra}"),
    );
    let gw = Gateway::spawn_sharing_model(config).await;
    Setup {
        gw,
        store,
        upstream,
        admin,
        inference,
        _dir: dir,
    }
}

impl Endpoint for Setup {
    fn base_url(&self) -> &str {
        &self.gw.url
    }
}

/// Asks `text` with acme's inference key; the cache status.
async fn ask_as_acme(s: &Setup, text: &str) -> String {
    let bearer = format!("Bearer {}", s.inference);
    let reply = common::ask(s, &question(text), &[("authorization", &bearer)]).await;
    reply.cache().to_owned()
}

/// `GET path` as `key`.
async fn get(s: &Setup, path: &str, key: &str) -> (u16, Value) {
    common::call(s, http::Method::GET, path, Some(key), None).await
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
        ask_as_acme(&s, "what is deja?").await;
    }
    s.upstream.script([Reply::status(400)]);
    ask_as_acme(&s, "a question the provider refuses").await;
    common::until_logged(&s, &s.admin, 4).await;
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
        json!({"total": 30, "prompt": 15, "completion": 15, "judge": 0})
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
    // The guards' path (no verifier weights): its refusals have word-rule reasons this report
    // groups by, and its threshold decides alone.
    let s = setup(
        "semantic",
        "[embedding]\nverifier = \"models/verifier/none.json\"\n[[routes]]\nname = \"support\"\nmodels = [\"yi-*\"]\n[routes.cache]\nsimilarity_threshold = 0.94\n",
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
        statuses.push(ask_as_acme(&s, q).await);
    }
    assert_eq!(&statuses[..4], ["MISS", "SEMANTIC HIT", "MISS", "MISS"]);
    let rows = common::until_logged(&s, &s.admin, asked.len()).await;
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

/// What the grey zone's judge cost shows in the log row, the cache report, the summary and the
/// cost and token graphs: a judge the route runs is paid for, and a hit it let through is not
/// free.
#[tokio::test]
async fn the_judges_calls_are_costed_in_the_log_and_analytics() {
    let s = setup(
        "semantic",
        "[[routes]]\nname = \"support\"\nmodels = [\"yi-*\"]\n[routes.cache.judge]\nenabled = true\nmodel = \"yi-large\"\nmax_per_second = 100\n",
    )
    .await;
    s.upstream.script([
        Reply::answer("Students get 20% off with a valid student ID."),
        Reply::answer("Yes."),
    ]);
    // The same grey-zone pair as the judge's own tests (refused at 0.01, served at 0.10).
    assert_eq!(
        ask_as_acme(&s, "Is there a student discount?").await,
        "MISS"
    );
    assert_eq!(
        ask_as_acme(&s, "Do students get a discount?").await,
        "SEMANTIC HIT"
    );
    let rows = common::until_logged(&s, &s.admin, 2).await;
    let judged: Vec<&Value> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["judge_model"] != "")
        .collect();
    assert_eq!(judged.len(), 1, "{rows}");
    assert_eq!(judged[0]["cache_status"], "semantic_hit");
    assert_eq!(judged[0]["judge_model"], "yi-large");
    // The stand-in's usage says 10 tokens a call.
    assert_eq!(judged[0]["judge_tokens"], 10);
    assert!(judged[0]["judge_ms"].as_f64().unwrap() > 0.0);

    let (_, report) = get(&s, "/v1/analytics/cache?window=10m&buckets=2", &s.admin).await;
    let judge = &report["routes"][0]["judge"];
    assert_eq!(
        (judge["calls"].as_u64(), judge["tokens"].as_i64()),
        (Some(1), Some(10))
    );
    // yi-large at $2.80 a million tokens.
    let usd = judge["cost_usd"].as_f64().unwrap();
    assert!((usd - 10.0 * 2.80 / 1e6).abs() < 1e-12, "{judge}");
    assert_eq!(judge["latency"]["count"], 1);

    let w = window();
    let (_, summary) = get(&s, &format!("/v1/analytics/summary/cache?{w}"), &s.admin).await;
    let summary = &summary["summary"];
    assert_eq!(
        (
            summary["judge_calls"].as_u64(),
            summary["judge_tokens"].as_i64()
        ),
        (Some(1), Some(10))
    );
    let (_, tokens) = get(&s, &format!("/v1/analytics/graphs/tokens?{w}"), &s.admin).await;
    assert_eq!(tokens["summary"]["judge"], 10, "{tokens}");
    // The miss paid its answer (10 tokens of yi-lightning at $0.14), the hit only its judge.
    let (_, cost) = get(&s, &format!("/v1/analytics/graphs/cost?{w}"), &s.admin).await;
    let cents = cost["summary"]["total"].as_f64().unwrap();
    let expected: f64 = (10.0 * 0.14 / 1e6 + 10.0 * 2.80 / 1e6) * 100.0;
    assert!(
        (cents - (expected * 1e4).round() / 1e4).abs() < 1e-9,
        "{cost}"
    );
}

/// `/dashboard` in headless Chromium after real traffic: every chart drew data (counted by the
/// page and by pixels of the series' colours), the threshold is marked, nothing was fetched from
/// elsewhere, and a new request appears without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_every_chart_in_chromium_and_refreshes_live() {
    assert!(
        std::path::Path::new("tests/sdk/node/node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/test.sh (or tests/sdk/setup.sh)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test.sh (it installs Debian's chromium)"
    );
    let s = setup(
        "semantic",
        "[[routes]]\nname = \"support\"\nmodels = [\"yi-*\"]\n[routes.cache]\nsimilarity_threshold = 0.94\n\
         [routes.retry]\nattempts = 2\nbase_delay = \"10ms\"\n",
    )
    .await;
    s.upstream.script([Reply::status(503), Reply::ok()]);
    for q in [
        "What is an AI gateway?", // retried once, then a miss
        "What's an AI gateway?",  // semantic hit
        "What is an AI gateway?", // exact hit
        "How many refunds did we process in 2023?",
        "How many refunds did we process in 2024?", // refused by `numbers`
        "How do I cancel my subscription?",
        "I want to stop my subscription.", // near miss
    ] {
        ask_as_acme(&s, q).await;
    }
    s.upstream.script([Reply::status(400)]);
    ask_as_acme(&s, "a question the provider refuses").await;
    common::until_logged(&s, &s.admin, 8).await;
    // A second route with an hour behind it, written to the same database as an earlier run
    // would have: the charts must draw lines across the time axis, not single points.
    s.store.insert_logs(&history()).await.unwrap();

    let shot = tempfile::tempdir().unwrap();
    let path = shot.path().join("dashboard.png");
    let args = [
        s.gw.url.clone(),
        s.admin.clone(),
        s.inference.clone(),
        path.display().to_string(),
    ];
    let seen =
        common::node_script("dashboard.mjs", args.to_vec(), &[("CHROMIUM", &chromium)]).await;
    assert_eq!(seen["errors"], json!([]), "{seen}");
    assert_eq!(seen["requestsOutside"], json!([]), "only deja was asked");
    assert_eq!(
        seen["keyLeftInUrl"], false,
        "the key is moved out of the URL"
    );
    // The request log view lists this tenant's requests with their cache status, filters them,
    // and opens one.
    let log = &seen["log"];
    let caches: Vec<&str> = log["cache"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for status in ["HIT", "SEMANTIC HIT", "MISS"] {
        assert!(caches.contains(&status), "{status} in {log}");
    }
    assert!(
        log["status"].as_array().unwrap().iter().any(|s| s == "400"),
        "{log}"
    );
    // A row answered by the provider names it (the stand-in's host); one from the cache, none.
    let targets = log["target"].as_array().unwrap();
    assert!(targets.iter().any(|t| t == "127.0.0.1"), "{log}");
    assert!(targets.iter().any(|t| t == ""), "{log}");
    let semantic = log["semantic"].as_array().unwrap();
    assert!(
        !semantic.is_empty() && semantic.iter().all(|c| c == "SEMANTIC HIT"),
        "{log}"
    );
    let similarity: f64 = log["similarity"][0].as_str().unwrap().parse().unwrap();
    assert!((0.9..=1.0).contains(&similarity), "{log}");
    let opened = log["opened"].as_str().unwrap();
    assert!(
        opened.contains("What's an AI gateway?") || opened.contains("not kept"),
        "{opened}"
    );

    let named = |at: &str, name: &str| -> Value {
        let routes = seen[at].as_array().unwrap();
        let found = routes.iter().find(|r| r["route"] == name);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {seen}"))
    };
    let route = &named("first", "support");
    assert_eq!(route["kpis"]["requests"], "8");
    assert_eq!(route["kpis"]["guard refusals"], "1");
    let charts = &route["charts"];
    let series = [
        ("hits", &["hit", "sem"][..]),
        ("latency", &["hit", "miss"]),
        ("savings", &["hit"]),
        ("errors", &["err", "retry"]),
        ("similarity", &["sem", "miss", "err"]),
    ];
    let inked = |c: &Value, colour: &str| c["inked"][colour].as_u64().unwrap();
    // This route's traffic took seconds, so one time bucket: each chart drew its points (dots
    // may cover each other), i.e. more pixels of its colours than the 10x10 legend swatches.
    for (chart, colours) in series {
        let c = &charts[chart];
        assert!(
            c["points"].as_u64().unwrap() >= 1,
            "{chart} drew no data: {c}"
        );
        let drawn: u64 = colours.iter().map(|colour| inked(c, colour)).sum();
        assert!(
            drawn > 100 * colours.len() as u64 + 10,
            "{chart} drew no data: {c}"
        );
    }
    // The route with an hour behind it: every series is a line across the time axis.
    let faq = &named("first", "faq")["charts"];
    for (chart, colours) in &series[..4] {
        let c = &faq[*chart];
        assert!(
            c["points"].as_u64().unwrap() >= 25,
            "{chart} across the hour: {c}"
        );
        for colour in *colours {
            assert!(inked(c, colour) > 300, "{chart} drew no {colour} line: {c}");
        }
    }
    let similarity = &charts["similarity"];
    assert!(similarity["points"].as_u64().unwrap() >= 3, "{similarity}");
    assert!(
        similarity["inked"]["threshold"].as_u64().unwrap() > 50,
        "{similarity}"
    );
    let threshold: f64 = similarity["threshold"].as_str().unwrap().parse().unwrap();
    assert!((threshold - 0.94).abs() < 1e-6);

    assert_eq!(seen["liveStatus"], 200);
    assert_eq!(
        named("after", "support")["kpis"]["requests"],
        "9",
        "refreshed without a reload"
    );
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );
    // `DEJA_DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps the README's picture current.
    if let Ok(keep) = std::env::var("DEJA_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&path, keep).unwrap();
    }
}

/// An hour of a busy `faq` route, one bucket of rows every 30 s: hits climbing as the cache
/// fills, misses near a second, a few errors, retries, refusals and near misses.
fn history() -> Vec<deja::store::logs::LogRecord> {
    use deja::store::logs::LogRecord;
    let now = deja::store::now_ms();
    let mut seed: u64 = 7;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut rows = Vec::new();
    for step in 0..110 {
        let at = now - 3_300_000 + step * 30_000;
        let warm = step as f64 / 110.0;
        for i in 0..6 {
            let roll = next();
            let (cache, latency, similarity, nearest, guard) = if roll < 0.25 + 0.35 * warm {
                ("hit", 1.0 + 3.0 * next(), None, None, "")
            } else if roll < 0.40 + 0.45 * warm {
                (
                    "semantic_hit",
                    6.0 + 4.0 * next(),
                    Some(0.94 + 0.06 * next()),
                    None,
                    "",
                )
            } else if roll < 0.45 + 0.45 * warm {
                (
                    "miss",
                    700.0 + 600.0 * next(),
                    None,
                    Some(0.94 + 0.05 * next()),
                    "numbers",
                )
            } else {
                (
                    "miss",
                    700.0 + 900.0 * next(),
                    None,
                    Some(0.80 + 0.14 * next()),
                    "",
                )
            };
            let failed = next() < 0.03;
            rows.push(LogRecord {
                id: format!("h{step}-{i}"),
                at,
                endpoint: "chat.completions".to_owned(),
                route: "faq".to_owned(),
                // The dashboard shows its admin's tenant only.
                tenant: "acme".to_owned(),
                model: "yi-lightning".to_owned(),
                cache_status: cache.to_owned(),
                similarity,
                nearest,
                guard: guard.to_owned(),
                attempts: if next() < 0.05 { 2 } else { 1 },
                status: if failed { 503 } else { 200 },
                latency_ms: latency,
                tokens: 1_500,
                ..LogRecord::default()
            });
        }
    }
    rows
}
