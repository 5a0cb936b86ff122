//! The accept loop: each connection is served by hyper (HTTP/1.1, or HTTP/2 by prior knowledge)
//! under the connection-level limits of `[server]`: how long a client may take to send its
//! headers, and how large they may be before hyper itself gives up. On the shutdown signal the
//! loop stops accepting and every connection finishes its in-flight requests, then closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::config::ServerConfig;

/// hyper's own cap on the bytes it buffers while reading a request head (its default); ours is
/// `server.max_header_bytes`, checked in `limits` so that the 431 carries an OpenAI body.
const HYPER_DEFAULT_BUF: usize = 8192 + 4096 * 100;
/// Most header lines hyper parses per request (its default is 100, past which it answers an
/// empty 431 before our layer sees the request).
const MAX_HEADER_COUNT: usize = 4096;
/// Pause after an accept error that is not about one connection (such as too many open files),
/// so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the kernel may queue for `accept` (it caps this at `net.core.somaxconn`).
/// tokio's `TcpListener::bind` asks for 1024: a burst of new clients (500 every 100 ms in the
/// streams bench) overflowed that, and each dropped handshake cost its client a 1-3 s SYN
/// retry.
const BACKLOG: u32 = 8192;

/// Binds `addr` for the accept loop, with a deep accept queue.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's own bind does: a restarted deja can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `router` on `listener` until `signal` resolves; then stops accepting and returns once
/// every connection has finished. Dropping the returned future drops every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerConfig,
    signal: impl Future<Output = ()>,
) {
    let builder = builder(settings);
    let header_read_timeout = settings.header_read_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Owned here so that dropping this future (shutdown grace over) aborts every connection.
    let mut connections = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn = connection(
                        stream,
                        router.clone(),
                        builder.clone(),
                        header_read_timeout,
                        stop_rx.clone(),
                    );
                    connections.spawn(conn);
                    while connections.try_join_next().is_some() {}
                }
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "a connection failed while being accepted");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting connections failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut signal => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

fn builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    // Generous, so that headers over `max_header_bytes` reach our layer and get a body.
    let buffer = settings
        .max_header_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
        .max(HYPER_DEFAULT_BUF);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(buffer)
        .max_headers(MAX_HEADER_COUNT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
    builder
}

/// Serves one connection. A connection that has not sent a whole first request within
/// `header_read_timeout` is dropped: hyper's own HTTP/1 timeout only starts once the protocol
/// is known, and a client that sends nothing, or only part of HTTP/2's preface, would otherwise
/// hold the connection for ever.
async fn connection(
    stream: TcpStream,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let first_request = Arc::new(Notify::new());
    let seen = Arc::clone(&first_request);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        seen.notify_one();
        let mut router = router.clone();
        async move { router.call(request).await }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let first_deadline = tokio::time::sleep(header_read_timeout);
    tokio::pin!(first_deadline);
    let (mut waiting_first, mut stopping) = (true, false);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = first_request.notified(), if waiting_first => waiting_first = false,
            () = &mut first_deadline, if waiting_first => {
                tracing::debug!("no request within server.header_read_timeout; closing");
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Accept errors that concern one connection (it was reset before we took it), not the
/// listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
