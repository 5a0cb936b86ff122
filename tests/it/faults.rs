//! Faults under load: Redis killed and restarted mid-load while the provider answers some calls
//! with 503, hangs past the timeout on others, and breaks the connection halfway through a 200
//! on others. No request outlives its deadline, every
//! answer is either the provider's own for that question or an OpenAI-shaped error, nothing
//! wrong or broken is cached, and the failures are counted in metrics.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{ChatReply, Gateway, Reply, Upstream, config, eventually, metric, question};

const WORKERS: usize = 8;
const PER_WORKER: usize = 50;
const QUESTIONS: usize = 30;

/// Two attempts of 300 ms, a short backoff, Redis calls of 100 ms: well under 1.5 s.
const DEADLINE: Duration = Duration::from_millis(1500);

fn drill_question(i: usize) -> String {
    format!("question number {i} of the fault drill")
}

/// Asks `q`; the answer and how long it took.
async fn timed_ask(gw: &Gateway, q: &str) -> (ChatReply, Duration) {
    let started = Instant::now();
    let reply = common::ask(gw, &question(q), &[]).await;
    (reply, started.elapsed())
}

/// A 200 carries the provider's answer to this very question; anything else is an error in
/// OpenAI's shape.
fn check(q: &str, reply: &ChatReply) {
    let (status, body) = (reply.status, reply.json());
    if status == 200 {
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("echo: {q}"),
            "a wrong or broken answer for {q}: {body}"
        );
    } else {
        // deja's own errors, or the provider's error passed through as it sent it.
        assert!(
            body["error"]["message"].is_string(),
            "{status} without an OpenAI-shaped error: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_a_flaky_provider_never_hang_a_request_or_corrupt_the_cache() {
    let upstream = Upstream::spawn_quiet().await;
    // One in five calls fails with 503, one in ten hangs past the timeout, one in ten breaks
    // off mid-body after a 200, the rest answer.
    let mut script = Vec::new();
    for i in 0..4 * WORKERS * PER_WORKER {
        script.push(match i % 10 {
            0 | 5 => Reply::status(503),
            3 => Reply::echo().delayed(Duration::from_secs(3)),
            7 => Reply::echo_then_reset(),
            _ => Reply::echo(),
        });
    }
    upstream.script(script);
    let mut redis = RedisServer::start();
    let extra = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"100ms\"\n\
         [[routes]]\nname = \"default\"\ntimeout = \"300ms\"\n[routes.retry]\nattempts = 1\nbase_delay = \"10ms\"\n",
        redis.url
    );
    let gw = Arc::new(Gateway::spawn(config(&upstream.url, &extra)).await);

    let answered = Arc::new(AtomicUsize::new(0));
    let load = (0..WORKERS)
        .map(|w| {
            let (gw, answered) = (Arc::clone(&gw), Arc::clone(&answered));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0..PER_WORKER {
                    let q = drill_question((w * 7 + n * 3) % QUESTIONS);
                    let (reply, took) = timed_ask(&gw, &q).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    seen.push((q, reply, took));
                    // Paced, so the load spans Redis going away and coming back.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect::<Vec<_>>();
    // Redis dies mid-load: once every worker has had answers with it up...
    eventually(
        "the load to be under way",
        Duration::from_secs(10),
        || async { answered.load(Ordering::SeqCst) >= 2 * WORKERS },
    )
    .await;
    redis.stop();
    // ...and stays down until requests have met the outage (failed, or bypassed once its
    // breaker opened).
    eventually(
        "lookups to fail on Redis",
        Duration::from_secs(10),
        || async {
            let text = gw.scrape_metrics().await;
            let met: f64 = ["error", "bypassed"]
                .iter()
                .map(|result| {
                    let labels = [("tier", "exact"), ("result", *result)];
                    metric(&text, "deja_cache_lookups_total", &labels).unwrap_or(0.0)
                })
                .sum();
            met >= WORKERS as f64
        },
    )
    .await;
    let restart = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    });
    let redis = restart.await.unwrap();

    let mut statuses = std::collections::BTreeMap::new();
    for worker in load {
        for (q, reply, took) in worker.await.unwrap() {
            assert!(took <= DEADLINE, "{q} took {took:?}");
            check(&q, &reply);
            *statuses.entry(reply.status).or_insert(0) += 1;
        }
    }
    eprintln!("answers by status: {statuses:?}");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > WORKERS * PER_WORKER / 2,
        "{statuses:?}"
    );

    // Whatever is cached now is each question's own, complete answer.
    for i in 0..QUESTIONS {
        let q = drill_question(i);
        let (reply, _) = timed_ask(&gw, &q).await;
        check(&q, &reply);
    }
    let text = gw.scrape_metrics().await;
    let count = |name: &str, labels: &[(&str, &str)]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        count("deja_cache_lookups_total", &[("result", "error")]) > 0.0,
        "Redis outage not counted: {text}"
    );
    assert!(
        count("deja_upstream_attempts_total", &[("outcome", "timeout")]) > 0.0,
        "{text}"
    );
    assert!(
        count("deja_upstream_attempts_total", &[("outcome", "503")]) > 0.0,
        "{text}"
    );
    assert!(
        count(
            "deja_upstream_attempts_total",
            &[("outcome", "unreachable")]
        ) > 0.0,
        "the broken 200s are counted as transport failures: {text}"
    );
    assert!(redis.answers());
    assert_eq!(
        common::client()
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
