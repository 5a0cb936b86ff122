//! `/metrics` after real traffic: names, labels and counts an operator relies on.

use crate::common;

use common::{Gateway, Reply, Upstream, ask, client, config, metric, question};

#[tokio::test]
async fn metrics_count_requests_attempts_retries_and_latency() {
    let upstream = Upstream::spawn().await;
    let policy = "[[routes]]\nname = \"yi\"\nmodels = [\"yi-*\"]\n[routes.retry]\nattempts = 2\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\n";
    let gw = Gateway::spawn(config(&upstream.url, policy)).await;
    upstream.script([
        Reply::status(503),
        Reply::ok(),
        Reply::ok(),
        Reply::status(429),
        Reply::status(429),
        Reply::status(429),
    ]);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let res = ask(&gw, &question(&format!("question {i}")), &[]).await;
        statuses.push(res.status);
    }
    assert_eq!(statuses, vec![200, 200, 429]);

    let res = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    let get = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    assert_eq!(
        get("deja_requests_total", &[("route", "yi"), ("status", "200")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        get("deja_requests_total", &[("route", "yi"), ("status", "429")]),
        Some(1.0)
    );
    assert_eq!(
        get(
            "deja_upstream_attempts_total",
            &[("route", "yi"), ("outcome", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            "deja_upstream_attempts_total",
            &[("route", "yi"), ("outcome", "503")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "deja_upstream_attempts_total",
            &[("route", "yi"), ("outcome", "429")]
        ),
        Some(3.0)
    );
    assert_eq!(
        get("deja_upstream_retries_total", &[("route", "yi")]),
        Some(3.0)
    );
    assert_eq!(
        get(
            "deja_request_duration_seconds_count",
            &[("route", "yi"), ("cache", "miss")]
        ),
        Some(3.0)
    );
    let lookups = [("route", "yi"), ("tier", "exact"), ("result", "miss")];
    assert_eq!(get("deja_cache_lookups_total", &lookups), Some(3.0));
    let stored = [("route", "yi"), ("tier", "exact"), ("result", "stored")];
    assert_eq!(
        get("deja_cache_writes_total", &stored),
        Some(2.0),
        "the 429 is not stored"
    );
    assert!(get("deja_request_duration_seconds_sum", &[("route", "yi")]).unwrap() > 0.0);
    assert!(
        text.contains("deja_request_duration_seconds_bucket{"),
        "histogram buckets exposed"
    );
    assert!(!text.contains("sk-provider-test"), "no secret in metrics");
}
