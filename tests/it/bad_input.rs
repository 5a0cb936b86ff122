//! Bad requests get a precise OpenAI-shaped 4xx and the upstream is never called.

use crate::common;

use common::{Gateway, Upstream, ask, client, config, question};
use serde_json::Value;

async fn refused(gw: &Gateway, body: Vec<u8>, config_header: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(h) = config_header {
        req = req.header("x-portkey-config", h);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn every_bad_input_is_refused_before_the_upstream() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "[server]\nmax_body_bytes = 2048\n")).await;
    let ok = question("hi").to_string().into_bytes();
    // (case, body, x-portkey-config, status, error.code, error.param, part of error.message)
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        Option<&'a str>,
        u16,
        &'a str,
        Option<&'a str>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "bad json",
            b"{\"model\":".to_vec(),
            None,
            400,
            "invalid_json",
            None,
            "could not parse the JSON",
        ),
        (
            "not an object",
            b"[]".to_vec(),
            None,
            400,
            "invalid_json",
            None,
            "JSON object",
        ),
        (
            "empty body",
            Vec::new(),
            None,
            400,
            "invalid_json",
            None,
            "could not parse",
        ),
        (
            "no messages",
            br#"{"model":"yi-lightning"}"#.to_vec(),
            None,
            400,
            "invalid_field",
            Some("messages"),
            "'messages'",
        ),
        (
            "messages not a list",
            br#"{"model":"m","messages":{}}"#.to_vec(),
            None,
            400,
            "invalid_field",
            Some("messages"),
            "must be an array",
        ),
        (
            "no model",
            br#"{"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            None,
            400,
            "invalid_field",
            Some("model"),
            "'model'",
        ),
        (
            "too large",
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(4096)
            )
            .into_bytes(),
            None,
            413,
            "body_too_large",
            None,
            "2048 bytes",
        ),
        (
            "config not json",
            ok.clone(),
            Some("{retry"),
            400,
            "invalid_config",
            Some("x-portkey-config"),
            "not a JSON object",
        ),
        (
            "negative attempts",
            ok.clone(),
            Some(r#"{"retry":{"attempts":-1}}"#),
            400,
            "invalid_config",
            Some("x-portkey-config"),
            "retry.attempts",
        ),
        (
            "too many attempts",
            ok.clone(),
            Some(r#"{"retry":{"attempts":99}}"#),
            400,
            "invalid_config",
            Some("x-portkey-config"),
            "at most 10, got 99",
        ),
        (
            "codes wrong type",
            ok.clone(),
            Some(r#"{"retry":{"on_status_codes":"429"}}"#),
            400,
            "invalid_config",
            Some("x-portkey-config"),
            "retry.on_status_codes",
        ),
        (
            "unknown saved config",
            ok.clone(),
            Some("pc-01ai-retry-123"),
            400,
            "config_not_found",
            Some("x-portkey-config"),
            "pc-01ai-retry-123",
        ),
    ];
    for (name, body, header, status, code, param, message) in cases {
        let (got_status, err) = refused(&gw, body, header).await;
        assert_eq!(got_status, status, "{name}: {err}");
        assert_eq!(err["error"]["code"], code, "{name}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{name}");
        assert_eq!(err["error"]["param"].as_str(), param, "{name}: {err}");
        let text = err["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{name}: `{text}` lacks `{message}`");
    }
    assert_eq!(upstream.calls(), 0, "no bad request may reach the upstream");

    let metrics = gw.scrape_metrics().await;
    // A body that cannot be read names no model, so no route: it counts as `unmatched`.
    let unreadable = common::metric(
        &metrics,
        "deja_requests_total",
        &[("route", "unmatched"), ("status", "400")],
    );
    assert_eq!(unreadable, Some(6.0), "{metrics}");
    let bad_config = common::metric(
        &metrics,
        "deja_requests_total",
        &[("route", "default"), ("status", "400")],
    );
    assert_eq!(bad_config, Some(5.0), "{metrics}");
    let too_large = common::metric(&metrics, "deja_requests_total", &[("status", "413")]);
    assert_eq!(too_large, Some(1.0));
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_accepted() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "[server]\nmax_body_bytes = 2048\n")).await;
    let filler = "y".repeat(2048 - question("").to_string().len());
    let body = question(&filler);
    assert_eq!(body.to_string().len(), 2048);
    assert_eq!(ask(&gw, &body, &[]).await.status, 200);
    assert_eq!(upstream.calls(), 1);
}
