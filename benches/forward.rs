//! Load harness: one `deja serve` process in front of a fast local upstream stand-in, measured
//! against calling the stand-in directly: forwarding with the cache off, exact-tier hits,
//! exact-tier hits replayed as streams (time to first byte) and semantic-tier hits (Redis: a
//! private redis-server; the real model from models/).
//!
//! `cargo bench --bench forward` (env: BENCH_SECS, BENCH_CONNS, BENCH_SCENARIOS=forward,exact,
//! stream,semantic,new_off,new (every question new, cache off then semantic on), BENCH_LOG=info to keep the per-request log line on, BENCH_GATEWAY_THREADS,
//! BENCH_BASELINE_BIN=path of another `deja` build, run after each scenario in the same harness
//! so the two are compared side by side).
//! The `soak` scenario (not run by default; BENCH_SOAK_SECS, default 180) asks a fixed pool of
//! distinct questions for minutes and prints, every 10 s, throughput, p99, errors, the
//! gateway's resident memory and its semantic entries: memory must stay flat once the entry
//! count does. Loopback only; it stops by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails by panicking"
)]

#[path = "../tests/it/common/redis.rs"]
#[allow(dead_code, reason = "the harness only starts a server")]
mod redis_server;
#[path = "../tests/it/common/upstream.rs"]
#[allow(dead_code, reason = "the harness uses only the quiet stand-in")]
mod upstream;

mod harness;

use std::time::{Duration, Instant};

use harness::{
    Bodies, Report, WARMUP, connection_loop, env_or, get, load, metric_sum, models, pct, print,
    rss_mb, spawn_gateway,
};

const DEFAULT_SECS: u64 = 10;
const DEFAULT_CONNS: usize = 32;
const BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2}"#;
/// A paraphrase of BODY's question: never in the exact tier, so every request is a semantic hit.
/// BODY asked as a stream: the same exact key, so after BODY is stored it is a replayed hit.
const STREAM_BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2,"stream":true}"#;
const PARAPHRASE: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What is the purpose of an AI gateway?"}],"temperature":0.2}"#;

/// Every request a question never asked before (ten-odd natural words each), as most traffic is.
fn new_questions() -> Bodies {
    static POOL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let topics = [
            "refund",
            "invoice",
            "password",
            "shipping",
            "API key",
            "rate limit",
        ];
        (0..400_000)
            .map(|i| {
                let q = format!(
                    "Could you explain how the {} works for customer account {i} this week?",
                    topics[i % topics.len()]
                );
                format!(
                    r#"{{"model":"yi-lightning","messages":[{{"role":"user","content":"{q}"}}]}}"#
                )
            })
            .collect()
    });
    Bodies::Pool(pool)
}

/// The gateway under test: (binary, label suffix).
type Build<'a> = (&'a str, &'a str);

async fn scenario(
    (bin, tag): Build<'_>,
    name: &str,
    stand_in: &upstream::Upstream,
    direct: &Report,
    conns: usize,
    duration: Duration,
) {
    let redis = redis_server::RedisServer::start();
    let mut env = vec![("DEJA__REDIS__URL", redis.url.clone())];
    let (mode, body, label): (&str, Bodies, &str) = match name {
        "forward" => ("off", BODY.into(), "through deja (cache off)"),
        "exact" => ("simple", BODY.into(), "exact hits (Redis)"),
        "stream" => ("simple", STREAM_BODY.into(), "exact hits as streams"),
        "new_off" => ("off", new_questions(), "new questions, cache off"),
        "new" => ("semantic", new_questions(), "new questions, semantic on"),
        _ => ("semantic", PARAPHRASE.into(), "semantic hits (Redis)"),
    };
    env.push(("DEJA__CACHE__DEFAULT_MODE", mode.to_owned()));
    env.push((
        "DEJA__EMBEDDING__MODEL_DIR",
        models("multilingual-e5-small"),
    ));
    env.push((
        "DEJA__EMBEDDING__ONNXRUNTIME_LIB",
        models("lib/libonnxruntime.so"),
    ));
    let (mut gateway, gw_addr) = spawn_gateway(bin, &stand_in.url, &env);
    if name == "semantic" || name == "stream" {
        // Store the plain question (repeats are exact hits). A stream of it is then replayed from
        // that entry; its paraphrase hits the semantic tier.
        let _ = connection_loop(gw_addr, BODY, Instant::now() + Duration::from_millis(200)).await;
    }
    let mut runs = vec![conns];
    if (name == "semantic" || name == "stream") && conns != 1 {
        runs.insert(0, 1);
    }
    for c in runs {
        let r = load(gw_addr, body, c, duration).await;
        print(&format!("{label}, {c} conn{tag}"), &r);
        if name == "stream" {
            println!(
                "  time to first byte: p50 {:.3} ms, p99 {:.3} ms",
                pct(&r.ttfb_us, 0.50),
                pct(&r.ttfb_us, 0.99)
            );
        }
        if c == conns {
            println!(
                "  vs direct: p50 {:+.3} ms, p99 {:+.3} ms",
                r.pct(0.50) - direct.pct(0.50),
                r.pct(0.99) - direct.pct(0.99)
            );
        }
    }
    // What the cache did, from the gateway's own counters: the scenario measured what it says.
    for line in get(gw_addr, "/metrics").lines() {
        let lookups = line.starts_with("deja_cache_lookups_total")
            && ["hit", "miss", "shed"]
                .iter()
                .any(|r| line.contains(&format!("result=\"{r}\"")));
        if lookups || line.starts_with("deja_semantic_shed_total") {
            println!("  {line}");
        }
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
}

async fn soak(stand_in: &upstream::Upstream, conns: usize) {
    let secs = env_or("BENCH_SOAK_SECS", 180u64);
    let questions = env_or("BENCH_SOAK_QUESTIONS", 2000usize);
    let redis = redis_server::RedisServer::start();
    let env = [
        ("DEJA__REDIS__URL", redis.url.clone()),
        ("DEJA__CACHE__DEFAULT_MODE", "semantic".to_owned()),
        (
            "DEJA__EMBEDDING__MODEL_DIR",
            models("multilingual-e5-small"),
        ),
        (
            "DEJA__EMBEDDING__ONNXRUNTIME_LIB",
            models("lib/libonnxruntime.so"),
        ),
    ];
    let (mut gateway, addr) = spawn_gateway(env!("CARGO_BIN_EXE_deja"), &stand_in.url, &env);
    let topics = [
        "refunds",
        "invoices",
        "passwords",
        "shipping",
        "API keys",
        "rate limits",
        "models",
    ];
    let pool: Vec<String> = (0..questions)
        .map(|i| {
            let q = format!(
                "Question {i}: how do {} work for team {}?",
                topics[i % topics.len()],
                i / 7
            );
            format!(r#"{{"model":"yi-lightning","messages":[{{"role":"user","content":"{q}"}}]}}"#)
        })
        .collect();
    let pool: &'static [String] = Box::leak(pool.into_boxed_slice());
    println!("soak: {conns} connections, {questions} distinct questions, {secs}s, a line per 10s");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let r = load(addr, Bodies::Pool(pool), conns, Duration::from_secs(10)).await;
        let entries = metric_sum(addr, "deja_semantic_index_entries{", &[]);
        println!(
            "  t={:>4}s {:>7.0} req/s  p99 {:>7.3} ms  errors {:>3}  rss {:>6.1} MB  entries {entries}",
            started.elapsed().as_secs(),
            r.rps(),
            r.pct(0.99),
            r.errors,
            rss_mb(gateway.id()),
        );
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
}

fn main() {
    let secs = env_or("BENCH_SECS", DEFAULT_SECS);
    let conns = env_or("BENCH_CONNS", DEFAULT_CONNS);
    let scenarios = std::env::var("BENCH_SCENARIOS")
        .unwrap_or_else(|_| "forward,exact,stream,semantic,new_off,new".to_owned());
    let duration = Duration::from_secs(secs);
    harness::runtime().block_on(async {
        let stand_in = upstream::Upstream::spawn_quiet().await;
        println!(
            "{conns} connections, {secs}s per run, after {}s warm-up",
            WARMUP.as_secs()
        );
        let direct = load(stand_in.addr, BODY, conns, duration).await;
        print("direct to stand-in", &direct);
        for name in scenarios.split(',') {
            match name.trim() {
                "soak" => soak(&stand_in, conns).await,
                name => {
                    let current = (env!("CARGO_BIN_EXE_deja"), "");
                    scenario(current, name, &stand_in, &direct, conns, duration).await;
                    if let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") {
                        let build = (baseline.as_str(), " [baseline]");
                        scenario(build, name, &stand_in, &direct, conns, duration).await;
                    }
                }
            }
        }
    });
}
