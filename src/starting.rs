//! While the model loads and the state is built (seconds), the port answers instead of leaving
//! connections waiting in the backlog: `/healthz` says alive, everything else is a 503
//! `starting` error with `Retry-After: 1`, so load balancers and clients move on at once. Each
//! connection is closed after its answer, so the client's next one reaches the real server; one
//! whose headers are not in within `server.header_read_timeout` is closed without one.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::error::AppError;

/// Awaits `building`, answering connections on `listener` in the meantime; a client gets at
/// most `header_read_timeout` to send its request's headers.
pub async fn answer_while<T>(
    listener: &TcpListener,
    header_read_timeout: Duration,
    building: impl Future<Output = T>,
) -> T {
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, header_read_timeout));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection while starting failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    };
    tokio::select! {
        built = building => built,
        never = accept => never,
    }
}

async fn answer(stream: TcpStream, header_read_timeout: Duration) {
    let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, Infallible>(starting(req.uri().path())))
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection during start-up ended badly");
    }
}

fn starting(path: &str) -> Response<Body> {
    if path == "/healthz" {
        return axum::Json(serde_json::json!({"status": "starting"})).into_response();
    }
    AppError::Starting.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_port_answers_503_until_the_state_is_built() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (done, built) = tokio::sync::oneshot::channel::<u32>();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let probe = async {
            let res = client
                .post(format!("{url}/v1/chat/completions"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers()["retry-after"], "1");
            assert_eq!(res.headers()["connection"], "close");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "starting");
            assert_eq!(body["error"]["type"], "api_error");
            let alive = client.get(format!("{url}/healthz")).send().await.unwrap();
            assert_eq!(alive.status(), 200);
            done.send(7).unwrap();
        };
        let (built, ()) = tokio::join!(
            answer_while(&listener, Duration::from_secs(10), async {
                built.await.unwrap()
            }),
            probe
        );
        assert_eq!(built, 7, "the builder's value comes back once it is done");
    }

    #[tokio::test]
    async fn a_client_slow_with_its_headers_is_dropped_while_starting() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            // Ends (EOF or reset) once the timeout closes the connection; a hang fails the test.
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        };
        tokio::select! {
            () = answer_while(&listener, Duration::from_millis(200), std::future::pending()) => {}
            () = probe => {}
        }
    }
}
