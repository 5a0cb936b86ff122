//! What every load bench shares: keep-alive connections that send requests for a while and
//! time them, a `deja serve` process on its own port and directory, and the figures printed
//! alike (throughput, p50, p99).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const WARMUP: Duration = Duration::from_secs(2);

pub struct Report {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    /// Time to the first body byte.
    pub ttfb_us: Vec<u32>,
    /// The gateway's CPU time per request over the measured window, µs (when watched).
    pub cpu_us: Option<f64>,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn pct(&self, p: f64) -> f64 {
        pct(&self.latencies_us, p)
    }
}

pub fn pct(sorted_us: &[u32], p: f64) -> f64 {
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

pub fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

impl Report {
    pub fn absorb(&mut self, run: Run) {
        self.errors += run.errors;
        self.requests += run.latencies.len();
        self.latencies_us.extend(run.latencies);
        self.ttfb_us.extend(run.ttfb);
    }
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
pub struct Run {
    pub errors: usize,
    pub latencies: Vec<u32>,
    pub ttfb: Vec<u32>,
}

/// What a connection sends: one body, or a pool it walks through from a random start.
#[derive(Clone, Copy)]
pub enum Bodies {
    One(&'static str),
    Pool(&'static [String]),
}

impl From<&'static str> for Bodies {
    fn from(body: &'static str) -> Self {
        Self::One(body)
    }
}

pub async fn connection_loop(addr: SocketAddr, bodies: impl Into<Bodies>, until: Instant) -> Run {
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

pub async fn load(
    addr: SocketAddr,
    body: impl Into<Bodies>,
    conns: usize,
    duration: Duration,
) -> Report {
    load_watching(addr, body, conns, duration, None).await
}

/// [`load`], and with `pid` the gateway's CPU time per request: a cost that other tenants of
/// the machine, who take throughput away, leave alone.
pub async fn load_watching(
    addr: SocketAddr,
    body: impl Into<Bodies>,
    conns: usize,
    duration: Duration,
    pid: Option<u32>,
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
    let cpu_before = pid.map(cpu_secs);
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
        cpu_us: None,
    };
    for t in tasks {
        report.absorb(t.await.unwrap());
    }
    report.elapsed = started.elapsed();
    report.cpu_us = pid
        .zip(cpu_before)
        .map(|(pid, before)| (cpu_secs(pid) - before) * 1e6 / report.requests.max(1) as f64);
    report.latencies_us.sort_unstable();
    report.ttfb_us.sort_unstable();
    report
}

pub fn spawn_gateway(bin: &str, upstream: &str, env: &[(&str, String)]) -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let asked = std::env::var("BENCH_LOG").ok();
    // The gateway's log goes to the harness's stderr only when asked for.
    let out = if asked.is_some() {
        Stdio::from(std::io::stderr())
    } else {
        Stdio::null()
    };
    let log = asked.unwrap_or_else(|| "warn".to_owned());
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
        .stdout(out)
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

pub fn get(addr: SocketAddr, path: &str) -> String {
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

pub fn ready(addr: SocketAddr) -> bool {
    get(addr, "/readyz").starts_with("HTTP/1.1 200")
}

pub fn print(label: &str, r: &Report) {
    let cpu = r
        .cpu_us
        .map_or(String::new(), |us| format!("   gateway CPU {us:.0} µs/req"));
    println!(
        "{label:<28} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   ({} ok, {} errors){cpu}",
        r.rps(),
        r.pct(0.50),
        r.pct(0.99),
        r.requests,
        r.errors
    );
}

pub fn models(rel: &str) -> String {
    format!("{}/models/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Resident memory of a process, MB.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The harness's own runtime: one worker thread, since the load and the stand-in share the
/// machine's cores with the gateway under test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The sum of the gateway's samples of metric `name` whose labels hold every one of `labels`
/// (such as `tier="semantic"`).
pub fn metric_sum(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    get(addr, "/metrics")
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds a process has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, the 14th and 15th fields of the line (11th and 12th after the name).
    (ticks(11) + ticks(12)) / 100.0
}
