//! Requests sent one at a time, each timed with what the gateway said it did (the forward
//! bench's semantic hits and misses).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::harness::{micros, pct};

/// One request's outcome, as [`each_once`] saw it.
pub struct Timed {
    pub us: u32,
    pub ok: bool,
    /// `x-portkey-cache-status`.
    pub cache: String,
    /// Whether a candidate was refused (`x-deja-refused`).
    pub refused: bool,
}

/// Sends each body once, one after another on one keep-alive connection (a new one when the
/// gateway closed it), and times each.
pub async fn each_once(addr: SocketAddr, bodies: &[String]) -> Vec<Timed> {
    let connect = || async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    };
    let mut sender = connect().await;
    let mut out = Vec::with_capacity(bodies.len());
    for body in bodies {
        if sender.ready().await.is_err() {
            sender = connect().await;
        }
        let req = Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let started = Instant::now();
        let Ok(res) = sender.send_request(req).await else {
            out.push(Timed {
                us: micros(started),
                ok: false,
                cache: String::new(),
                refused: false,
            });
            sender = connect().await;
            continue;
        };
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (cache, refused) = (header("x-portkey-cache-status"), header("x-deja-refused"));
        let ok = res.status().is_success();
        let _ = res.into_body().collect().await;
        out.push(Timed {
            us: micros(started),
            ok,
            cache: cache.unwrap_or_default(),
            refused: refused.is_some(),
        });
    }
    out
}

/// p50 and p99 of some timings, ms, and how many.
pub fn summary(us: impl IntoIterator<Item = u32>) -> String {
    let mut v: Vec<u32> = us.into_iter().collect();
    if v.is_empty() {
        return "none".to_owned();
    }
    v.sort_unstable();
    format!(
        "p50 {:>6.3} ms   p99 {:>6.3} ms   ({} requests)",
        pct(&v, 0.50),
        pct(&v, 0.99),
        v.len()
    )
}
