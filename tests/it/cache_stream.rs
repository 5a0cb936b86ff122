//! Streams and the cache, end to end with a real gateway, a real (private) Redis and the upstream
//! stand-in: a streamed miss is recorded and stored, hits are replayed as OpenAI event streams
//! (from streamed and from plain entries), streams that did not end cleanly are never stored,
//! retries happen only before the first byte, and a client hanging up cancels the upstream.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::upstream::{CHUNK_ID, DONE, chunk, event};
use common::{Gateway, Reply, Upstream, ask, client, config_with_mode, eventually, metric};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

const TEXT: &str = "Streaming answers are cached, then replayed.";

/// An OpenAI event stream that sends `pieces` as content deltas; each entry is one SSE event.
fn openai_events(pieces: &[&str], finish: Option<&str>, done: bool) -> Vec<String> {
    let frame = |delta: Value, finish: Option<&str>| event(&chunk(delta, finish));
    let mut events = vec![frame(json!({"role": "assistant", "content": ""}), None)];
    events.extend(pieces.iter().map(|p| frame(json!({ "content": p }), None)));
    if let Some(finish) = finish {
        events.push(frame(json!({}), Some(finish)));
        let mut usage = chunk(json!({}), None);
        usage["choices"] = json!([]);
        usage["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16});
        events.push(event(&usage));
    }
    if done {
        events.push(DONE.to_owned());
    }
    events
}

fn clean_stream() -> Reply {
    let events = openai_events(
        &["Streaming answers ", "are cached, ", "then replayed."],
        Some("stop"),
        true,
    );
    Reply::sse(&events, None)
}

/// A gateway caching in `redis` in `mode` (semantic on the shared model).
async fn gateway_on_redis(upstream: &Upstream, redis: &RedisServer, mode: &str) -> Gateway {
    let extra = common::redis_section(&redis.url, Some("200ms"));
    Gateway::spawn_sharing_model(config_with_mode(&upstream.url, mode, &extra)).await
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

/// Checks OpenAI's framing byte by byte and returns the chunks' JSON: every event is exactly
/// `data: <json>\n\n`, the first delta carries the role, the last chunk with choices carries a
/// `finish_reason`, and the stream ends with `data: [DONE]\n\n`.
fn framed_chunks(text: &str) -> Vec<Value> {
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
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    upstream.script([clean_stream()]);
    let body = request("How are streams cached?", true, true);

    let miss = ask(&gw, &body, &[]).await;
    assert_eq!((miss.status, miss.cache()), (200, "MISS"));
    assert_eq!(streamed_text(&framed_chunks(&miss.body)), TEXT);

    // `[DONE]` reached the client after the write-back, so this finds the entry at once.
    let hit = ask(&gw, &body, &[]).await;
    assert_eq!((hit.status, hit.cache()), (200, "HIT"));
    assert_eq!(hit.header("content-type"), Some("text/event-stream"));
    let chunks = framed_chunks(&hit.body);
    assert_eq!(streamed_text(&chunks), TEXT);
    assert!(chunks.len() > 4, "replayed in word-sized pieces");
    assert!(chunks.iter().all(|c| c["id"] == CHUNK_ID));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 16);

    let plain = request("How are streams cached?", false, false);
    let reply = ask(&gw, &plain, &[]).await;
    assert_eq!((reply.status, reply.cache()), (200, "HIT"));
    let body = reply.json();
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
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    let miss = ask(&gw, &request("Say hello", false, false), &[]).await;
    assert_eq!(miss.cache(), "MISS");
    for include_usage in [true, false] {
        let hit = ask(&gw, &request("Say hello", true, include_usage), &[]).await;
        assert_eq!(hit.cache(), "HIT");
        let chunks = framed_chunks(&hit.body);
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
    let gw = gateway_on_redis(&upstream, &redis, "semantic").await;
    upstream.script([clean_stream()]);
    let miss = ask(&gw, &request("What is an AI gateway?", true, false), &[]).await;
    assert_eq!(miss.cache(), "MISS");
    let hit = ask(&gw, &request("What's an AI gateway?", true, false), &[]).await;
    assert_eq!(hit.cache(), "SEMANTIC HIT");
    let similarity = hit.similarity().expect("x-deja-similarity");
    assert!(similarity >= 0.96, "{similarity}");
    assert_eq!(streamed_text(&framed_chunks(&hit.body)), TEXT);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn streams_that_did_not_end_cleanly_are_never_stored() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    let events = |pieces: &[&str], finish, done| openai_events(pieces, finish, done);
    let no_done = events(&["cut ", "short"], Some("stop"), false);
    let no_finish = events(&["never ", "finished"], None, true);
    let mut error_event = events(&["partial"], None, false);
    error_event.push("data: {\"error\":{\"message\":\"overloaded\",\"code\":\"busy\"}}\n\n".into());
    let reset = events(&["then the ", "line dropped"], None, false);
    let cases = [
        ("no [DONE]", Reply::sse(&no_done, None), "unfinished"),
        (
            "no finish_reason",
            Reply::sse(&no_finish, None),
            "unfinished",
        ),
        ("error event", Reply::sse(&error_event, None), "error_event"),
        (
            "connection reset",
            Reply::sse_then_reset(&reset),
            "unreachable",
        ),
    ];
    for (i, (name, reply, outcome)) in cases.into_iter().enumerate() {
        let body = request(&format!("case {i}"), true, false);
        upstream.script([reply, clean_stream()]);
        let first = ask(&gw, &body, &[]).await;
        assert_eq!((first.status, first.cache()), (200, "MISS"), "{name}");
        let text = first.body;
        if name == "connection reset" {
            // The status line is long gone: the failure arrives as an error event, no [DONE].
            assert!(text.ends_with("\n\n") && !text.contains("[DONE]"), "{text}");
            let last = text.trim_end().rsplit("\n\n").next().unwrap();
            let error: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(error["error"]["code"], "upstream_unreachable", "{name}");
        }
        let again = ask(&gw, &body, &[]).await;
        assert_eq!(again.cache(), "MISS", "{name}: must not have been stored");
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
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    let events = openai_events(&["stalls ", "here"], Some("stop"), true);
    let gate = Arc::new(Notify::new());
    upstream.script([Reply::sse(&events, Some(gate))]);
    let body = request("stall", true, false);
    let started = Instant::now();
    let res = ask(
        &gw,
        &body,
        &[("x-portkey-config", r#"{"request_timeout":300}"#)],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let text = res.body;
    assert!(text.contains("\"code\":\"upstream_timeout\""), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn retries_happen_before_the_first_byte_only() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    let retry = [("x-portkey-config", r#"{"retry":{"attempts":2}}"#)];
    // Broken before any byte: retried, and the client sees one clean stream.
    upstream.script([
        Reply::sse_then_reset::<&str>(&[]),
        Reply::status(503),
        clean_stream(),
    ]);
    let res = ask(&gw, &request("retry me", true, false), &retry).await;
    assert_eq!(
        res.header("x-portkey-retry-attempt-count"),
        Some("2"),
        "{res:?}"
    );
    assert_eq!(streamed_text(&framed_chunks(&res.body)), TEXT);
    assert_eq!(upstream.calls(), 3);

    // Broken after the first byte: no retry (the client already has part of an answer).
    let events = openai_events(&["half "], None, false);
    upstream.script([Reply::sse_then_reset(&events), clean_stream()]);
    let res = ask(&gw, &request("no retry", true, false), &retry).await;
    assert!(res.body.contains("upstream_unreachable"), "{}", res.body);
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn a_client_hanging_up_cancels_the_upstream_and_stores_nothing() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let gw = gateway_on_redis(&upstream, &redis, "simple").await;
    let many: Vec<String> = (0..50).map(|i| format!("word{i} ")).collect();
    let pieces: Vec<&str> = many.iter().map(String::as_str).collect();
    let events = openai_events(&pieces, Some("stop"), true);
    let gate = Arc::new(Notify::new());
    upstream.script([Reply::sse(&events, Some(Arc::clone(&gate)))]);
    let body = request("hang up", true, false);
    // Read by hand: the client hangs up after the first chunk.
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);

    eventually(
        "the upstream stream to be cancelled",
        Duration::from_secs(5),
        || async {
            // Let the upstream try its next chunk: a write is how a closed connection shows.
            gate.notify_one();
            upstream.streams_cancelled() > 0
        },
    )
    .await;
    let metrics = gw.scrape_metrics().await;
    let gone = [("route", "default"), ("outcome", "client_gone")];
    assert_eq!(metric(&metrics, "deja_streams_total", &gone), Some(1.0));
    upstream.script([clean_stream()]);
    assert_eq!(ask(&gw, &body, &[]).await.cache(), "MISS");
}
