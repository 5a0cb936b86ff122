//! Forwarding through a real gateway to a real HTTP stand-in: bodies, headers, statuses, streams.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Gateway, Reply, Upstream, ask, client, config, eventually, question};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[tokio::test]
async fn forwards_the_body_unchanged_with_the_provider_key() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    let body = r#"{"model":"yi-lightning","messages":[{"role":"user","content":"你好"}],"x_unknown":{"keep":[1,2.5,null]},"temperature":0.3}"#;
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("authorization", "Bearer caller-gateway-key")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-portkey-retry-attempt-count"], "0");
    assert_eq!(res.headers()["x-portkey-cache-status"], "MISS");
    assert_eq!(res.text().await.unwrap(), common::upstream::DEFAULT_ANSWER);

    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/v1/chat/completions");
    assert_eq!(got[0].body, body.as_bytes());
    let auth: Vec<_> = got[0].headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth,
        vec!["Bearer sk-provider-test"],
        "the caller's key must not reach the provider"
    );
}

#[tokio::test]
async fn upstream_status_body_and_content_type_are_returned() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    upstream.script([Reply {
        status: 422,
        headers: vec![],
        body: "not json at all".into(),
        ..Reply::default()
    }]);
    let res = ask(&gw, &question("hi"), &[]).await;
    assert_eq!(res.status, 422);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.body, "not json at all");
}

#[tokio::test]
async fn route_prefix_and_header_choose_the_route() {
    let upstream = Upstream::spawn().await;
    let extra = "[[routes]]\nname = \"batch\"\nmodels = [\"yi-large*\"]\n[routes.retry]\nattempts = 2\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\n";
    let gw = Gateway::spawn(config(&upstream.url, extra)).await;
    let c = client();
    // The `batch` route retries; `default` does not. Count calls to see which route ran.
    for (path, header, model, expected_calls) in [
        ("/r/batch/v1/chat/completions", None, "yi-lightning", 3),
        ("/v1/chat/completions", Some("batch"), "yi-lightning", 3),
        ("/v1/chat/completions", None, "yi-large-turbo", 3),
        ("/v1/chat/completions", None, "yi-lightning", 1),
    ] {
        let before = upstream.calls();
        upstream.script(vec![Reply::status(503); expected_calls]);
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        let mut req = c.post(format!("{}{path}", gw.url)).json(&body);
        if let Some(h) = header {
            req = req.header("x-deja-route", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(
            upstream.calls() - before,
            expected_calls,
            "{path} {header:?} {model}"
        );
    }
    let res = c
        .post(format!("{}/r/nope/v1/chat/completions", gw.url))
        .body(question("x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "route_not_found");
    assert!(err["error"]["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn streams_pass_through_chunk_by_chunk() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    let gate = Arc::new(Notify::new());
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let second = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    upstream.script([Reply::sse(&[first, second], Some(Arc::clone(&gate)))]);
    let body =
        r#"{"model":"yi-lightning","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    // The upstream holds its second chunk until we have the first: a gateway that buffered the
    // whole stream would never hand us the first, and this would time out.
    let mut seen = Vec::new();
    while seen.len() < first.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("first chunk did not arrive while upstream was still streaming")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    assert_eq!(seen, first.as_bytes());
    gate.notify_one();
    while let Some(chunk) = stream.next().await {
        seen.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(seen, format!("{first}{second}").as_bytes());
}

#[tokio::test]
async fn models_are_passed_through() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    let list = r#"{"object":"list","data":[{"id":"yi-lightning","object":"model"}]}"#;
    upstream.script([Reply {
        status: 200,
        body: list.into(),
        ..Reply::default()
    }]);
    let res = client()
        .get(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), list);
    let got = upstream.received();
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/v1/models");
    assert_eq!(got[0].headers["authorization"], "Bearer sk-provider-test");
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let upstream = Upstream::spawn().await;
    let c = client();
    let gw = Gateway::spawn(config(
        &upstream.url,
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
    ))
    .await;
    assert_eq!(
        c.get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = c.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(
        ready["checks"]["semantic_index"], "not used",
        "simple mode loads no model"
    );

    // A Redis that does not answer leaves the gateway serving (degraded: the cache is bypassed),
    // or, with strict readiness, not ready; alive either way.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let redis = format!("[redis]\nurl = \"redis://127.0.0.1:{port}\"\n");
    let down = Gateway::spawn(config(&upstream.url, &redis)).await;
    let (status, checks) = crate::common::readiness(&down).await;
    assert_eq!(
        (status, &checks["status"]),
        (200, &json!("degraded")),
        "{checks}"
    );
    assert!(
        checks["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{checks}"
    );
    let strict = format!("{redis}[server]\nreadiness = \"strict\"\n");
    let strict = Gateway::spawn(config(&upstream.url, &strict)).await;
    let (status, checks) = crate::common::readiness(&strict).await;
    assert_eq!(
        (status, &checks["status"]),
        (503, &json!("not ready")),
        "{checks}"
    );
    assert_eq!(
        c.get(format!("{}/healthz", down.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let res = c
        .get(format!("{}/v2/nothing", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let upstream = Upstream::spawn().await;
    let mut gw = Gateway::spawn(config(&upstream.url, "")).await;
    upstream.script([Reply::ok().delayed(Duration::from_millis(300))]);
    let url = gw.url.clone();
    let in_flight = tokio::spawn(async move { ask(&url, &question("slow"), &[]).await });
    eventually(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { upstream.calls() > 0 },
    )
    .await;
    let stopped = gw.stop();
    assert_eq!(in_flight.await.unwrap().status, 200);
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        client()
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .is_err()
    );
}
