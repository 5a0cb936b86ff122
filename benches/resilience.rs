//! Resilience harness: what a fault or a burst costs, second by second, on one `deja serve`
//! process in front of a local stand-in (loopback only; everything stops by itself).
//!
//! `cargo bench --bench resilience` (env: BENCH_SCENARIOS, default
//! `redis_outage,cluster_master,shed,restart,streams`; BENCH_CONNS, default 32):
//! - `redis_outage`: exact hits over a pool of questions; Redis is killed at 6 s and started
//!   again (empty) at 12 s. A line per second: requests, hits, errors, p99.
//! - `cluster_master`: the same with a 3-master Cluster, one master killed and restarted.
//! - `shed`: every question new, arriving at about 3x what the embedding sessions can embed,
//!   against a provider that answers in BENCH_PROVIDER_MS (default 50) ms; shedding on (the
//!   default) beside shedding off, and the provider alone.
//! - `restart`: BENCH_ENTRIES (default 100,000) semantic entries written to Redis, then deja
//!   started on it (BENCH_PARTITIONS, default 1): time to serving (`/readyz` 200) and to its
//!   semantic tier (status `ready`).
//! - `streams`: BENCH_STREAMS (default 10,000) concurrent slow streams (a chunk a second for
//!   10 s): RSS and CPU of the gateway, errors, added time to first byte; clients on a
//!   connection each (as many as the open-file limit allows), then on HTTP/2.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails by panicking"
)]

mod harness;
#[path = "../tests/it/common/redis.rs"]
#[allow(dead_code, reason = "the harness only starts servers")]
mod redis;
#[path = "../tests/it/common/redis_topology.rs"]
#[allow(dead_code, reason = "the harness only starts a cluster")]
mod redis_topology;
#[path = "../tests/it/common/upstream.rs"]
#[allow(dead_code, reason = "the harness uses the quiet stand-in")]
mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use harness::{
    Bodies, connection_loop, cpu_secs, env_or, get, load, metric_sum, models, pct, print, rss_mb,
};

/// One request of a timeline.
struct Sample {
    at_ms: u32,
    latency_us: u32,
    ok: bool,
    hit: bool,
}

fn bodies(n: usize, prefix: &str) -> &'static [String] {
    let pool: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"model":"yi-lightning","messages":[{{"role":"user","content":"{prefix} question number {i}: how do refunds work for order {}?"}}]}}"#,
                i * 7919 % 100_003
            )
        })
        .collect();
    Box::leak(pool.into_boxed_slice())
}

/// Sends requests over `pool` until `until`, noting each one's time, latency, status and cache.
async fn timeline_loop(
    addr: SocketAddr,
    pool: &'static [String],
    started: Instant,
    until: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = rand::random::<u32>() as usize;
    'connect: while Instant::now() < until {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream.set_nodelay(true).unwrap();
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            next = next.wrapping_add(7919);
            let req = Request::post("/v1/chat/completions")
                .header("host", addr.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(pool[next % pool.len()].clone())))
                .unwrap();
            let sent = Instant::now();
            let at_ms = sent.duration_since(started).as_millis() as u32;
            let Ok(res) = sender.send_request(req).await else {
                samples.push(Sample {
                    at_ms,
                    latency_us: harness::micros(sent),
                    ok: false,
                    hit: false,
                });
                continue 'connect;
            };
            let ok = res.status().is_success();
            let hit = res
                .headers()
                .get("x-portkey-cache-status")
                .is_some_and(|v| v == "HIT");
            let _ = res.into_body().collect().await;
            samples.push(Sample {
                at_ms,
                latency_us: harness::micros(sent),
                ok,
                hit,
            });
        }
    }
    samples
}

/// Runs `conns` timeline loops for `secs` while `faults` (seconds from the start, action) happen.
async fn timeline(
    addr: SocketAddr,
    pool: &'static [String],
    conns: usize,
    secs: u64,
    faults: Vec<(u64, Fault)>,
) -> Vec<Sample> {
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(timeline_loop(addr, pool, started, until)))
        .collect();
    for (at, fault) in faults {
        tokio::time::sleep_until((started + Duration::from_secs(at)).into()).await;
        fault();
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// One second of a timeline: answered, hits, errors, p99 ms.
type Second = (usize, usize, usize, f64);

/// Prints a line per second and the before/during/after summary; `down` is (from, to) seconds.
fn report_timeline(samples: &[Sample], secs: u64, (down_from, down_to): (u64, u64)) {
    println!("    s   req/s  hits/s  errors  p99 ms");
    let mut per_second: Vec<Second> = Vec::new();
    for s in 0..secs {
        let in_second: Vec<&Sample> = samples
            .iter()
            .filter(|x| u64::from(x.at_ms) / 1000 == s)
            .collect();
        let mut latencies: Vec<u32> = in_second.iter().map(|x| x.latency_us).collect();
        latencies.sort_unstable();
        let ok = in_second.iter().filter(|x| x.ok).count();
        let hits = in_second.iter().filter(|x| x.hit).count();
        let errors = in_second.len() - ok;
        let p99 = if latencies.is_empty() {
            0.0
        } else {
            pct(&latencies, 0.99)
        };
        println!("  {s:>3} {ok:>7} {hits:>7} {errors:>7} {p99:>7.2}");
        per_second.push((ok, hits, errors, p99));
    }
    let mean = |from: u64, to: u64, f: &dyn Fn(&Second) -> f64| {
        let span = &per_second[from as usize..to as usize];
        span.iter().map(f).sum::<f64>() / span.len().max(1) as f64
    };
    let before = mean(1, down_from, &|x| x.0 as f64);
    let before_hits = mean(1, down_from, &|x| x.1 as f64);
    // The second of each flip is left out: it holds both states.
    let during = mean(down_from + 1, down_to, &|x| x.0 as f64);
    let during_p99 = per_second[(down_from + 1) as usize..down_to as usize]
        .iter()
        .map(|x| x.3)
        .fold(0.0, f64::max);
    let errors: usize = per_second.iter().map(|x| x.2).sum();
    let back = per_second
        .iter()
        .enumerate()
        .skip(down_to as usize)
        .find(|(_, x)| x.1 as f64 >= before_hits * 0.5)
        .map(|(s, _)| s as u64 - down_to);
    println!(
        "  before: {before:.0} req/s ({before_hits:.0} hits/s); down: {during:.0} req/s ({:.0}% of before), worst p99 {during_p99:.2} ms; errors {errors}; hits back to half within {} s of the restart",
        during / before * 100.0,
        back.map_or("(never)".to_owned(), |s| s.to_string())
    );
}

fn gateway_env(redis_url: &str, mode: &str) -> Vec<(&'static str, String)> {
    vec![
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

async fn redis_outage(stand_in: &upstream::Upstream, conns: usize) {
    println!(
        "\nredis_outage: exact hits, {conns} connections; Redis killed at 6 s, back (empty) at 12 s"
    );
    let redis = Arc::new(Mutex::new(redis::RedisServer::start()));
    let url = redis.lock().unwrap().url.clone();
    let (down, up) = (Arc::clone(&redis), Arc::clone(&redis));
    let stop: Fault = Box::new(move || down.lock().unwrap().stop());
    let start: Fault = Box::new(move || up.lock().unwrap().restart());
    outage(stand_in, conns, &url, (stop, start)).await;
}

async fn cluster_master(stand_in: &upstream::Upstream, conns: usize) {
    println!(
        "\ncluster_master: exact hits, {conns} connections; one of 3 masters killed at 6 s, back at 12 s"
    );
    let cluster = Arc::new(Mutex::new(redis_topology::RedisCluster::start()));
    let url = cluster.lock().unwrap().url.clone();
    let (down, up) = (Arc::clone(&cluster), Arc::clone(&cluster));
    let stop: Fault = Box::new(move || down.lock().unwrap().nodes[2].stop());
    let start: Fault = Box::new(move || up.lock().unwrap().nodes[2].restart());
    outage(stand_in, conns, &url, (stop, start)).await;
}

/// Something done to Redis in the middle of a timeline.
type Fault = Box<dyn FnOnce()>;

/// Exact hits from a gateway on the Redis at `url`, warmed up, then 20 s with `stop` at 6 s and
/// `start` at 12 s, reported second by second.
async fn outage(
    stand_in: &upstream::Upstream,
    conns: usize,
    url: &str,
    (stop, start): (Fault, Fault),
) {
    let mut env = gateway_env(url, "simple");
    env.push(("DEJA__EMBEDDING__ENABLED", "false".to_owned()));
    let (mut gateway, addr) =
        harness::spawn_gateway(env!("CARGO_BIN_EXE_deja"), &stand_in.url, &env);
    let pool = bodies(500, "outage");
    let warm = Instant::now() + Duration::from_secs(3);
    let _ = connection_loop(addr, Bodies::Pool(pool), warm).await;
    let samples = timeline(addr, pool, conns, 20, vec![(6, stop), (12, start)]).await;
    report_timeline(&samples, 20, (6, 12));
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// A stand-in provider answering every call after `delay`.
async fn slow_provider(delay: Duration) -> upstream::Upstream {
    let provider = upstream::Upstream::spawn_quiet().await;
    provider.answer_by_default(upstream::Reply::ok().delayed(delay));
    provider
}

/// A semantic gateway on a fresh Redis, shedding (the default) or waiting for every embedding.
fn semantic_gateway(
    provider: &upstream::Upstream,
    shedding: bool,
) -> (std::process::Child, SocketAddr, redis::RedisServer) {
    let redis = redis::RedisServer::start();
    let mut env = gateway_env(&redis.url, "semantic");
    if !shedding {
        env.push(("DEJA__EMBEDDING__MAX_QUEUE_WAIT", "1h".to_owned()));
        env.push(("DEJA__EMBEDDING__MAX_LOOKUP_WAIT", "1h".to_owned()));
    }
    let (gateway, addr) = harness::spawn_gateway(env!("CARGO_BIN_EXE_deja"), &provider.url, &env);
    (gateway, addr, redis)
}

async fn shed() {
    let provider_ms = env_or("BENCH_PROVIDER_MS", 50u64);
    let secs = Duration::from_secs(env_or("BENCH_SECS", 10u64));
    let provider = slow_provider(Duration::from_millis(provider_ms)).await;
    println!("\nshed: every question new, provider answers in {provider_ms} ms");
    // The embedding's capacity: far more connections than it can serve, nothing shed.
    let (mut gw, addr, _redis) = semantic_gateway(&provider, false);
    let flood = load(addr, Bodies::Pool(bodies(200_000, "capacity")), 128, secs).await;
    print("capacity (128 conns, no shedding)", &flood);
    let _ = gw.kill();
    let _ = gw.wait();
    let capacity = flood.rps();
    let conns = ((3.0 * capacity * provider_ms as f64 / 1000.0).ceil() as usize).max(4);
    println!("  3x that: {conns} connections of new questions");
    let alone = load(
        provider.addr,
        Bodies::Pool(bodies(200_000, "alone")),
        conns,
        secs,
    )
    .await;
    print("provider alone", &alone);
    // The same traffic through deja with the cache off: what the hop itself costs here.
    let off_env = [
        ("DEJA__CACHE__DEFAULT_MODE", "off".to_owned()),
        ("DEJA__EMBEDDING__ENABLED", "false".to_owned()),
    ];
    let (mut gw, addr) =
        harness::spawn_gateway(env!("CARGO_BIN_EXE_deja"), &provider.url, &off_env);
    let off = load(
        addr,
        Bodies::Pool(bodies(200_000, "cache-off")),
        conns,
        secs,
    )
    .await;
    print("through deja, cache off", &off);
    let _ = gw.kill();
    let _ = gw.wait();
    for (label, shedding, prefix) in [
        ("shedding off", false, "off"),
        ("shedding on (default)", true, "on"),
    ] {
        let (mut gw, addr, _redis) = semantic_gateway(&provider, shedding);
        let r = load(addr, Bodies::Pool(bodies(200_000, prefix)), conns, secs).await;
        print(label, &r);
        println!(
            "  vs provider: p50 {:+.3} ms, p99 {:+.3} ms; vs cache off: p99 {:+.3} ms; shed {} lookups; semantic entries stored {}",
            r.pct(0.50) - alone.pct(0.50),
            r.pct(0.99) - alone.pct(0.99),
            r.pct(0.99) - off.pct(0.99),
            metric_sum(addr, "deja_semantic_shed_total", &[]),
            metric_sum(
                addr,
                "deja_cache_writes_total",
                &["tier=\"semantic\"", "result=\"stored\""]
            )
        );
        let _ = gw.kill();
        let _ = gw.wait();
    }
}

/// Writes `n` semantic entries in deja's Redis layout (vectors around 200 topics, spread over
/// `partitions` partitions), as a long-running replica would have left them.
fn seed(url: &str, n: usize, partitions: usize) {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let prefix = format!(
        "{}:sem:{}:default",
        deja::cache::redis_conn::KEY_PREFIX,
        deja::config::ModelName::MultilingualE5Small.slug()
    );
    let dim = 384;
    let centers: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dim).map(|_| rand::random::<f32>() - 0.5).collect())
        .collect();
    let expires = deja::clock::now_ms() + 3_600_000;
    let body = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"seeded"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}"#;
    for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = ::redis::pipe();
        for &i in batch {
            let center = &centers[i % centers.len()];
            let mut v: Vec<f32> = center
                .iter()
                .map(|c| c + (rand::random::<f32>() - 0.5) * 0.3)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let key = format!("{prefix}:{i:064x}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("partition")
                .arg(format!("{:064x}", i % partitions))
                .arg("prompt")
                .arg(format!("seeded question {i}"))
                .arg("vector")
                .arg(bytes)
                .arg("response")
                .arg(body)
                .arg("expires")
                .arg(expires)
                .arg("tokens")
                .arg(10)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(expires)
                .ignore();
        }
        let () = pipe.query(&mut conn).unwrap();
    }
}

async fn restart() {
    let n = env_or("BENCH_ENTRIES", 100_000usize);
    // One partition is one tenant's route and model: the graph holds all of it.
    let partitions = env_or("BENCH_PARTITIONS", 1usize);
    let stand_in = upstream::Upstream::spawn_quiet().await;
    let redis = redis::RedisServer::start();
    let seeding = Instant::now();
    seed(&redis.url, n, partitions);
    println!(
        "\nrestart: {n} semantic entries in {partitions} partition(s) in Redis (written in {:.1} s); deja started on them",
        seeding.elapsed().as_secs_f64()
    );
    let env = gateway_env(&redis.url, "semantic");
    let started = Instant::now();
    let (mut gateway, addr) =
        harness::spawn_gateway(env!("CARGO_BIN_EXE_deja"), &stand_in.url, &env);
    let serving = started.elapsed();
    while !get(addr, "/readyz").contains(r#""status":"ready""#) {
        assert!(started.elapsed() < Duration::from_secs(600), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let semantic = started.elapsed();
    println!(
        "  serving (exact tier and forwarding) after {:.2} s; semantic tier after {:.1} s; {} entries indexed; rss {:.0} MB",
        serving.as_secs_f64(),
        semantic.as_secs_f64(),
        metric_sum(addr, "deja_semantic_index_entries", &[]),
        rss_mb(gateway.id())
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// The streams scenario's provider, in a process of its own (its sockets would crowd the
/// harness's): every call a stream of ten chunks, one a second. Prints its URL, then serves.
fn streams_stand_in(chunks: usize) {
    harness::runtime().block_on(async {
        let provider = upstream::Upstream::spawn_quiet().await;
        let mut events: Vec<String> = (0..chunks)
            .map(|i| {
                upstream::event(&upstream::chunk(
                    serde_json::json!({"content": format!("part {i} ")}),
                    None,
                ))
            })
            .collect();
        events.push(upstream::DONE.to_owned());
        let reply = upstream::Reply::sse(&events, None).paced(Duration::from_secs(1));
        provider.answer_by_default(reply);
        println!("{}", provider.url);
        std::future::pending::<()>().await;
    });
}

/// How the harness reaches a server: a connection a stream, or HTTP/2 connections each carrying
/// `per_conn` streams (a gateway then holds one socket a stream, its upstream one).
#[derive(Clone, Copy)]
enum Inbound {
    Http1,
    Http2 { per_conn: usize },
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A new HTTP/2 connection (prior knowledge, as h2c) to `addr`.
async fn h2_connection(addr: SocketAddr) -> Option<H2Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let executor = hyper_util::rt::TokioExecutor::new();
    let (sender, conn) = hyper::client::conn::http2::handshake(executor, TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One streamed call, on `h2` or else a connection of its own: (time to first byte, whole
/// stream) or `None` on any failure.
async fn one_stream(addr: SocketAddr, body: String, h2: Option<H2Sender>) -> Option<(u32, u32)> {
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let started = Instant::now();
    let res = match h2 {
        Some(mut sender) => sender.send_request(req).await.ok()?,
        None => {
            let stream = TcpStream::connect(addr).await.ok()?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()?;
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/v1/chat/completions".parse().ok()?;
            parts.headers.insert("host", addr.to_string().parse().ok()?);
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .ok()?
        }
    };
    if !res.status().is_success() {
        return None;
    }
    let mut body = res.into_body();
    let _ = body.frame().await?.ok()?;
    let ttfb = harness::micros(started);
    let rest = body.collect().await.ok()?.to_bytes();
    rest.windows(6)
        .any(|w| w == b"[DONE]")
        .then(|| (ttfb, harness::micros(started)))
}

fn pct_or_zero(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        0.0
    } else {
        pct(sorted, p)
    }
}

/// What `open_streams` saw.
struct StreamRun {
    ttfb: Vec<u32>,
    errors: usize,
    /// The watched process's resident memory and CPU share while every stream was open.
    rss_mb: f64,
    cpu: f64,
}

/// Opens `n` streams to `addr` (about 500 every 100 ms, as a burst of real clients arrives, not
/// one SYN flood) and waits for them all, watching `pid` while they are open.
async fn open_streams(
    (addr, inbound): (SocketAddr, Inbound),
    body: &str,
    n: usize,
    pid: Option<u32>,
) -> StreamRun {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut h2 = None;
    for i in 0..n {
        if let Inbound::Http2 { per_conn } = inbound
            && i % per_conn == 0
        {
            h2 = h2_connection(addr).await;
        }
        // A failed HTTP/2 connection fails its streams; they do not fall back to HTTP/1.
        let lost = matches!(inbound, Inbound::Http2 { .. }) && h2.is_none();
        tasks.push(if lost {
            tokio::spawn(async { None })
        } else {
            tokio::spawn(one_stream(addr, body.to_owned(), h2.clone()))
        });
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep_until((started + Duration::from_secs(5)).into()).await;
    let (mut rss, mut cpu) = (0.0, 0.0);
    if let Some(pid) = pid {
        let (before, at) = (cpu_secs(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        cpu = (cpu_secs(pid) - before) / at.elapsed().as_secs_f64();
        rss = rss_mb(pid);
    }
    let mut ttfb = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some((first, _)) => ttfb.push(first),
            None => errors += 1,
        }
    }
    ttfb.sort_unstable();
    StreamRun {
        ttfb,
        errors,
        rss_mb: rss,
        cpu,
    }
}

async fn streams() {
    // Two sockets a stream in the gateway when each client has its own connection: its
    // open-file limit caps what one process can hold. Raise this shell's limit to the hard one
    // (children inherit it); where the hard limit is below two sockets a stream, run as many as
    // it allows and say so. Clients on HTTP/2, a hundred streams a connection, leave the gateway
    // one socket a stream (upstream), so the whole number runs that way too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    );
    let spare = usize::try_from(hard.saturating_sub(1024)).unwrap_or(usize::MAX);
    let asked = env_or("BENCH_STREAMS", 10_000usize).min(spare);
    let per_conn = 100;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_STREAM_STANDIN", "10")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    let url = url.trim();
    let body =
        r#"{"model":"yi-lightning","stream":true,"messages":[{"role":"user","content":"stream"}]}"#;
    let provider: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .parse()
        .unwrap();
    println!("\nstreams: concurrent streams, each 10 chunks a second apart");
    let direct = open_streams((provider, Inbound::Http1), body, asked, None).await;
    println!(
        "  {asked} direct to the stand-in: {} finished, {} errors; time to first byte p50 {:.1} ms, p99 {:.1} ms",
        direct.ttfb.len(),
        direct.errors,
        pct_or_zero(&direct.ttfb, 0.5),
        pct_or_zero(&direct.ttfb, 0.99)
    );
    let h1 = asked.min(spare / 2);
    if h1 < asked {
        println!(
            "  through deja, a connection a stream: {h1} of {asked}, the hard open-file limit here being {hard} (two sockets a stream)"
        );
    }
    let h2 = asked.min(spare * per_conn / (per_conn + 1));
    let runs = [
        ("a connection a stream", Inbound::Http1, h1),
        (
            "HTTP/2 clients, 100 streams a connection",
            Inbound::Http2 { per_conn },
            h2,
        ),
    ];
    for (label, inbound, n) in runs {
        stream_through_deja(url, (label, inbound), n, body, &direct).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` streams through a fresh gateway, clients reaching it by `inbound`.
async fn stream_through_deja(
    url: &str,
    (label, inbound): (&str, Inbound),
    n: usize,
    body: &str,
    direct: &StreamRun,
) {
    let env = [
        ("DEJA__CACHE__DEFAULT_MODE", "off".to_owned()),
        ("DEJA__EMBEDDING__ENABLED", "false".to_owned()),
    ];
    let (mut gateway, addr) = harness::spawn_gateway(env!("CARGO_BIN_EXE_deja"), url, &env);
    let idle_rss = rss_mb(gateway.id());
    let through = open_streams((addr, inbound), body, n, Some(gateway.id())).await;
    let refused = metric_sum(addr, "deja_overload_rejections_total", &[]);
    let per_stream_kb = (through.rss_mb - idle_rss) * 1024.0 / n as f64;
    let (p50, p99) = (
        pct_or_zero(&through.ttfb, 0.5),
        pct_or_zero(&through.ttfb, 0.99),
    );
    println!(
        "  {n} through deja, {label}: rss idle {idle_rss:.0} MB, {:.0} MB with all open ({per_stream_kb:.1} KB a stream), cpu {:.0}% of a core, {refused} refused by admission; {} finished, {} errors; time to first byte p50 {p50:.1} ms ({:+.1}), p99 {p99:.1} ms ({:+.1})",
        through.rss_mb,
        through.cpu * 100.0,
        through.ttfb.len(),
        through.errors,
        p50 - pct_or_zero(&direct.ttfb, 0.5),
        p99 - pct_or_zero(&direct.ttfb, 0.99),
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
}

fn main() {
    if let Ok(chunks) = std::env::var("BENCH_STREAM_STANDIN") {
        return streams_stand_in(chunks.parse().unwrap());
    }
    let conns = env_or("BENCH_CONNS", 32usize);
    let scenarios = std::env::var("BENCH_SCENARIOS")
        .unwrap_or_else(|_| "redis_outage,cluster_master,shed,restart,streams".to_owned());
    harness::runtime().block_on(async {
        let stand_in = upstream::Upstream::spawn_quiet().await;
        for name in scenarios.split(',') {
            match name.trim() {
                "redis_outage" => redis_outage(&stand_in, conns).await,
                "cluster_master" => cluster_master(&stand_in, conns).await,
                "shed" => shed().await,
                "restart" => restart().await,
                "streams" => streams().await,
                other => println!("unknown scenario {other}"),
            }
        }
    });
}
