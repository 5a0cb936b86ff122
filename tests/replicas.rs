//! Two real `deja serve` processes behind one Redis, with their control plane in one Postgres
//! database, behave as one cache: a question answered by replica A is a semantic hit on replica
//! B within a second, an eviction on A reaches B, a replica started later rebuilds what the
//! others stored, and so does one that fell behind the stream's trim point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::PgDatabase;
use common::redis::RedisServer;
use common::{Upstream, client, metric};
use serde_json::json;

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn models_path(rel: &str) -> String {
    format!("{}/models/{rel}", env!("CARGO_MANIFEST_DIR"))
}

async fn replica(upstream: &Upstream, redis: &RedisServer, store: &str, extra: &str) -> Replica {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("deja-replica-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[upstream]\nbase_url = \"{}\"\napi_key = \"sk-test\"\n\
         [redis]\nurl = \"{}\"\n[store]\nurl = \"{store}\"\n[embedding]\nmodel_dir = \"{}\"\n\
         onnxruntime_lib = \"{}\"\n[cache]\ndefault_mode = \"semantic\"\n{extra}",
        upstream.url,
        redis.url,
        models_path("multilingual-e5-small"),
        models_path("lib/libonnxruntime.so"),
    );
    std::fs::write(dir.join("deja.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_deja"))
        .args(["serve", "--config", "deja.toml"])
        .current_dir(&dir)
        .env_remove("YI_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = client().get(format!("{url}/readyz")).send().await
            && res.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica on {port} did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Replica { child, url }
}

async fn ask(r: &Replica, question: &str) -> String {
    let body =
        json!({"model": "yi-lightning", "messages": [{"role": "user", "content": question}]});
    let res = client()
        .post(format!("{}/v1/chat/completions", r.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.headers()["x-portkey-cache-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Waits until `r` has applied `n` entries stored by other replicas; returns how long it took.
async fn until_replicated(r: &Replica, result: &str, n: f64) -> Duration {
    let started = Instant::now();
    loop {
        let text = metrics(r).await;
        if metric(&text, "deja_replica_events_total", &[("result", result)]).unwrap_or(0.0) >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no {result} event reached the replica: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn metrics(r: &Replica) -> String {
    client()
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_semantic_tier_through_redis() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    let a = replica(&upstream, &redis, &pg.url, "").await;
    let b = replica(&upstream, &redis, &pg.url, "").await;

    assert_eq!(ask(&a, "What is an AI gateway?").await, "MISS");
    // The other replica never embedded or stored this question: it learns of it from Redis.
    let took = until_replicated(&b, "put", 1.0).await;
    eprintln!("replica B had A's entry {took:?} after A answered");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(ask(&b, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 1, "B answered from A's entry");

    // And the other way round, in Chinese.
    assert_eq!(ask(&b, "怎么申请退款?").await, "MISS");
    let took = until_replicated(&a, "put", 1.0).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(ask(&a, "如何申请退款？").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 2);

    // A third replica started now rebuilds both entries from Redis before it is ready.
    let c = replica(&upstream, &redis, &pg.url, "").await;
    assert_eq!(ask(&c, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(ask(&c, "如何申请退款？").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_on_one_replica_reaches_the_other() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    // One entry per route: the second question evicts the first, on A and (through the
    // stream) on B.
    let one = "[[routes]]\nname = \"default\"\n[routes.cache]\nmax_entries = 1\n";
    let a = replica(&upstream, &redis, &pg.url, one).await;
    let b = replica(&upstream, &redis, &pg.url, one).await;
    assert_eq!(ask(&a, "What is an AI gateway?").await, "MISS");
    until_replicated(&b, "put", 1.0).await;
    assert_eq!(ask(&b, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(ask(&a, "How do I reset my password?").await, "MISS");
    until_replicated(&b, "del", 1.0).await;
    let entries = metric(
        &metrics(&b).await,
        "deja_semantic_index_entries",
        &[("route", "default")],
    );
    assert_eq!(entries, Some(1.0), "B keeps only the newest entry, like A");
    assert_eq!(
        ask(&b, "What's an AI gateway?").await,
        "MISS",
        "the evicted entry is gone on B too"
    );
}

/// A replica that missed events the stream has since trimmed rebuilds from the entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_trim_point_rebuilds_from_the_entries() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    let a = replica(&upstream, &redis, &pg.url, "").await;
    let b = replica(&upstream, &redis, &pg.url, "").await;
    assert_eq!(ask(&a, "What is an AI gateway?").await, "MISS");
    until_replicated(&b, "put", 1.0).await;

    // B stops reading (SIGSTOP) while A stores more, and the stream is trimmed past what B read.
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &b.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    assert_eq!(ask(&a, "怎么申请退款?").await, "MISS");
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("deja:v1:sem-events:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    let trimmed: usize = redis::cmd("XTRIM")
        .arg(key)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    assert_eq!(trimmed, 2, "the stream held both puts");
    assert_eq!(ask(&a, "How do I reset my password?").await, "MISS");
    signal("-CONT");

    until_replicated(&b, "rebuild", 1.0).await;
    // The refund question's put was trimmed unseen; B has it from the rebuild.
    assert_eq!(ask(&b, "如何申请退款？").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 3);
}
