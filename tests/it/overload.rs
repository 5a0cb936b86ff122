//! Per-route limits: past `max_concurrent` in flight and `max_queued` waiting, a fast 429 with
//! `Retry-After` in OpenAI's error shape; a queued request that waits past `queue_timeout` gets
//! the same; a stream holds its slot until it ends; the counts are in metrics.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::upstream::{DONE, chunk, event};
use common::{
    Gateway, Reply, Upstream, ask, client, config_with_mode, eventually, metric, question,
    streamed, until_metric,
};
use serde_json::json;
use tokio::sync::Notify;

/// A gateway whose one route takes one request at a time and queues `max_queued` more.
async fn one_slot_gateway(upstream: &Upstream, max_queued: usize) -> Gateway {
    let extra = format!(
        "[[routes]]\nname = \"chat\"\n[routes.limits]\nmax_concurrent = 1\nmax_queued = {max_queued}\n\
         queue_timeout = \"300ms\"\n"
    );
    Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await
}

/// The status of asking `text`.
async fn status_of(gw: &Gateway, text: &str) -> u16 {
    ask(gw, &question(text), &[]).await.status
}

#[tokio::test]
async fn past_the_slots_and_the_queue_a_request_gets_a_fast_429_with_retry_after() {
    let upstream = Upstream::spawn().await;
    upstream.script([Reply::ok().delayed(Duration::from_millis(1500))]);
    let gw = Arc::new(one_slot_gateway(&upstream, 1).await);

    let first = tokio::spawn({
        let gw = Arc::clone(&gw);
        async move { status_of(&gw, "slow one").await }
    });
    // It holds the slot once the provider has it.
    eventually(
        "the first request to reach the provider",
        Duration::from_secs(5),
        || async { upstream.calls() == 1 },
    )
    .await;
    let queued = tokio::spawn({
        let gw = Arc::clone(&gw);
        async move { ask(&*gw, &question("waits in the queue"), &[]).await }
    });
    let depth = [("route", "chat")];
    until_metric(&*gw, "deja_route_queue_depth", &depth, 1.0).await;
    let text = gw.scrape_metrics().await;
    assert_eq!(metric(&text, "deja_route_queue_depth", &depth), Some(1.0));

    // One in flight, one waiting: the third is turned away at once.
    let refused = ask(&*gw, &question("no room"), &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let body = refused.json();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`chat`"),
        "{body}"
    );

    // The queued one waited its 300 ms and gave up; the first one is answered.
    let queued = queued.await.unwrap();
    let body = queued.json();
    assert_eq!(queued.status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waited"),
        "{body}"
    );
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        upstream.calls(),
        1,
        "refused requests never reach the provider"
    );

    // The slot is free again.
    assert_eq!(status_of(&gw, "after").await, 200);
    let text = gw.scrape_metrics().await;
    let rejected = |reason| {
        metric(
            &text,
            "deja_overload_rejections_total",
            &[("route", "chat"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("queue_full"), Some(1.0));
    assert_eq!(rejected("queue_timeout"), Some(1.0));
    assert_eq!(
        metric(&text, "deja_route_queue_depth", &[("route", "chat")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_stream_holds_its_slot_until_it_ends() {
    let upstream = Upstream::spawn().await;
    let gate = Arc::new(Notify::new());
    // The stand-in holds every chunk after the first until the gate opens.
    let events = [
        event(&chunk(
            json!({"role": "assistant", "content": "one "}),
            None,
        )),
        event(&chunk(json!({"content": "two"}), Some("stop"))) + DONE,
    ];
    upstream.script([Reply::sse(&events, Some(Arc::clone(&gate)))]);
    let gw = one_slot_gateway(&upstream, 0).await;

    // Read by hand: the stream stays open while the test asks again.
    let mut stream = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(streamed("stream").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));

    // The stream is still open: its slot is taken and nothing may queue.
    assert_eq!(status_of(&gw, "while streaming").await, 429);

    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("[DONE]"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(status_of(&gw, "after the stream").await, 200);
}
