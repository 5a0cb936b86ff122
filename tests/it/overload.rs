//! Per-route limits: past `max_concurrent` in flight and `max_queued` waiting, a fast 429 with
//! `Retry-After` in OpenAI's error shape; a queued request that waits past `queue_timeout` gets
//! the same; a stream holds its slot until it ends; the counts are in metrics.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Gateway, Reply, Upstream, chat_body, client, config_with_mode, metric};
use serde_json::Value;
use tokio::sync::Notify;

async fn gateway(upstream: &Upstream, max_queued: usize) -> Gateway {
    let extra = format!(
        "[[routes]]\nname = \"chat\"\n[routes.limits]\nmax_concurrent = 1\nmax_queued = {max_queued}\n\
         queue_timeout = \"300ms\"\n"
    );
    Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await
}

async fn post(gw: &Gateway, body: String) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn past_the_slots_and_the_queue_a_request_gets_a_fast_429_with_retry_after() {
    let upstream = Upstream::spawn().await;
    upstream.script([Reply::ok().delayed(Duration::from_millis(1500))]);
    let gw = Arc::new(gateway(&upstream, 1).await);

    let first = tokio::spawn({
        let gw = Arc::clone(&gw);
        async move { post(&gw, chat_body("slow one")).await.status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn({
        let gw = Arc::clone(&gw);
        async move {
            let res = post(&gw, chat_body("waits in the queue")).await;
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        metric(
            &gw.scrape_metrics().await,
            "deja_route_queue_depth",
            &[("route", "chat")]
        ),
        Some(1.0)
    );

    // One in flight, one waiting: the third is turned away at once.
    let refused = post(&gw, chat_body("no room")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
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
    let (status, body) = queued.await.unwrap();
    assert_eq!(status, 429, "{body}");
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
    assert_eq!(post(&gw, chat_body("after")).await.status(), 200);
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
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"yi-lightning\",\
             \"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    // The stand-in holds every chunk after the first until the gate opens.
    let events = [
        chunk("{\"role\":\"assistant\",\"content\":\"one \"}", "null"),
        chunk("{\"content\":\"two\"}", "\"stop\"") + "data: [DONE]\n\n",
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    upstream.script([Reply::sse(&events, Some(Arc::clone(&gate)))]);
    let gw = gateway(&upstream, 0).await;

    let body = serde_json::json!({"model": "yi-lightning", "stream": true,
        "messages": [{"role": "user", "content": "stream"}]});
    let mut stream = post(&gw, body.to_string()).await;
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));

    // The stream is still open: its slot is taken and nothing may queue.
    assert_eq!(post(&gw, chat_body("while streaming")).await.status(), 429);

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
    assert_eq!(post(&gw, chat_body("after the stream")).await.status(), 200);
}
