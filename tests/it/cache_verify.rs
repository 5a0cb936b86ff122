//! Online verification of semantic hits, with the real model, a real (private) Redis and the
//! upstream stand-in: a sampled hit is asked upstream again after the client has its answer, the
//! two answers are compared, the result is counted per route, and the budget bounds the calls.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Gateway, Reply, Upstream, config_with_mode, metric, shared_embedder};
use serde_json::json;

fn answer(text: &str) -> Reply {
    let body = json!({"id": "chatcmpl-v", "object": "chat.completion", "created": 1, "model": "yi-lightning",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 20}});
    Reply {
        status: 200,
        body: body.to_string(),
        ..Reply::default()
    }
}

async fn gateway(upstream: &Upstream, redis: &RedisServer, rate: f64, budget: f64) -> Gateway {
    let extra = format!(
        "[redis]\nurl = \"{}\"\n[[routes]]\nname = \"default\"\n[routes.cache]\nverify_sample_rate = {rate}\n",
        redis.url
    );
    let mut config = config_with_mode(&upstream.url, "semantic", &extra);
    config.cache.verify_max_per_second = budget;
    let gw = Gateway::spawn_with_embedder(config, shared_embedder()).await;
    common::wait_ready(&gw).await;
    gw
}

fn ask(question: &str) -> serde_json::Value {
    json!({"model": "yi-lightning", "messages": [{"role": "user", "content": question}]})
}

async fn verified(gw: &Gateway, result: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gw.scrape_metrics().await;
        let labels = [("route", "default"), ("result", result)];
        let got = metric(&metrics, "deja_semantic_verified_total", &labels).unwrap_or(0.0);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{result}: {got}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sampled_hits_are_checked_against_a_fresh_answer() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, 1.0, 100.0).await;
    let paris = "The capital of France is Paris, on the Seine.";
    upstream.script([
        answer(paris),
        answer("Paris is the capital of France, on the Seine."),
    ]);
    assert_eq!(
        common::chat(&gw, &ask("What is the capital of France?"), &[])
            .await
            .1,
        "MISS"
    );
    let (_, cache, _, body) = common::chat(&gw, &ask("What's the capital of France?"), &[]).await;
    assert_eq!(cache, "SEMANTIC HIT");
    assert!(body.contains(paris), "the client gets the cached answer");
    verified(&gw, "agree", 1.0).await;

    let refund = "Refunds reach your card within 5 to 7 business days.";
    let other = "Bananas are a good source of potassium and are best stored at room temperature.";
    upstream.script([answer(refund), answer(other)]);
    assert_eq!(
        common::chat(&gw, &ask("How long does a refund take?"), &[])
            .await
            .1,
        "MISS"
    );
    let hit = common::chat(&gw, &ask("How long does a refund take to arrive?"), &[]).await;
    assert_eq!(hit.1, "SEMANTIC HIT");
    verified(&gw, "disagree", 1.0).await;
    assert_eq!(upstream.calls(), 4, "two answers and two verifications");
    let verification = &upstream.received()[3];
    let sent: serde_json::Value = serde_json::from_slice(&verification.body).unwrap();
    assert_eq!(
        sent["messages"][0]["content"],
        "How long does a refund take to arrive?"
    );
}

#[tokio::test]
async fn the_budget_bounds_verification_calls_and_rate_0_makes_none() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, 1.0, 0.5).await;
    assert_eq!(
        common::chat(&gw, &ask("What is an AI gateway?"), &[])
            .await
            .1,
        "MISS"
    );
    for _ in 0..4 {
        assert_eq!(
            common::chat(&gw, &ask("What's an AI gateway?"), &[])
                .await
                .1,
            "SEMANTIC HIT"
        );
    }
    verified(&gw, "agree", 1.0).await;
    verified(&gw, "skipped", 3.0).await;
    assert_eq!(
        upstream.calls(),
        2,
        "one answer, one verification within the budget"
    );

    let upstream = Upstream::spawn().await;
    let gw = gateway(&upstream, &redis, 0.0, 100.0).await;
    common::chat(&gw, &ask("How do I reset my password?"), &[]).await;
    for _ in 0..3 {
        assert_eq!(
            common::chat(&gw, &ask("How can I reset my password?"), &[])
                .await
                .1,
            "SEMANTIC HIT"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.calls(), 1, "sample rate 0: no verification");
}
