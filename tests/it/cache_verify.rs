//! Online verification of semantic hits, with the real model, a real (private) Redis and the
//! upstream stand-in: a sampled hit is asked upstream again after the client has its answer, the
//! two answers are compared, the result is counted per route, and the budget bounds the calls.

use crate::common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{
    Gateway, Reply, Upstream, cache_of, config_with_mode, metric, question, until_metric,
};

/// A semantic gateway on the shared model and `redis` that verifies `rate` of its hits, at most
/// `budget` a second.
async fn verifying_gateway(
    upstream: &Upstream,
    redis: &RedisServer,
    rate: f64,
    budget: f64,
) -> Gateway {
    let extra = format!(
        "{}[[routes]]\nname = \"default\"\n[routes.cache]\nverify_sample_rate = {rate}\n",
        common::redis_section(&redis.url, None)
    );
    let mut config = config_with_mode(&upstream.url, "semantic", &extra);
    config.cache.verify_max_per_second = budget;
    Gateway::spawn_sharing_model(config).await
}

/// Waits until `expected` verifications ended in `result`, and checks there are no more.
async fn verified(gw: &Gateway, result: &str, expected: f64) {
    let labels = [("route", "default"), ("result", result)];
    until_metric(gw, "deja_semantic_verified_total", &labels, expected).await;
    let metrics = gw.scrape_metrics().await;
    assert_eq!(
        metric(&metrics, "deja_semantic_verified_total", &labels),
        Some(expected),
        "{result}"
    );
}

#[tokio::test]
async fn sampled_hits_are_checked_against_a_fresh_answer() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = verifying_gateway(&upstream, &redis, 1.0, 100.0).await;
    let paris = "The capital of France is Paris, on the Seine.";
    upstream.script([
        Reply::answer(paris),
        Reply::answer("Paris is the capital of France, on the Seine."),
    ]);
    assert_eq!(
        cache_of(&gw, "What is the capital of France?").await,
        "MISS"
    );
    let hit = common::ask(&gw, &question("What's the capital of France?"), &[]).await;
    assert_eq!(hit.cache(), "SEMANTIC HIT");
    assert_eq!(hit.content(), paris, "the client gets the cached answer");
    verified(&gw, "agree", 1.0).await;

    let refund = "Refunds reach your card within 5 to 7 business days.";
    let other = "Bananas are a good source of potassium and are best stored at room temperature.";
    upstream.script([Reply::answer(refund), Reply::answer(other)]);
    assert_eq!(cache_of(&gw, "How long does a refund take?").await, "MISS");
    assert_eq!(
        cache_of(&gw, "how long does a refund take").await,
        "SEMANTIC HIT"
    );
    verified(&gw, "disagree", 1.0).await;
    assert_eq!(upstream.calls(), 4, "two answers and two verifications");
    let verification = &upstream.received()[3];
    let sent: serde_json::Value = serde_json::from_slice(&verification.body).unwrap();
    assert_eq!(
        sent["messages"][0]["content"],
        "how long does a refund take"
    );
}

#[tokio::test]
async fn the_budget_bounds_verification_calls_and_rate_0_makes_none() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = verifying_gateway(&upstream, &redis, 1.0, 0.5).await;
    assert_eq!(cache_of(&gw, "What is an AI gateway?").await, "MISS");
    for _ in 0..4 {
        assert_eq!(cache_of(&gw, "What's an AI gateway?").await, "SEMANTIC HIT");
    }
    verified(&gw, "agree", 1.0).await;
    verified(&gw, "skipped", 3.0).await;
    assert_eq!(
        upstream.calls(),
        2,
        "one answer, one verification within the budget"
    );

    let upstream = Upstream::spawn().await;
    let gw = verifying_gateway(&upstream, &redis, 0.0, 100.0).await;
    cache_of(&gw, "How do I reset my password?").await;
    for _ in 0..3 {
        assert_eq!(
            cache_of(&gw, "How can I reset my password?").await,
            "SEMANTIC HIT"
        );
    }
    // A claim that something does not happen, so nothing to wait for: give a verification that
    // should not exist the time one takes (well under 200 ms above) to reach the upstream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.calls(), 1, "sample rate 0: no verification");
}
