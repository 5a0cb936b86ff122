//! Load harness: one `deja serve` process in front of a fast local upstream stand-in, measured
//! against calling the stand-in directly: forwarding with the cache off, exact-tier hits,
//! exact-tier hits replayed as streams (time to first byte) and semantic-tier hits (Redis: a
//! private redis-server; the real model from models/).
//!
//! `cargo bench --bench forward` (env: BENCH_SECS, BENCH_CONNS, BENCH_SCENARIOS=forward,exact,
//! stream,semantic, BENCH_LOG=info to keep the per-request log line on, BENCH_GATEWAY_THREADS,
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

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const DEFAULT_SECS: u64 = 10;
const DEFAULT_CONNS: usize = 32;
const WARMUP: Duration = Duration::from_secs(2);
const BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2}"#;
/// A paraphrase of BODY's question: never in the exact tier, so every request is a semantic hit.
/// BODY asked as a stream: the same exact key, so after BODY is stored it is a replayed hit.
const STREAM_BODY: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What does an AI gateway do?"}],"temperature":0.2,"stream":true}"#;
const PARAPHRASE: &str = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"What is the purpose of an AI gateway?"}],"temperature":0.2}"#;

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// Time to the first body byte.
    ttfb_us: Vec<u32>,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        pct(&self.latencies_us, p)
    }
}

fn pct(sorted_us: &[u32], p: f64) -> f64 {
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

impl Report {
    fn absorb(&mut self, run: Run) {
        self.errors += run.errors;
        self.requests += run.latencies.len();
        self.latencies_us.extend(run.latencies);
        self.ttfb_us.extend(run.ttfb);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Run {
    errors: usize,
    latencies: Vec<u32>,
    ttfb: Vec<u32>,
}

/// What a connection sends: one body, or a pool it walks through from a random start.
#[derive(Clone, Copy)]
enum Bodies {
    One(&'static str),
    Pool(&'static [String]),
}

impl From<&'static str> for Bodies {
    fn from(body: &'static str) -> Self {
        Self::One(body)
    }
}

async fn connection_loop(addr: SocketAddr, bodies: impl Into<Bodies>, until: Instant) -> Run {
    let bodies = bodies.into();
    let mut next = rand::random::<u32>() as usize;
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut run = Run::default();
    while Instant::now() < until {
        let req = Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(match bodies {
                Bodies::One(body) => Bytes::from_static(body.as_bytes()),
                Bodies::Pool(pool) => {
                    next = next.wrapping_add(7919);
                    Bytes::from(pool[next % pool.len()].clone())
                }
            }))
            .unwrap();
        let started = Instant::now();
        match sender.send_request(req).await {
            Ok(res) => {
                let ok = res.status().is_success();
                let mut body = res.into_body();
                let _ = body.frame().await;
                let ttfb = micros(started);
                let _ = body.collect().await;
                if ok {
                    run.latencies.push(micros(started));
                    run.ttfb.push(ttfb);
                } else {
                    run.errors += 1;
                }
            }
            Err(_) => {
                run.errors += 1;
                break;
            }
        }
    }
    run
}

async fn load(
    addr: SocketAddr,
    body: impl Into<Bodies>,
    conns: usize,
    duration: Duration,
) -> Report {
    let body = body.into();
    // Warm up connections and caches, then measure.
    let warm_until = Instant::now() + WARMUP.min(duration);
    let warm: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection_loop(addr, body, warm_until)))
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection_loop(addr, body, until)))
        .collect();
    let mut report = Report {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        ttfb_us: Vec::new(),
    };
    for t in tasks {
        report.absorb(t.await.unwrap());
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report.ttfb_us.sort_unstable();
    report
}

fn spawn_gateway(bin: &str, upstream: &str, env: &[(&str, String)]) -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
    // Each gateway keeps its control plane (deja.db) in a directory of its own: two builds
    // must not share one database (their migrations differ).
    let dir = std::env::temp_dir().join(format!("deja-bench-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .current_dir(&dir)
        .env("DEJA__SERVER__LISTEN", addr.to_string())
        .env("DEJA__UPSTREAM__BASE_URL", upstream)
        .env("DEJA__UPSTREAM__API_KEY", "sk-bench")
        .env("RUST_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Ok(threads) = std::env::var("BENCH_GATEWAY_THREADS") {
        cmd.env("TOKIO_WORKER_THREADS", threads);
    }
    let child = cmd.spawn().expect("spawning deja");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(addr) {
        assert!(Instant::now() < deadline, "deja did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

fn get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

fn ready(addr: SocketAddr) -> bool {
    get(addr, "/readyz").starts_with("HTTP/1.1 200")
}

fn print(label: &str, r: &Report) {
    println!(
        "{label:<28} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   ({} ok, {} errors)",
        r.rps(),
        r.pct(0.50),
        r.pct(0.99),
        r.requests,
        r.errors
    );
}

fn models(rel: &str) -> String {
    format!("{}/models/{rel}", env!("CARGO_MANIFEST_DIR"))
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
    let (mode, body, label) = match name {
        "forward" => ("off", BODY, "through deja (cache off)"),
        "exact" => ("simple", BODY, "exact hits (Redis)"),
        "stream" => ("simple", STREAM_BODY, "exact hits as streams"),
        _ => ("semantic", PARAPHRASE, "semantic hits (Redis)"),
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
        if line.starts_with("deja_cache_lookups_total") && line.contains("result=\"hit\"") {
            println!("  {line}");
        }
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// Resident memory of a process, MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
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
        let entries: f64 = get(addr, "/metrics")
            .lines()
            .filter(|l| l.starts_with("deja_semantic_index_entries{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
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
        .unwrap_or_else(|_| "forward,exact,stream,semantic".to_owned());
    let duration = Duration::from_secs(secs);
    // The harness (load + stand-in) shares the machine's 2 cores with the gateway process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
