//! Load harness: one `deja serve` process in front of a fast local upstream stand-in, measured
//! against calling the stand-in directly: forwarding with the cache off, exact-tier hits,
//! exact-tier hits replayed as streams (time to first byte), semantic-tier hits and misses
//! (Redis: a private redis-server; the real model from models/), and new questions.
//!
//! `cargo bench --bench forward` (env: BENCH_SECS, BENCH_CONNS, BENCH_SCENARIOS=forward,exact,
//! stream,paraphrases (semantic hits and misses one at a time, every question asked
//! once), new_off,new (every question new, cache off then semantic on), BENCH_LOG=info to keep the per-request log line on, BENCH_GATEWAY_THREADS,
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

#[path = "forward_parts/each.rs"]
mod each;
mod harness;

use std::time::{Duration, Instant};

use each::{Timed, each_once, summary};
use harness::{
    Bodies, Report, WARMUP, connection_loop, env_or, get, load, load_watching, metric_sum, models,
    pct, print, rss_mb, spawn_gateway,
};

const DEFAULT_SECS: u64 = 10;
const DEFAULT_CONNS: usize = 32;
const BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2}"#;
/// BODY asked as a stream: the same exact key, so after BODY is stored it is a replayed hit.
const STREAM_BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2,"stream":true}"#;

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
    let (mode, body, label): (&str, Bodies, &str) = match name {
        "forward" => ("off", BODY.into(), "through deja (cache off)"),
        "exact" => ("simple", BODY.into(), "exact hits (Redis)"),
        "stream" => ("simple", STREAM_BODY.into(), "exact hits as streams"),
        "new_off" => ("off", new_questions(), "new questions, cache off"),
        "new" => ("semantic", new_questions(), "new questions, semantic on"),
        other => panic!("unknown scenario {other}"),
    };
    let env = gateway_env(&redis.url, mode);
    let (mut gateway, gw_addr) = spawn_gateway(bin, &stand_in.url, &env);
    if name == "stream" {
        // Store the plain question: a stream of it is then replayed from that entry.
        let _ = connection_loop(gw_addr, BODY, Instant::now() + Duration::from_millis(200)).await;
    }
    let mut runs = vec![conns];
    if name == "stream" && conns != 1 {
        runs.insert(0, 1);
    }
    for c in runs {
        let r = load_watching(gw_addr, body, c, duration, Some(gateway.id())).await;
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
        let logged = line.starts_with("deja_request_log_records_total");
        if lookups || logged || line.starts_with("deja_semantic_shed_total") {
            println!("  {line}");
        }
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// A gateway on `redis_url` with cache `mode`, and the real model from models/.
fn gateway_env(redis_url: &str, mode: &str) -> [(&'static str, String); 4] {
    [
        ("DEJA__REDIS__URL", redis_url.to_owned()),
        ("DEJA__CACHE__DEFAULT_MODE", mode.to_owned()),
        (
            "DEJA__EMBEDDING__MODEL_DIR",
            models("multilingual-e5-small"),
        ),
        (
            "DEJA__EMBEDDING__ONNXRUNTIME_LIB",
            models("lib/libonnxruntime.so"),
        ),
    ]
}

/// A chat body asking `question`, with a system message when given (a partition of its own).
fn ask(question: &str, system: Option<&str>) -> String {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": question}));
    serde_json::json!({"model": "yi-lightning", "messages": messages}).to_string()
}

/// The training data's same-answer pairs (never the sealed test's), English and Chinese.
fn same_answer_pairs() -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for file in ["en_a", "en_b", "zh_a", "zh_b"] {
        let path = format!(
            "{}/tests/data/train/{file}.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["same_answer"] == true {
                let side = |k: &str| v[k].as_str().unwrap().to_owned();
                pairs.push((side("a"), side("b")));
            }
        }
    }
    pairs
}

/// Semantic hits and misses one at a time, each question asked once (so none is an exact hit):
/// side `a` of every same-answer pair is stored, then each side `b` is asked; the same questions
/// sent straight to the stand-in are the baseline.
async fn paraphrases((bin, tag): Build<'_>, stand_in: &upstream::Upstream) {
    let redis = redis_server::RedisServer::start();
    let env = gateway_env(&redis.url, "semantic");
    let (mut gateway, addr) = spawn_gateway(bin, &stand_in.url, &env);
    let pairs = same_answer_pairs();
    let stored: Vec<String> = pairs.iter().map(|(a, _)| ask(a, None)).collect();
    let asked: Vec<String> = pairs.iter().map(|(_, b)| ask(b, None)).collect();
    let _ = each_once(addr, &stored).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut entries = 0.0;
    while Instant::now() < deadline {
        entries = metric_sum(addr, "deja_semantic_index_entries{", &[]);
        if entries as usize >= stored.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "paraphrases{tag}: {} same-answer pairs of tests/data/train, {entries} entries stored, one connection",
        pairs.len()
    );
    let embedding = |part: &str| {
        metric_sum(
            addr,
            &format!("deja_embedding_duration_seconds_{part}"),
            &[],
        )
    };
    let (sum, count) = (embedding("sum"), embedding("count"));
    let timed = each_once(addr, &asked).await;
    let mean_ms = (embedding("sum") - sum) / (embedding("count") - count).max(1.0) * 1000.0;
    println!("  embedding, deja's own timing  mean {mean_ms:.3} ms (a session's wait included)");
    let of = |keep: &dyn Fn(&Timed) -> bool| {
        summary(timed.iter().filter(|t| t.ok && keep(t)).map(|t| t.us))
    };
    println!(
        "  semantic hit                  {}",
        of(&|t| t.cache == "SEMANTIC HIT")
    );
    println!(
        "  miss, candidate refused       {}",
        of(&|t| t.cache == "MISS" && t.refused)
    );
    println!(
        "  miss, nothing above the floor {}",
        of(&|t| t.cache == "MISS" && !t.refused)
    );
    // A system message of its own puts each question in a partition nobody stored in.
    let alone: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, (_, b))| ask(b, Some(&format!("You answer for team {i}."))))
        .collect();
    let empty = each_once(addr, &alone).await;
    println!(
        "  miss, empty partition         {}",
        summary(empty.iter().filter(|t| t.ok).map(|t| t.us))
    );
    let direct = each_once(stand_in.addr, &asked).await;
    println!(
        "  straight to the stand-in      {}",
        summary(direct.iter().map(|t| t.us))
    );
    let errors = timed.iter().chain(&empty).filter(|t| !t.ok).count();
    println!("  errors {errors}");
    let _ = gateway.kill();
    let _ = gateway.wait();

    // The same empty-partition misses in front of a provider that takes 50 ms, as a model
    // does at the least: what deja adds to a new question there.
    let slow = upstream::Upstream::spawn_quiet().await;
    slow.answer_by_default(upstream::Reply::ok().delayed(Duration::from_millis(50)));
    let (mut gateway, addr) = spawn_gateway(bin, &slow.url, &env);
    let some: Vec<String> = alone.iter().take(200).cloned().collect();
    let empty = each_once(addr, &some).await;
    let direct = each_once(slow.addr, &some).await;
    println!(
        "  miss, empty partition, provider taking 50 ms: through deja {}; provider alone {}",
        summary(empty.iter().filter(|t| t.ok).map(|t| t.us)),
        summary(direct.iter().map(|t| t.us))
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
}

async fn soak(stand_in: &upstream::Upstream, conns: usize) {
    let secs = env_or("BENCH_SOAK_SECS", 180u64);
    let questions = env_or("BENCH_SOAK_QUESTIONS", 2000usize);
    let redis = redis_server::RedisServer::start();
    let env = gateway_env(&redis.url, "semantic");
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
        .unwrap_or_else(|_| "forward,exact,stream,paraphrases,new_off,new".to_owned());
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
                "paraphrases" => {
                    let current = (env!("CARGO_BIN_EXE_deja"), "");
                    paraphrases(current, &stand_in).await;
                    if let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") {
                        let build = (baseline.as_str(), " [baseline]");
                        paraphrases(build, &stand_in).await;
                    }
                }
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
