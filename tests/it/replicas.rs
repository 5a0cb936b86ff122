//! Two real `deja serve` processes behind one Redis, with their control plane in one Postgres
//! database, behave as one cache: a question answered by replica A is a semantic hit on replica
//! B within a second, an eviction on A reaches B, a replica started later rebuilds what the
//! others stored, and so does one that fell behind the stream's trim point.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::postgres::PgDatabase;
use common::redis::RedisServer;
use common::{
    Endpoint, Upstream, cache_of, client, eventually, free_port, metric, models_path, question,
    scrape_metrics, until_replicated,
};

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

async fn replica(upstream: &Upstream, redis: &RedisServer, store: &str, extra: &str) -> Replica {
    let port = free_port();
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
    let r = Replica {
        child: launch(&dir),
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    common::until_ready(&r).await;
    r
}

fn launch(dir: &std::path::Path) -> Child {
    common::deja(dir)
        .args(["serve", "--config", "deja.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Endpoint for Replica {
    fn base_url(&self) -> &str {
        &self.url
    }
}

impl Replica {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_semantic_tier_through_redis() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    let a = replica(&upstream, &redis, &pg.url, "").await;
    let b = replica(&upstream, &redis, &pg.url, "").await;

    assert_eq!(cache_of(&a, "What is an AI gateway?").await, "MISS");
    // The other replica never embedded or stored this question: it learns of it from Redis.
    let took = until_replicated(&b, "put", 1.0).await;
    eprintln!("replica B had A's entry {took:?} after A answered");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(cache_of(&b, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 1, "B answered from A's entry");

    // And the other way round, in Chinese.
    assert_eq!(cache_of(&b, "怎么申请退款?").await, "MISS");
    let took = until_replicated(&a, "put", 1.0).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(cache_of(&a, "如何申请退款？").await, "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 2);

    // A third replica started now rebuilds both entries from Redis before it is ready.
    let c = replica(&upstream, &redis, &pg.url, "").await;
    assert_eq!(cache_of(&c, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(cache_of(&c, "如何申请退款？").await, "SEMANTIC HIT");
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
    assert_eq!(cache_of(&a, "What is an AI gateway?").await, "MISS");
    until_replicated(&b, "put", 1.0).await;
    assert_eq!(cache_of(&b, "What's an AI gateway?").await, "SEMANTIC HIT");
    assert_eq!(cache_of(&a, "How do I reset my password?").await, "MISS");
    until_replicated(&b, "del", 1.0).await;
    let entries = metric(
        &scrape_metrics(&b, "").await,
        "deja_semantic_index_entries",
        &[("route", "default")],
    );
    assert_eq!(entries, Some(1.0), "B keeps only the newest entry, like A");
    assert_eq!(
        cache_of(&b, "What's an AI gateway?").await,
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
    assert_eq!(cache_of(&a, "What is an AI gateway?").await, "MISS");
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
    assert_eq!(cache_of(&a, "怎么申请退款?").await, "MISS");
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
    assert_eq!(cache_of(&a, "How do I reset my password?").await, "MISS");
    signal("-CONT");

    until_replicated(&b, "rebuild", 1.0).await;
    // The refund question's put was trimmed unseen; B has it from the rebuild.
    assert_eq!(cache_of(&b, "如何申请退款？").await, "SEMANTIC HIT");
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
    let drill = |i: usize| format!("kill drill question {i}: what is a gateway for?");
    let upstream = Upstream::spawn_quiet().await;
    upstream.script((0..2 * WORKERS * PER_WORKER).map(|_| common::Reply::echo()));
    let redis = RedisServer::start();
    let pg = PgDatabase::create().await;
    let a = Arc::new(replica(&upstream, &redis, &pg.url, "").await);
    let mut b = replica(&upstream, &redis, &pg.url, "").await;
    let b_url = b.url.clone();
    // What the load has seen of B so far: answers, and requests refused or cut.
    let (b_answered, b_cut) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    let load = (0..WORKERS)
        .map(|w| {
            let urls = [a.url.clone(), b_url.clone()];
            let (b_answered, b_cut) = (Arc::clone(&b_answered), Arc::clone(&b_cut));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0..PER_WORKER {
                    let q = drill((w * 5 + n) % QUESTIONS);
                    let on = (w + n) % 2;
                    let started = Instant::now();
                    // By hand, not `common::ask`: a refused connection is an outcome here.
                    let reply = client()
                        .post(format!("{}/v1/chat/completions", urls[on]))
                        .header("content-type", "application/json")
                        .body(question(&q).to_string())
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let answer = match reply {
                        Ok(res) => {
                            Some((res.status().as_u16(), res.text().await.unwrap_or_default()))
                        }
                        // The killed replica's connections are refused or cut: the load
                        // balancer's to route around, and never a hang.
                        Err(e) => {
                            assert!(!e.is_timeout(), "{q} on replica {on} hung");
                            None
                        }
                    };
                    if on == 1 {
                        let seen_b = if answer.is_some() {
                            &b_answered
                        } else {
                            &b_cut
                        };
                        seen_b.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.push((q, on, answer, started.elapsed()));
                    // Paced, so the load spans B's death and restart.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                seen
            })
        })
        .collect::<Vec<_>>();
    // Kill B once the load has warmed the cache (B holds every question's entry and has served
    // part of the load), and start it again once the load has met it down.
    eventually("the load to warm B", Duration::from_secs(10), || async {
        let text = scrape_metrics(&b, "").await;
        let entries = metric(
            &text,
            "deja_semantic_index_entries",
            &[("route", "default")],
        );
        if b_answered.load(Ordering::SeqCst) > 0 && entries == Some(QUESTIONS as f64) {
            Ok(())
        } else {
            Err(format!("{entries:?} entries"))
        }
    })
    .await;
    b.kill();
    eventually(
        "the load to meet B down",
        Duration::from_secs(10),
        || async { b_cut.load(Ordering::SeqCst) > 0 },
    )
    .await;
    b.relaunch();
    common::until_ready(&b).await;

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
        &scrape_metrics(&b, "").await,
        "deja_semantic_index_entries",
        &[("route", "default")],
    );
    assert_eq!(entries, Some(QUESTIONS as f64));
    let calls = upstream.calls();
    for i in 0..QUESTIONS {
        for r in [a.as_ref(), &b] {
            let reply = common::ask(r, &question(&drill(i)), &[]).await;
            assert_eq!(reply.cache(), "HIT");
            assert_eq!(reply.content(), format!("echo: {}", drill(i)));
        }
    }
    assert_eq!(upstream.calls(), calls, "all answered from the cache");
}
