//! A Redis that dies under a gateway costs hit rate, never capacity: after a few failures its
//! breaker opens and the cache is bypassed without asking Redis (no request waits out the
//! timeout again), `/readyz` and the metrics say so, and once a probe finds Redis back the cache
//! serves again. No answer is served to the wrong question across the flips.

use std::time::Duration;

use serde_json::json;

use crate::common::redis::RedisServer;
use crate::common::{
    Gateway, Reply, Upstream, ask, config, metric, question, readiness, until_metric,
    until_redis_ok,
};

fn lookups(text: &str, result: &str) -> f64 {
    let labels = [("route", "default"), ("tier", "exact"), ("result", result)];
    metric(text, "deja_cache_lookups_total", &labels).unwrap_or(0.0)
}

/// Asks `text` and checks the answer is this question's own (the stand-in echoes it).
async fn asked(gw: &Gateway, text: &str) -> String {
    let reply = ask(gw, &question(text), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content(), format!("echo: {text}"), "a wrong answer");
    reply.cache().to_owned()
}

#[tokio::test]
async fn a_dead_redis_is_bypassed_at_once_and_used_again_when_it_answers() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::spawn().await;
    upstream.script(std::iter::repeat_n(Reply::echo(), 100));
    let extra = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"300ms\"\nbreaker_failures = 3\nprobe_interval = \"50ms\"\n",
        redis.url
    );
    let gw = Gateway::spawn(config(&upstream.url, &extra)).await;
    assert_eq!(asked(&gw, "before the outage").await, "MISS");
    assert_eq!(asked(&gw, "before the outage").await, "HIT");

    redis.stop();
    // The first failures are waited out (each at most the timeout), then the breaker opens.
    for i in 0..3 {
        assert_eq!(asked(&gw, &format!("while it dies {i}")).await, "MISS");
    }
    until_metric(&gw, "deja_redis_breaker_open", &[], 1.0).await;
    let (status, checks) = readiness(&gw).await;
    assert_eq!(
        (status, &checks["status"]),
        (200, &json!("degraded")),
        "{checks}"
    );
    assert_eq!(checks["checks"]["redis"], "bypassed: breaker open, probing");

    // Open: lookups are bypassed, not tried (a try would end as an error after the timeout).
    let before = gw.scrape_metrics().await;
    for i in 0..5 {
        assert_eq!(asked(&gw, &format!("while it is down {i}")).await, "MISS");
    }
    let after = gw.scrape_metrics().await;
    assert_eq!(
        lookups(&after, "bypassed") - lookups(&before, "bypassed"),
        5.0,
        "{after}"
    );
    assert_eq!(
        lookups(&after, "error"),
        lookups(&before, "error"),
        "Redis was not asked"
    );
    let writes = [
        ("route", "default"),
        ("tier", "exact"),
        ("result", "bypassed"),
    ];
    assert!(metric(&after, "deja_cache_writes_total", &writes).unwrap_or(0.0) >= 5.0);

    // Back: the probe closes the breaker and the cache serves again.
    redis.restart();
    until_redis_ok(&gw, "the breaker to close", Duration::from_secs(5)).await;
    let text = gw.scrape_metrics().await;
    assert_eq!(metric(&text, "deja_redis_breaker_open", &[]), Some(0.0));
    assert_eq!(
        metric(&text, "deja_redis_breaker_opened_total", &[]),
        Some(1.0)
    );
    assert_eq!(asked(&gw, "after the outage").await, "MISS");
    assert_eq!(asked(&gw, "after the outage").await, "HIT");
    // Nothing from the outage was stored under another question's key.
    assert_eq!(asked(&gw, "while it is down 0").await, "MISS");
}
