//! Limits on what a client or a provider can make deja hold: an oversized upstream answer
//! (plain or streamed) is refused and never cached, slow or silent connections are closed, slow
//! bodies get a 408, and the refusals hyper or axum would answer with an empty body (405, 413,
//! 431) carry OpenAI's error shape.

use std::time::Duration;

use deja::store::keys::Scope;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::upstream::{DONE, chunk, event};
use crate::common::{Gateway, Reply, Upstream, ask, call, client, config, question, streamed};

/// Longest wait for something that must happen after a short configured timeout; reaching it
/// means the limit did not work, not that it was slow.
const CAP: Duration = Duration::from_secs(30);

/// A gateway whose upstream answers are limited to `max_response_bytes`.
async fn limited_gateway(upstream: &Upstream, max_response_bytes: usize) -> Gateway {
    // Default retries (3) apply: an oversized answer must not be asked for again.
    let mut config = config(&upstream.url, "");
    config.upstream.max_response_bytes = max_response_bytes;
    Gateway::spawn(config).await
}

/// An OpenAI event stream with `pieces` content deltas of `size` bytes each, ending cleanly.
fn events(pieces: usize, size: usize) -> Vec<String> {
    let frame = |delta: Value, finish: Option<&str>| event(&chunk(delta, finish));
    let mut events = vec![frame(json!({"role": "assistant", "content": ""}), None)];
    events.extend((0..pieces).map(|_| frame(json!({"content": "y".repeat(size)}), None)));
    events.push(frame(json!({}), Some("stop")));
    events.push(DONE.to_owned());
    events
}

#[tokio::test]
async fn an_oversized_upstream_answer_is_a_502_and_not_cached() {
    let upstream = Upstream::spawn().await;
    let gw = limited_gateway(&upstream, 4096).await;
    let huge = Reply::answer(&"x".repeat(64 * 1024));
    // With a Content-Length over the limit, then without one (a chunked body read until it
    // passes the limit), each asked twice: neither is retried nor stored.
    let chunked = Reply::sse(&events(40, 1024), None);
    upstream.script([huge.clone(), huge, chunked.clone(), chunked]);
    for (i, text) in ["big", "big", "chunked", "chunked"].into_iter().enumerate() {
        let reply = ask(&gw, &question(text), &[]).await;
        assert_eq!(reply.status, 502, "{}", reply.body);
        assert_ne!(reply.cache(), "HIT", "an oversized answer was cached");
        let body = reply.json();
        assert_eq!(
            body["error"]["code"], "upstream_response_too_large",
            "{body}"
        );
        assert_eq!(body["error"]["type"], "api_error");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("4096"),
            "the message names the limit: {body}"
        );
        assert_eq!(upstream.calls(), i + 1, "refused without a retry");
    }
    // An answer within the limit still passes, and is cached.
    assert_eq!(ask(&gw, &question("small"), &[]).await.status, 200);
    assert_eq!(ask(&gw, &question("small"), &[]).await.cache(), "HIT");
}

#[tokio::test]
async fn an_oversized_stream_is_cut_with_an_error_event_and_not_cached() {
    let upstream = Upstream::spawn().await;
    let gw = limited_gateway(&upstream, 4096).await;
    let small = events(3, 16);
    let big = events(40, 512);
    upstream.script([
        Reply::sse(&small, None),
        Reply::sse(&big, None),
        Reply::sse(&big, None),
    ]);

    // The same setup stores a stream within the limit...
    let raw = ask(&gw, &streamed("small"), &[]).await.body;
    assert!(raw.ends_with(DONE), "{raw}");
    let replayed = ask(&gw, &streamed("small"), &[]).await;
    assert_eq!(replayed.cache(), "HIT", "the control stream was not stored");

    // ...and cuts one past it: at most the limit passes, then an error event, no [DONE].
    for _ in 0..2 {
        let res = ask(&gw, &streamed("big"), &[]).await;
        assert_eq!(res.status, 200, "the status line left with the first chunk");
        let cache = res.header("x-portkey-cache-status");
        assert_ne!(cache.expect("a cache status"), "HIT");
        let raw = res.body;
        let (passed, error) = raw
            .rsplit_once("data: {\"error\"")
            .unwrap_or_else(|| panic!("no error event at the end: {raw}"));
        assert!(passed.len() <= 4096, "{} bytes passed", passed.len());
        assert!(error.contains("upstream_response_too_large"), "{error}");
        assert!(!raw.contains("[DONE]"), "{raw}");
    }
    assert_eq!(
        upstream.calls(),
        3,
        "the cut stream was asked again: never stored"
    );
}

/// Reads until the peer closes the connection; `None` if it is still open after [`CAP`].
async fn until_closed(stream: &mut TcpStream, trickle: Option<&[u8]>) -> Option<usize> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    tokio::time::timeout(CAP, async {
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return sent,
                    Ok(_) => {}
                },
                _ = tick.tick(), if trickle.is_some() => {
                    let line = trickle.unwrap_or_default();
                    if stream.write_all(line).await.is_err() {
                        return sent;
                    }
                    sent += 1;
                }
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_connection_trickling_headers_is_closed() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(
        &upstream.url,
        "[server]\nheader_read_timeout = \"300ms\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: deja\r\n")
        .await
        .unwrap();
    let lines = until_closed(&mut stream, Some(b"x-trickle: 1\r\n")).await;
    let lines = lines.expect("a client trickling header lines kept its connection");
    assert!(lines >= 1, "closed before any trickling");
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(
        &upstream.url,
        "[server]\nheader_read_timeout = \"300ms\"\n",
    ))
    .await;
    // Nothing at all, and half of HTTP/2's preface (before the protocol is even known).
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        assert!(
            until_closed(&mut stream, None).await.is_some(),
            "a connection sending {opening:?} was kept open"
        );
    }
    // A client that keeps its connection busy is not cut by these limits.
    assert_eq!(ask(&gw, &question("still served"), &[]).await.status, 200);
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a raw connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(CAP, async {
        loop {
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("no response");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(
        &upstream.url,
        "[server]\nbody_read_timeout = \"300ms\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: deja\r\n\
              content-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let body: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("300ms"));
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn method_not_allowed_has_an_openai_body() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    for (method, path) in [
        (http::Method::GET, "/v1/chat/completions"),
        (http::Method::DELETE, "/v1/models"),
        (http::Method::PATCH, "/v1/configs"),
    ] {
        let res = client()
            .request(method.clone(), format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert!(res.headers().contains_key("allow"), "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
        assert!(body["error"]["message"].as_str().unwrap().contains(path));
    }
}

#[tokio::test]
async fn oversized_headers_get_431_with_a_body() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    // One huge header, and many headers (more than hyper's default count of 100).
    let one_big = client()
        .post(&url)
        .header("x-big", "v".repeat(100 * 1024))
        .body(question("hi").to_string());
    let mut many = client().post(&url).body(question("hi").to_string());
    for i in 0..300 {
        many = many.header(format!("x-many-{i}"), "w".repeat(256));
    }
    for request in [one_big, many] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 431);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("65536"));
    }
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn an_oversized_admin_body_is_a_413() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(
        &upstream.url,
        &format!("[server]\nmax_body_bytes = 1024\n[store]\nurl = \"{url}\"\n"),
    ))
    .await;
    let big = json!({"name": "big", "config": {"retry": {"attempts": 1}}, "pad": "p".repeat(4096)});
    let (status, body) = call(
        &gw,
        http::Method::POST,
        "/v1/configs",
        Some(&admin),
        Some(big),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
}
