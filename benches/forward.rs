//! Load harness: throughput and latency added by one `deja serve` process forwarding to a fast
//! local upstream stand-in, against calling the stand-in directly.
//!
//! `cargo bench --bench forward` (env: BENCH_SECS, BENCH_CONNS, BENCH_LOG=info to keep the
//! per-request log line on, BENCH_GATEWAY_THREADS). Loopback only; it stops by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails by panicking"
)]

#[path = "../tests/common/upstream.rs"]
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

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn connection_loop(
    addr: SocketAddr,
    path: &'static str,
    until: Instant,
) -> (usize, Vec<u32>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(65_536);
    let mut errors = 0;
    while Instant::now() < until {
        let req = Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let started = Instant::now();
        match sender.send_request(req).await {
            Ok(res) => {
                let ok = res.status().is_success();
                let _ = res.into_body().collect().await;
                if ok {
                    latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    (errors, latencies)
}

async fn load(addr: SocketAddr, path: &'static str, conns: usize, duration: Duration) -> Report {
    // Warm up connections and caches, then measure.
    let warm_until = Instant::now() + WARMUP.min(duration);
    let warm: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection_loop(addr, path, warm_until)))
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection_loop(addr, path, until)))
        .collect();
    let mut report = Report {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (errors, lat) = t.await.unwrap();
        report.errors += errors;
        report.requests += lat.len();
        report.latencies_us.extend(lat);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

fn spawn_gateway(upstream: &str) -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deja"));
    cmd.arg("serve")
        .current_dir(std::env::temp_dir())
        .env("DEJA__SERVER__LISTEN", addr.to_string())
        .env("DEJA__UPSTREAM__BASE_URL", upstream)
        .env("DEJA__UPSTREAM__API_KEY", "sk-bench")
        .env("DEJA__CACHE__DEFAULT_MODE", "off")
        .env("RUST_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Ok(threads) = std::env::var("BENCH_GATEWAY_THREADS") {
        cmd.env("TOKIO_WORKER_THREADS", threads);
    }
    let child = cmd.spawn().expect("spawning deja");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "deja did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
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

fn main() {
    let secs = env_or("BENCH_SECS", DEFAULT_SECS);
    let conns = env_or("BENCH_CONNS", DEFAULT_CONNS);
    let duration = Duration::from_secs(secs);
    // The harness (load + stand-in) shares the machine's 2 cores with the gateway process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stand_in = upstream::Upstream::spawn_quiet().await;
        let (mut gateway, gw_addr) = spawn_gateway(&stand_in.url);
        println!(
            "{conns} connections, {secs}s per run, after {}s warm-up",
            WARMUP.as_secs()
        );
        let direct = load(stand_in.addr, "/v1/chat/completions", conns, duration).await;
        print("direct to stand-in", &direct);
        let through = load(gw_addr, "/v1/chat/completions", conns, duration).await;
        print("through deja (cache off)", &through);
        println!(
            "added by deja: p50 {:+.3} ms, p99 {:+.3} ms",
            through.pct(0.50) - direct.pct(0.50),
            through.pct(0.99) - direct.pct(0.99)
        );
        let _ = gateway.kill();
        let _ = gateway.wait();
    });
}
