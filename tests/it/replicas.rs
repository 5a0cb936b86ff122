//! Two real `deja serve` processes behind one Redis, with their control plane in one Postgres
//! database, behave as one cache: a question answered by replica A is a semantic hit on replica
//! B within a second, an eviction on A reaches B, a replica started later rebuilds what the
//! others stored, and so does one that fell behind the stream's trim point.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::PgDatabase;
use common::redis::RedisServer;
use common::{Upstream, client, metric};
use serde_json::json;

struct Replica {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
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
    let mut r = Replica {
        child: launch(&dir),
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    r.until_ready().await;
    r
}

fn launch(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_deja"))
        .args(["serve", "--config", "deja.toml"])
        .current_dir(dir)
        .env_remove("YI_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Replica {
    async fn until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = client().get(format!("{}/readyz", self.url)).send().await
                && res.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not get ready",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown, requests in flight are cut.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the process again with the same config and port.
    fn relaunch(&mut self) {
        self.child = launch(&self.dir);
    }
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

/// Load on two replicas while one is killed (SIGKILL) and started again: the survivor answers
/// every request in time, the restarted one rebuilds its index before it reports ready, and
/// every cached answer, on either, is its own question's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_restarts_and_rebuilds() {
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 40;
    const QUESTIONS: usize = 12;
    let question = |i: usize| format!("kill drill question {i}: what is a gateway for?");
    let upstream = Upstream::spawn_quiet().await;
    upstream.script((0..2 * WORKERS * PER_WORKER).map(|_| common::Reply::echo()));
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    let a = std::sync::Arc::new(replica(&upstream, &redis, &pg.url, "").await);
    let mut b = replica(&upstream, &redis, &pg.url, "").await;
    let b_url = b.url.clone();

    let load = (0..WORKERS)
        .map(|w| {
            let urls = [a.url.clone(), b_url.clone()];
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0..PER_WORKER {
                    let q = question((w * 5 + n) % QUESTIONS);
                    let on = (w + n) % 2;
                    let started = Instant::now();
                    let reply = client()
                        .post(format!("{}/v1/chat/completions", urls[on]))
                        .header("content-type", "application/json")
                        .body(json!({"model": "yi-lightning", "messages": [{"role": "user", "content": q}]}).to_string())
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let answer = match reply {
                        Ok(res) => Some((res.status().as_u16(), res.text().await.unwrap_or_default())),
                        // The killed replica's connections are refused or cut: the load
                        // balancer's to route around, and never a hang.
                        Err(e) => {
                            assert!(!e.is_timeout(), "{q} on replica {on} hung");
                            None
                        }
                    };
                    seen.push((q, on, answer, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                seen
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.relaunch();
    b.until_ready().await;

    let (mut answered, mut cut, mut starting) = ([0; 2], 0, 0);
    for worker in load {
        for (q, on, answer, took) in worker.await.unwrap() {
            let Some((status, body)) = answer else {
                assert_eq!(on, 1, "only the killed replica may drop a request");
                cut += 1;
                continue;
            };
            assert!(
                took < Duration::from_secs(2),
                "{q} on replica {on} took {took:?}"
            );
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            if status == 503 && body["error"]["code"] == "starting" {
                // The restarted replica answers at once while it loads, rather than leaving
                // the connection in the backlog.
                assert_eq!(on, 1);
                starting += 1;
                continue;
            }
            assert_eq!(status, 200, "{q} on replica {on}: {body}");
            assert_eq!(
                body["choices"][0]["message"]["content"],
                format!("echo: {q}")
            );
            answered[on] += 1;
        }
    }
    eprintln!(
        "answered by A {}, by B {}; cut while B was down: {cut}; 503 while B started: {starting}",
        answered[0], answered[1]
    );
    assert_eq!(
        answered[0],
        WORKERS * PER_WORKER / 2,
        "A answered every request sent to it"
    );
    assert!(
        cut > 0 && answered[1] > 0,
        "B was down for part of the load and up for part"
    );

    // The restarted replica rebuilt every entry, and each is its own question's answer.
    let entries = metric(
        &metrics(&b).await,
        "deja_semantic_index_entries",
        &[("route", "default")],
    );
    assert_eq!(entries, Some(QUESTIONS as f64));
    let calls = upstream.calls();
    for i in 0..QUESTIONS {
        for r in [a.as_ref(), &b] {
            let res = client()
                .post(format!("{}/v1/chat/completions", r.url))
                .header("content-type", "application/json")
                .body(json!({"model": "yi-lightning", "messages": [{"role": "user", "content": question(i)}]}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(res.headers()["x-portkey-cache-status"], "HIT");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(
                body["choices"][0]["message"]["content"],
                format!("echo: {}", question(i))
            );
        }
    }
    assert_eq!(upstream.calls(), calls, "all answered from the cache");
}
