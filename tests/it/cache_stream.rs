//! Streams and the cache, end to end with a real gateway, a real (private) Redis and the upstream
//! stand-in: a streamed miss is recorded and stored, hits are replayed as OpenAI event streams
//! (from streamed and from plain entries), streams that did not end cleanly are never stored,
//! retries happen only before the first byte, and a client hanging up cancels the upstream.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Gateway, Reply, Upstream, client, config_with_mode, metric, shared_embedder};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

const TEXT: &str = "Streaming answers are cached, then replayed.";

/// An OpenAI event stream that sends `pieces` as content deltas; each entry is one SSE event.
fn openai_events(pieces: &[&str], finish: Option<&str>, done: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let chunk = json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "yi-lightning", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(pieces.iter().map(|p| chunk(json!({ "content": p }), None)));
    if let Some(finish) = finish {
        events.push(chunk(json!({}), Some(finish)));
        let usage = json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "yi-lightning", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}});
        events.push(format!("data: {usage}\n\n"));
    }
    if done {
        events.push("data: [DONE]\n\n".to_owned());
    }
    events
}

fn as_str(events: &[String]) -> Vec<&str> {
    events.iter().map(String::as_str).collect()
}

fn clean_stream() -> Reply {
    let events = openai_events(
        &["Streaming answers ", "are cached, ", "then replayed."],
        Some("stop"),
        true,
    );
    Reply::sse(&events.iter().map(String::as_str).collect::<Vec<_>>(), None)
}

async fn gateway(upstream: &Upstream, redis: &RedisServer, mode: &str) -> Gateway {
    let extra = format!("[redis]\nurl = \"{}\"\ntimeout = \"200ms\"\n", redis.url);
    let config = config_with_mode(&upstream.url, mode, &extra);
    if mode == "semantic" {
        let gw = Gateway::spawn_with_embedder(config, shared_embedder()).await;
        common::wait_ready(&gw).await;
        gw
    } else {
        Gateway::spawn(config).await
    }
}

fn request(question: &str, stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "yi-lightning",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": question}],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

struct Streamed {
    status: u16,
    cache: String,
    similarity: Option<String>,
    content_type: String,
    raw: Vec<u8>,
}

async fn stream(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> Streamed {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Streamed {
        status: res.status().as_u16(),
        cache: header("x-portkey-cache-status").unwrap_or_default(),
        similarity: header("x-deja-similarity"),
        content_type: header("content-type").unwrap_or_default(),
        raw: res.bytes().await.unwrap().to_vec(),
    }
}

/// Checks OpenAI's framing byte by byte and returns the chunks' JSON: every event is exactly
/// `data: <json>\n\n`, the first delta carries the role, the last chunk with choices carries a
/// `finish_reason`, and the stream ends with `data: [DONE]\n\n`.
fn framed_chunks(raw: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(raw).unwrap();
    let body = text
        .strip_suffix("data: [DONE]\n\n")
        .unwrap_or_else(|| panic!("no [DONE] at the end: {text:?}"));
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(
        events.iter().map(|e| e.len() + 2).sum::<usize>(),
        body.len(),
        "every event ends in one blank line"
    );
    let chunks: Vec<Value> = events
        .iter()
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .expect("each event is one data line");
            assert!(!data.contains('\n'), "one line per event: {data:?}");
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last_with_choice = chunks
        .iter()
        .rev()
        .find(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()))
        .unwrap();
    assert!(last_with_choice["choices"][0]["finish_reason"].is_string());
    chunks
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn a_streamed_miss_is_stored_and_served_to_streams_and_plain_requests() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    upstream.script([clean_stream()]);
    let ask = request("How are streams cached?", true, true);

    let miss = stream(&gw, &ask, &[]).await;
    assert_eq!((miss.status, miss.cache.as_str()), (200, "MISS"));
    assert_eq!(streamed_text(&framed_chunks(&miss.raw)), TEXT);

    // `[DONE]` reached the client after the write-back, so this finds the entry at once.
    let hit = stream(&gw, &ask, &[]).await;
    assert_eq!((hit.status, hit.cache.as_str()), (200, "HIT"));
    assert_eq!(hit.content_type, "text/event-stream");
    let chunks = framed_chunks(&hit.raw);
    assert_eq!(streamed_text(&chunks), TEXT);
    assert!(chunks.len() > 4, "replayed in word-sized pieces");
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-s1"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 16);

    let plain = request("How are streams cached?", false, false);
    let (status, cache, _, body) = common::chat(&gw, &plain, &[]).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(upstream.calls(), 1);
    let metrics = gw.scrape_metrics().await;
    let complete = [("route", "default"), ("outcome", "complete")];
    assert_eq!(metric(&metrics, "deja_streams_total", &complete), Some(1.0));
}

#[tokio::test]
async fn a_plain_entry_is_replayed_as_a_stream() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    let (_, cache, _, _) = common::chat(&gw, &request("Say hello", false, false), &[]).await;
    assert_eq!(cache, "MISS");
    for include_usage in [true, false] {
        let hit = stream(&gw, &request("Say hello", true, include_usage), &[]).await;
        assert_eq!(hit.cache, "HIT");
        let chunks = framed_chunks(&hit.raw);
        assert_eq!(streamed_text(&chunks), "hello from the stand-in");
        let usage = chunks.iter().find(|c| c["usage"].is_object());
        assert_eq!(
            usage.map(|c| c["usage"]["total_tokens"].clone()),
            include_usage.then_some(json!(10)),
            "usage only when asked for"
        );
    }
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_semantic_hit_is_replayed_as_a_stream_with_its_headers() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "semantic").await;
    upstream.script([clean_stream()]);
    let miss = stream(&gw, &request("What is an AI gateway?", true, false), &[]).await;
    assert_eq!(miss.cache, "MISS");
    let hit = stream(&gw, &request("What's an AI gateway?", true, false), &[]).await;
    assert_eq!(hit.cache, "SEMANTIC HIT");
    let similarity: f32 = hit.similarity.expect("x-deja-similarity").parse().unwrap();
    assert!(similarity >= 0.96, "{similarity}");
    assert_eq!(streamed_text(&framed_chunks(&hit.raw)), TEXT);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn streams_that_did_not_end_cleanly_are_never_stored() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    let events = |pieces: &[&str], finish, done| openai_events(pieces, finish, done);
    let no_done = events(&["cut ", "short"], Some("stop"), false);
    let no_finish = events(&["never ", "finished"], None, true);
    let mut error_event = events(&["partial"], None, false);
    error_event.push("data: {\"error\":{\"message\":\"overloaded\",\"code\":\"busy\"}}\n\n".into());
    let reset = events(&["then the ", "line dropped"], None, false);
    let cases = [
        (
            "no [DONE]",
            Reply::sse(&as_str(&no_done), None),
            "unfinished",
        ),
        (
            "no finish_reason",
            Reply::sse(&as_str(&no_finish), None),
            "unfinished",
        ),
        (
            "error event",
            Reply::sse(&as_str(&error_event), None),
            "error_event",
        ),
        (
            "connection reset",
            Reply::sse_then_reset(&as_str(&reset)),
            "unreachable",
        ),
    ];
    for (i, (name, reply, outcome)) in cases.into_iter().enumerate() {
        let ask = request(&format!("case {i}"), true, false);
        upstream.script([reply, clean_stream()]);
        let first = stream(&gw, &ask, &[]).await;
        assert_eq!(
            (first.status, first.cache.as_str()),
            (200, "MISS"),
            "{name}"
        );
        let text = String::from_utf8(first.raw).unwrap();
        if name == "connection reset" {
            // The status line is long gone: the failure arrives as an error event, no [DONE].
            assert!(text.ends_with("\n\n") && !text.contains("[DONE]"), "{text}");
            let last = text.trim_end().rsplit("\n\n").next().unwrap();
            let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(error["error"]["code"], "upstream_unreachable", "{name}");
        }
        let again = stream(&gw, &ask, &[]).await;
        assert_eq!(again.cache, "MISS", "{name}: must not have been stored");
        assert_eq!(upstream.calls(), 2 * (i + 1), "{name}");
        let metrics = gw.scrape_metrics().await;
        let labels = [("route", "default"), ("outcome", outcome)];
        assert!(
            metric(&metrics, "deja_streams_total", &labels).unwrap_or(0.0) >= 1.0,
            "{name}: {outcome}"
        );
    }
}

#[tokio::test]
async fn a_stalled_stream_ends_with_a_timeout_event() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    let events = openai_events(&["stalls ", "here"], Some("stop"), true);
    let gate = Arc::new(Notify::new());
    let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
    upstream.script([Reply::sse(&chunks, Some(gate))]);
    let ask = request("stall", true, false);
    let started = Instant::now();
    let res = stream(
        &gw,
        &ask,
        &[("x-portkey-config", r#"{"request_timeout":300}"#)],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let text = String::from_utf8(res.raw).unwrap();
    assert!(text.contains("\"code\":\"upstream_timeout\""), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn retries_happen_before_the_first_byte_only() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    let retry = [("x-portkey-config", r#"{"retry":{"attempts":2}}"#)];
    // Broken before any byte: retried, and the client sees one clean stream.
    upstream.script([
        Reply::sse_then_reset(&[]),
        Reply::status(503),
        clean_stream(),
    ]);
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header(retry[0].0, retry[0].1)
        .body(request("retry me", true, false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()
            .get("x-portkey-retry-attempt-count")
            .map(|v| v.to_str().unwrap()),
        Some("2"),
        "{res:?}"
    );
    let raw = res.bytes().await.unwrap();
    assert_eq!(streamed_text(&framed_chunks(&raw)), TEXT);
    assert_eq!(upstream.calls(), 3);

    // Broken after the first byte: no retry (the client already has part of an answer).
    let events = openai_events(&["half "], None, false);
    let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
    upstream.script([Reply::sse_then_reset(&chunks), clean_stream()]);
    let res = stream(&gw, &request("no retry", true, false), &retry).await;
    assert!(
        String::from_utf8(res.raw)
            .unwrap()
            .contains("upstream_unreachable")
    );
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn a_client_hanging_up_cancels_the_upstream_and_stores_nothing() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway(&upstream, &redis, "simple").await;
    let many: Vec<String> = (0..50).map(|i| format!("word{i} ")).collect();
    let pieces: Vec<&str> = many.iter().map(String::as_str).collect();
    let events = openai_events(&pieces, Some("stop"), true);
    let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
    let gate = Arc::new(Notify::new());
    upstream.script([Reply::sse(&chunks, Some(Arc::clone(&gate)))]);
    let ask = request("hang up", true, false);
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(ask.to_string())
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);

    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.streams_cancelled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never cancelled"
        );
        // Let the upstream try its next chunk: a write is how a closed connection shows.
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = gw.scrape_metrics().await;
    let gone = [("route", "default"), ("outcome", "client_gone")];
    assert_eq!(metric(&metrics, "deja_streams_total", &gone), Some(1.0));
    upstream.script([clean_stream()]);
    assert_eq!(stream(&gw, &ask, &[]).await.cache, "MISS");
}
