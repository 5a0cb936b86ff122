//! The exact tier end to end: real Redis (a private redis-server), the in-process fallback,
//! isolation, TTL, force refresh, what is never stored, single flight, and Redis failures.

use crate::common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{ChatReply, Gateway, Reply, Upstream, ask, config, eventually, redis_section};
use serde_json::{Value, json};

struct Rig {
    upstream: Upstream,
    gw: Gateway,
    redis: Option<RedisServer>,
}

async fn rig(with_redis: bool, extra: &str) -> Rig {
    let upstream = Upstream::spawn().await;
    let redis = with_redis.then(RedisServer::start);
    let redis_toml = redis
        .as_ref()
        // Not deja's 50ms default: on a busy machine a write-back that slow is dropped, and the
        // next identical request misses.
        .map(|r| redis_section(&r.url, Some("200ms")))
        .unwrap_or_default();
    let gw = Gateway::spawn(config(&upstream.url, &format!("{redis_toml}{extra}"))).await;
    Rig {
        upstream,
        gw,
        redis,
    }
}

/// `question` after a system prompt, at a set temperature.
fn brief(question: &str) -> Value {
    json!({
        "model": "yi-lightning",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question}
        ]
    })
}

async fn identical_question_hits(with_redis: bool) {
    let r = rig(with_redis, "").await;
    r.upstream.script([Reply::answer("first")]);
    let first = ask(&r.gw, &brief("What is an AI gateway?"), &[]).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    // Same request with other key order and spacing: the exact tier answers, byte for byte.
    let reordered: Value = serde_json::from_str(
        r#"{"messages":[{"content":"Answer briefly.","role":"system"},{"content":"What is an AI gateway?","role":"user"}],
            "temperature":0.20,"model":"yi-lightning"}"#,
    )
    .unwrap();
    let second = ask(&r.gw, &reordered, &[]).await;
    assert_eq!((second.status, second.cache()), (200, "HIT"));
    assert_eq!(
        first.body, second.body,
        "a cached answer keeps its id and created"
    );
    assert_eq!(r.upstream.calls(), 1);

    let metrics = r.gw.scrape_metrics().await;
    let hit = [("route", "default"), ("tier", "exact"), ("result", "hit")];
    assert_eq!(
        common::metric(&metrics, "deja_cache_lookups_total", &hit),
        Some(1.0)
    );
    let saved = [("route", "default"), ("tier", "exact")];
    assert_eq!(
        common::metric(&metrics, "deja_cache_tokens_saved_total", &saved),
        Some(10.0)
    );
}

#[tokio::test]
async fn identical_question_hits_in_redis() {
    identical_question_hits(true).await;
}

#[tokio::test]
async fn identical_question_hits_in_memory_without_redis() {
    identical_question_hits(false).await;
}

#[tokio::test]
async fn entries_live_under_the_versioned_prefix_with_the_route_ttl() {
    let r = rig(
        true,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nttl = \"90s\"\n",
    )
    .await;
    ask(&r.gw, &brief("ttl?"), &[]).await;
    let mut conn = r.redis.as_ref().unwrap().connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("deja:v1:exact:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut conn).unwrap();
    assert!((85_000..=90_000).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn anything_that_shapes_the_answer_is_a_miss() {
    let r = rig(true, "").await;
    let base = brief("What is an AI gateway?");
    ask(&r.gw, &base, &[]).await;
    let mut other_system = base.clone();
    other_system["messages"][0]["content"] = json!("Answer at length.");
    let mut other_model = base.clone();
    other_model["model"] = json!("yi-large");
    let mut other_temperature = base.clone();
    other_temperature["temperature"] = json!(0.9);
    let mut other_history = base.clone();
    other_history["messages"] = json!([
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "I run a bank."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What is an AI gateway?"}
    ]);
    for (what, body, headers) in [
        ("system prompt", other_system, vec![]),
        ("model", other_model, vec![]),
        ("temperature", other_temperature, vec![]),
        ("earlier conversation", other_history, vec![]),
        (
            "namespace",
            base.clone(),
            vec![("x-portkey-cache-namespace", "tenant-b")],
        ),
    ] {
        let cache = ask(&r.gw, &body, &headers).await;
        assert_eq!(cache.cache(), "MISS", "{what} must not share the entry");
    }
    assert_eq!(r.upstream.calls(), 6);
    let same = ask(&r.gw, &base, &[("x-portkey-cache-namespace", "tenant-b")]).await;
    assert_eq!(same.cache(), "HIT", "the same namespace shares it");
}

#[tokio::test]
async fn entries_expire_with_max_age() {
    let r = rig(true, "").await;
    let short = [(
        "x-portkey-config",
        r#"{"cache":{"mode":"simple","max_age":1}}"#,
    )];
    ask(&r.gw, &brief("soon stale"), &short).await;
    assert_eq!(
        ask(&r.gw, &brief("soon stale"), &short).await.cache(),
        "HIT"
    );
    // The claim is the 1 s max_age itself: wait just past it, not until the entry happens to go.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        ask(&r.gw, &brief("soon stale"), &short).await.cache(),
        "MISS"
    );
    assert_eq!(r.upstream.calls(), 2);
}

#[tokio::test]
async fn force_refresh_overwrites_and_a_failed_refresh_keeps_the_old_entry() {
    // Anonymous callers may force a refresh only where the route allows it.
    let r = rig(
        true,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nallow_force_refresh = true\n",
    )
    .await;
    let q = brief("refresh me");
    r.upstream.script([Reply::answer("old")]);
    ask(&r.gw, &q, &[]).await;
    let refresh = [("x-portkey-cache-force-refresh", "true")];

    r.upstream.script([Reply::status(500)]);
    let refreshed = ask(&r.gw, &q, &refresh).await;
    assert_eq!((refreshed.status, refreshed.cache()), (500, "REFRESH"));
    let kept = ask(&r.gw, &q, &[]).await;
    assert_eq!(kept.cache(), "HIT");
    assert_eq!(
        kept.content(),
        "old",
        "a failed refresh must not replace the entry"
    );

    r.upstream.script([Reply::answer("new")]);
    let refreshed = ask(&r.gw, &q, &refresh).await;
    assert_eq!((refreshed.status, refreshed.cache()), (200, "REFRESH"));
    assert_eq!(refreshed.content(), "new");
    let not_forced = ask(&r.gw, &q, &[("x-portkey-cache-force-refresh", "false")]).await;
    assert_eq!(
        not_forced.cache(),
        "HIT",
        "only the value true forces a refresh"
    );
    assert_eq!(not_forced.content(), "new");
    assert_eq!(r.upstream.calls(), 3);
}

#[tokio::test]
async fn errors_and_unfinished_answers_are_never_stored() {
    let r = rig(true, "").await;
    let unfinished = Reply {
        status: 200,
        body: r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"cut"},"finish_reason":null}]}"#.into(),
        ..Reply::default()
    };
    r.upstream.script([
        Reply::status(503),
        unfinished,
        Reply::status(400),
        Reply::answer("finally"),
    ]);
    for expected in [503, 200, 400, 200] {
        let reply = ask(&r.gw, &brief("fragile"), &[]).await;
        assert_eq!((reply.status, reply.cache()), (expected, "MISS"));
    }
    assert_eq!(ask(&r.gw, &brief("fragile"), &[]).await.cache(), "HIT");
    assert_eq!(r.upstream.calls(), 4);
    let metrics = r.gw.scrape_metrics().await;
    let refused = [
        ("route", "default"),
        ("tier", "exact"),
        ("result", "refused"),
    ];
    assert_eq!(
        common::metric(&metrics, "deja_cache_writes_total", &refused),
        Some(1.0),
        "the unfinished answer"
    );
}

#[tokio::test]
async fn identical_concurrent_misses_make_one_upstream_call() {
    let r = rig(true, "").await;
    r.upstream
        .script([Reply::answer("shared").delayed(Duration::from_millis(300))]);
    let q = brief("everyone asks this at once");
    let calls = (0..10).map(|_| {
        let (gw_url, body) = (r.gw.url.clone(), q.clone());
        tokio::spawn(async move { ask(&gw_url, &body, &[]).await })
    });
    let answers: Vec<ChatReply> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        r.upstream.calls(),
        1,
        "ten identical misses, one upstream call"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 && a.content() == "shared"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn redis_down_never_fails_a_request_and_reconnects() {
    let mut r = rig(true, "").await;
    ask(&r.gw, &brief("before"), &[]).await;
    assert_eq!(ask(&r.gw, &brief("before"), &[]).await.cache(), "HIT");

    r.redis.as_mut().unwrap().stop();
    for i in 0..3 {
        let reply = ask(&r.gw, &brief(&format!("while down {i}")), &[]).await;
        assert_eq!(
            (reply.status, reply.cache()),
            (200, "MISS"),
            "Redis down: answered from upstream"
        );
    }
    // Each lookup either failed or, once the breaker opened, was not tried.
    let metrics = r.gw.scrape_metrics().await;
    let counted = |result| {
        let labels = [("tier", "exact"), ("result", result)];
        common::metric(&metrics, "deja_cache_lookups_total", &labels).unwrap_or(0.0)
    };
    assert!(counted("error") >= 1.0, "{metrics}");
    assert_eq!(counted("error") + counted("bypassed"), 3.0, "{metrics}");

    // A fresh Redis on the same port: the gateway reconnects by itself and caches again.
    r.redis.as_mut().unwrap().restart();
    eventually(
        "the gateway to reconnect to Redis and cache again",
        Duration::from_secs(10),
        || async {
            ask(&r.gw, &brief("after"), &[]).await;
            let again = ask(&r.gw, &brief("after"), &[]).await;
            if again.cache() == "HIT" {
                Ok(())
            } else {
                Err(again.cache().to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn cache_off_by_route_or_header_bypasses_the_cache() {
    let r = rig(
        true,
        "[[routes]]\nname = \"nocache\"\nmodels = [\"yi-large\"]\n[routes.cache]\nmode = \"off\"\n",
    )
    .await;
    let mut q = brief("bypass");
    q["model"] = json!("yi-large");
    for _ in 0..2 {
        assert_eq!(ask(&r.gw, &q, &[]).await.cache(), "DISABLED");
    }
    let off = [("x-portkey-config", r#"{"cache":{"mode":"off"}}"#)];
    for _ in 0..2 {
        assert_eq!(ask(&r.gw, &brief("bypass"), &off).await.cache(), "DISABLED");
    }
    assert_eq!(r.upstream.calls(), 4);
}

#[tokio::test]
async fn a_bad_portkey_config_is_refused_even_when_the_cache_could_answer() {
    let r = rig(true, "").await;
    ask(&r.gw, &brief("cached"), &[]).await;
    assert_eq!(ask(&r.gw, &brief("cached"), &[]).await.cache(), "HIT");
    let refused = ask(
        &r.gw,
        &brief("cached"),
        &[("x-portkey-config", r#"{"retry":{"attempts":99}}"#)],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("retry.attempts must be at most 10"),
        "{}",
        refused.body
    );
}
