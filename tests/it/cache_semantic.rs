//! The semantic tier end to end with the real model and a real (private) Redis: paraphrases in
//! English and Chinese hit, look-alikes and other partitions miss, entries expire, survive a
//! restart through Redis, and a Redis outage never fails a request.

use crate::common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{Gateway, Upstream, ask, config_with_mode, metric, redis_section};
use serde_json::{Value, json};

/// A semantic gateway on the shared model, its entries in `redis` (in memory without).
async fn semantic_gateway(upstream: &Upstream, redis: Option<&RedisServer>) -> Gateway {
    let redis_toml = redis
        .map(|r| redis_section(&r.url, Some("200ms")))
        .unwrap_or_default();
    Gateway::spawn_sharing_model(config_with_mode(&upstream.url, "semantic", &redis_toml)).await
}

fn with_system(system: &str, question: &str) -> Value {
    json!({
        "model": "yi-lightning",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]
    })
}

/// The cache status of `question` asked after `system`.
async fn cache_status(gw: &Gateway, system: &str, question: &str) -> String {
    ask(gw, &with_system(system, question), &[])
        .await
        .cache()
        .to_owned()
}

#[tokio::test]
async fn paraphrases_in_english_and_chinese_are_semantic_hits() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    let sys = "You are a support agent.";
    for (first, paraphrase) in [
        ("What is an AI gateway?", "What's an AI gateway?"),
        ("怎么申请退款?", "如何申请退款？"),
    ] {
        let stored = ask(&gw, &with_system(sys, first), &[]).await;
        assert_eq!(stored.cache(), "MISS");
        let served = ask(&gw, &with_system(sys, paraphrase), &[]).await;
        assert_eq!(
            (served.status, served.cache()),
            (200, "SEMANTIC HIT"),
            "{paraphrase}"
        );
        let similarity = served
            .similarity()
            .expect("x-deja-similarity on a semantic hit");
        assert!((0.96..=1.0).contains(&similarity), "{similarity}");
        assert_eq!(served.body, stored.body, "the stored answer, as stored");
    }
    assert_eq!(upstream.calls(), 2);

    let metrics = gw.scrape_metrics().await;
    let hits = [
        ("route", "default"),
        ("tier", "semantic"),
        ("result", "hit"),
    ];
    assert_eq!(
        metric(&metrics, "deja_cache_lookups_total", &hits),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "deja_semantic_hit_similarity_count",
            &[("route", "default")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "deja_semantic_index_entries",
            &[("route", "default")]
        ),
        Some(2.0)
    );
    assert!(metric(&metrics, "deja_embedding_duration_seconds_count", &[]).unwrap() >= 4.0);
    // The first question found its partition empty: looked up without an embedding, its own
    // made beside the upstream call and stored before the answer (the paraphrase right after
    // hit it).
    let empty = [("tier", "semantic"), ("result", "empty")];
    assert_eq!(
        metric(&metrics, "deja_cache_lookups_total", &empty),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "deja_cache_tokens_saved_total",
            &[("tier", "semantic")]
        ),
        Some(20.0)
    );
}

#[tokio::test]
async fn unrelated_questions_and_look_alikes_miss() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    let sys = "Answer briefly.";
    cache_status(&gw, sys, "Python怎么读取CSV文件").await;
    cache_status(&gw, sys, "How do I turn on Bluetooth?").await;
    assert_eq!(
        cache_status(&gw, sys, "What is Redis?").await,
        "MISS",
        "unrelated"
    );
    assert_eq!(
        cache_status(&gw, sys, "Python怎么写入CSV文件").await,
        "MISS",
        "reading is not writing"
    );
    let off = ask(&gw, &with_system(sys, "How do I turn off Bluetooth?"), &[]).await;
    assert_eq!(off.cache(), "MISS", "on is not off");
    // The nearest candidate was the "on" question: the response says who refused it and how
    // sure it was that the answers match.
    let refused = off.header("x-deja-refused").unwrap_or_default();
    let score: f32 = refused
        .strip_prefix("verifier ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("x-deja-refused: {refused:?}"));
    assert!((0.0..=1.0).contains(&score), "{refused}");
    assert_eq!(upstream.calls(), 5);
    let metrics = gw.scrape_metrics().await;
    let refusals = metric(
        &metrics,
        "deja_semantic_refusals_total",
        &[("route", "default"), ("reason", "verifier")],
    );
    // Reading and writing, like on and off, are look-alikes the verifier refuses.
    assert_eq!(refusals, Some(2.0), "{metrics}");
}

#[tokio::test]
async fn a_semantic_hit_never_crosses_a_partition() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    let sys = "You are a support agent.";
    ask(&gw, &with_system(sys, "What is an AI gateway?"), &[]).await;
    let paraphrase = with_system(sys, "What's an AI gateway?");
    let mut other_model = paraphrase.clone();
    other_model["model"] = json!("yi-large");
    let mut other_temperature = paraphrase.clone();
    other_temperature["temperature"] = json!(1.5);
    let mut other_history = paraphrase.clone();
    other_history["messages"] = json!([
        {"role": "system", "content": sys},
        {"role": "user", "content": "I build trading systems."},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": "What's an AI gateway?"}
    ]);
    for (what, request, headers) in [
        (
            "system prompt",
            with_system("You are a poet.", "What's an AI gateway?"),
            vec![],
        ),
        ("model", other_model, vec![]),
        ("temperature", other_temperature, vec![]),
        ("earlier conversation", other_history, vec![]),
        (
            "namespace",
            paraphrase.clone(),
            vec![("x-portkey-cache-namespace", "tenant-b")],
        ),
    ] {
        let reply = ask(&gw, &request, &headers).await;
        assert_eq!(reply.cache(), "MISS", "{what} must not share the entry");
        assert_eq!(reply.similarity(), None);
    }
    assert_eq!(
        ask(&gw, &paraphrase, &[]).await.cache(),
        "SEMANTIC HIT",
        "same partition still hits"
    );
}

#[tokio::test]
async fn semantic_entries_expire() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    let short = [(
        "x-portkey-config",
        r#"{"cache":{"mode":"semantic","max_age":1}}"#,
    )];
    ask(&gw, &with_system("s", "How do I install Docker?"), &short).await;
    assert_eq!(
        ask(&gw, &with_system("s", "How to install Docker?"), &short)
            .await
            .cache(),
        "SEMANTIC HIT"
    );
    // The claim is the 1 s max_age itself: wait just past it, not until the entry happens to go.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        ask(&gw, &with_system("s", "How to install Docker?"), &short)
            .await
            .cache(),
        "MISS"
    );
}

#[tokio::test]
async fn semantic_hits_survive_a_restart_through_redis() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let mut first = semantic_gateway(&upstream, Some(&redis)).await;
    ask(&first, &with_system("s", "怎么绑定银行卡"), &[]).await;
    ask(
        &first,
        &with_system("s", "How do I delete my account?"),
        &[],
    )
    .await;
    first.stop().await.unwrap();

    let second = semantic_gateway(&upstream, Some(&redis)).await;
    let metrics = second.scrape_metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "deja_semantic_index_entries",
            &[("route", "default")]
        ),
        Some(2.0)
    );
    assert_eq!(
        cache_status(&second, "s", "如何绑定银行卡？").await,
        "SEMANTIC HIT"
    );
    assert_eq!(
        cache_status(&second, "s", "How can I delete my account?").await,
        "SEMANTIC HIT"
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn redis_down_degrades_to_upstream() {
    let upstream = Upstream::spawn().await;
    let mut redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    ask(&gw, &with_system("s", "What is Redis?"), &[]).await;
    redis.stop();
    let reply = ask(&gw, &with_system("s", "What's Redis?"), &[]).await;
    assert_eq!(
        (reply.status, reply.cache()),
        (200, "MISS"),
        "the answer lives in Redis: fetched from upstream"
    );
    let metrics = gw.scrape_metrics().await;
    let errors = metric(
        &metrics,
        "deja_cache_lookups_total",
        &[("tier", "semantic"), ("result", "error")],
    );
    assert_eq!(errors, Some(1.0), "{metrics}");
}

#[tokio::test]
async fn without_redis_the_semantic_tier_lives_in_memory() {
    let upstream = Upstream::spawn().await;
    let gw = semantic_gateway(&upstream, None).await;
    ask(&gw, &with_system("s", "怎么申请退款?"), &[]).await;
    assert_eq!(
        cache_status(&gw, "s", "如何申请退款？").await,
        "SEMANTIC HIT"
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn english_only_model_skips_chinese_prompts() {
    let upstream = Upstream::spawn().await;
    let extra = "[embedding]\nmodel = \"all-minilm-l6-v2\"\nsessions = 1\n";
    let config = config_with_mode(&upstream.url, "semantic", extra);
    // Its own model, not the shared one.
    let gw = Gateway::spawn(config).await;
    let checks = common::until_ready(&gw).await;
    assert_eq!(checks["checks"]["semantic_index"], "ok", "{checks}");
    assert!(checks["checks"]["embedding_model"].is_string(), "{checks}");
    cache_status(&gw, "s", "How do I change my password?").await;
    assert_eq!(
        cache_status(&gw, "s", "How can I change my password?").await,
        "SEMANTIC HIT"
    );
    // The partition holds an entry now, so each Chinese prompt is looked up, and skipped.
    cache_status(&gw, "s", "怎么申请退款?").await;
    assert_eq!(
        cache_status(&gw, "s", "怎么申请发票?").await,
        "MISS",
        "MiniLM reads both as [UNK]s"
    );
    // In a partition of its own (no lookup needed), such a prompt is not stored either.
    cache_status(&gw, "t", "怎么申请退款?").await;
    let metrics = gw.scrape_metrics().await;
    let skipped = metric(
        &metrics,
        "deja_cache_lookups_total",
        &[("tier", "semantic"), ("result", "skipped")],
    );
    assert_eq!(skipped, Some(2.0), "{metrics}");
    let entries = metric(
        &metrics,
        "deja_semantic_index_entries",
        &[("route", "default")],
    );
    assert_eq!(entries, Some(1.0), "only the English question: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_embedding_sessions_is_shed_not_queued() {
    // One session and no queue at all: every lookup that finds the session busy is shed.
    let upstream = Upstream::spawn().await;
    upstream.script(std::iter::repeat_n(common::Reply::echo(), 40));
    let extra = "[embedding]\nsessions = 1\nmax_queue_wait = \"0s\"\nmax_lookup_wait = \"30s\"\n";
    let config = config_with_mode(&upstream.url, "semantic", extra);
    let gw = Gateway::spawn_sharing_model(config).await;
    // One entry first: a lookup in an empty partition embeds nothing, so nothing would be shed.
    ask(&gw, &common::question("What are your opening hours?"), &[]).await;
    let topics = [
        "refund", "invoice", "password", "shipping", "warranty", "coupon", "login", "address",
        "delivery", "return", "exchange", "receipt", "account", "payment", "order", "tracking",
    ];
    let asks = topics.iter().map(|topic| {
        let gw = &gw;
        async move {
            let text = format!("How do I change my {topic} settings?");
            let reply = ask(gw, &common::question(&text), &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(reply.content(), format!("echo: {text}"), "its own answer");
        }
    });
    futures_util::future::join_all(asks).await;
    let text = gw.scrape_metrics().await;
    let queue = [("route", "default"), ("reason", "queue")];
    let shed = metric(&text, "deja_semantic_shed_total", &queue).unwrap_or(0.0);
    assert!(shed >= 1.0, "16 at once on one session: some shed\n{text}");
    // Every answer still gets its semantic entry: the shed ones from the background queue.
    common::until_metric(&gw, "deja_cache_writes_total", &STORED, 17.0).await;
    // The shed ones were stored after their answers: their lag is timed, the queue is empty.
    let text = gw.scrape_metrics().await;
    let lagged = metric(&text, "deja_semantic_writeback_lag_seconds_count", &[]).unwrap_or(0.0);
    assert!(lagged >= shed, "{lagged} timed for {shed} shed\n{text}");
    assert_eq!(
        metric(&text, "deja_semantic_writeback_queue_depth", &[]),
        Some(0.0)
    );
    let paraphrase = common::question("How can I change my refund settings?");
    let reply = ask(&gw, &paraphrase, &[]).await;
    assert_eq!(
        reply.cache(),
        "SEMANTIC HIT",
        "{:?}\n{}",
        reply.headers,
        gw.scrape_metrics().await
    );
}

/// Semantic entries stored, as `deja_cache_writes_total` labels them.
const STORED: [(&str, &str); 3] = [
    ("route", "default"),
    ("tier", "semantic"),
    ("result", "stored"),
];

/// A semantic gateway whose lookups wait at most `lookup_wait` for their embedding (never for a
/// session), with one entry stored. That first question found its partition empty: nothing was
/// looked up, so nothing was shed.
async fn one_entry_stored(lookup_wait: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::spawn().await;
    let extra =
        format!("[embedding]\nmax_queue_wait = \"30s\"\nmax_lookup_wait = \"{lookup_wait}\"\n");
    let config = config_with_mode(&upstream.url, "semantic", &extra);
    let gw = Gateway::spawn_sharing_model(config).await;
    ask(&gw, &common::question("What are your opening hours?"), &[]).await;
    common::until_metric(&gw, "deja_cache_writes_total", &STORED, 1.0).await;
    (upstream, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_the_lookup_gave_up_on_still_stores_its_entry() {
    // Short questions embed well within 20 ms, so a lookup expects its embedding in time; these
    // long ones (about 400 word pieces each) take several times that: every lookup gives up
    // waiting, and each answer's semantic entry comes from the embedding it left running.
    let (_upstream, gw) = one_entry_stored("20ms").await;
    for topic in ["refund", "invoice", "password", "shipping"] {
        let text = format!("How do I change my {topic} settings on the web site? ").repeat(30);
        assert_eq!(
            ask(&gw, &common::question(&text), &[]).await.cache(),
            "MISS"
        );
    }
    common::until_metric(&gw, "deja_cache_writes_total", &STORED, 5.0).await;
    let text = gw.scrape_metrics().await;
    // Each lookup gave up waiting, unless the long embeddings done before it (or a slow
    // machine) had already lifted the pace past 20 ms: then it was shed without waiting.
    let shed = |reason| {
        let labels = [("route", "default"), ("reason", reason)];
        metric(&text, "deja_semantic_shed_total", &labels).unwrap_or(0.0)
    };
    assert!(shed("timeout") >= 1.0, "{text}");
    assert_eq!(
        shed("timeout") + shed("slow") + shed("queue"),
        4.0,
        "{text}"
    );
    let empty = [("tier", "semantic"), ("result", "empty")];
    assert_eq!(metric(&text, "deja_cache_lookups_total", &empty), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_cannot_get_its_embedding_in_time_does_not_wait_for_it() {
    // With 1 ms for a lookup's embedding, which takes milliseconds, no lookup waits: each is shed
    // at once and its answer's entry is embedded in the background queue.
    let (_upstream, gw) = one_entry_stored("1ms").await;
    for topic in ["refund", "invoice", "password"] {
        let text = format!("How do I change my {topic} settings?");
        let reply = ask(&gw, &common::question(&text), &[]).await;
        assert_eq!(reply.cache(), "MISS");
    }
    common::until_metric(&gw, "deja_cache_writes_total", &STORED, 4.0).await;
    let text = gw.scrape_metrics().await;
    // Shed before any wait, each for its embedding's pace, none after waiting it out.
    let slow = [("route", "default"), ("reason", "slow")];
    assert_eq!(metric(&text, "deja_semantic_shed_total", &slow), Some(3.0));
    let timeout = [("route", "default"), ("reason", "timeout")];
    assert_eq!(metric(&text, "deja_semantic_shed_total", &timeout), None);
}

/// An entry without word-piece states (written before they were stored, or with the field
/// unreadable) is not verified as if every piece aligned: the old rule decides, and its
/// negation guard refuses the look-alike.
#[tokio::test]
async fn an_entry_without_states_falls_back_to_the_guards() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = semantic_gateway(&upstream, Some(&redis)).await;
    cache_status(&gw, "s", "How do I turn on Bluetooth?").await;
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("deja:v1:sem:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let had: i64 = redis::cmd("HDEL")
        .arg(&keys[0])
        .arg("states")
        .query(&mut conn)
        .unwrap();
    assert_eq!(had, 1, "the entry kept its states");
    let off = ask(&gw, &with_system("s", "How do I turn off Bluetooth?"), &[]).await;
    assert_eq!(off.cache(), "MISS");
    assert_eq!(off.header("x-deja-refused"), Some("guard negation"));
}
