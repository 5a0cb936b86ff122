//! Providers with their own wire format, each against a stand-in that speaks it (written from the
//! provider's public API reference): 01.AI failing over to Claude (plain and streamed, then
//! replayed from the cache in OpenAI's shape) and to Azure OpenAI (deployment URL, api-version,
//! api-key).

use serde_json::{Value, json};

use crate::common::{Gateway, Reply, Upstream, client, config};

/// A gateway whose route may reach stand-ins on loopback.
async fn gateway(primary: &Upstream) -> Gateway {
    let extra = "[security]\nallowed_hosts = [\"127.0.0.1\"]\n";
    Gateway::spawn(config(&primary.url, extra)).await
}

/// Anthropic's answer to a Messages request.
fn claude_answer(text: &str) -> Reply {
    let body = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 4},
    });
    Reply {
        status: 200,
        body: body.to_string(),
        ..Reply::default()
    }
}

/// Anthropic's event stream for `parts`.
fn claude_stream(parts: &[&str]) -> Reply {
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_02", "type": "message",
            "role": "assistant", "model": "claude-3-5-haiku-latest", "content": [],
            "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for part in parts {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": part}}),
        ));
    }
    events.extend([
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ("message_delta", json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 4}})),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let chunks: Vec<String> = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    Reply::sse(&chunks, None)
}

/// 01.AI (the route's upstream) first, then Claude at `claude`.
fn fallback_to_claude(claude: &Upstream) -> String {
    json!({
        "strategy": {"mode": "fallback", "on_status_codes": [503]},
        "retry": {"attempts": 0},
        "targets": [
            {"override_params": {"model": "yi-lightning"}},
            {"provider": "anthropic", "custom_host": claude.url, "api_key": "sk-ant-test",
             "override_params": {"model": "claude-3-5-haiku-latest"}},
        ],
    })
    .to_string()
}

async fn post(gw: &Gateway, config: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-portkey-config", config)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failed_yi_call_falls_back_to_claude_in_openai_shape_and_is_cached() {
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = gateway(&yi).await;
    yi.script([Reply::status(503)]);
    claude.script([claude_answer("Paris.")]);
    let config = fallback_to_claude(&claude);
    let body = json!({"model": "yi-lightning", "max_tokens": 50, "stop": ["\n\n"], "temperature": 0.3,
        "messages": [{"role": "system", "content": "Answer in one word."},
                     {"role": "user", "content": "Capital of France?"}]});
    let res = post(&gw, &config, &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-last-used-option-index"], "1");
    assert_eq!(res.headers()["x-portkey-cache-status"], "MISS");
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["total_tokens"], 15);

    let sent = &claude.received()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-test");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(
        sent.headers.get("authorization").is_none(),
        "no OpenAI-style header"
    );
    let messages: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(messages["system"], "Answer in one word.");
    assert_eq!(messages["model"], "claude-3-5-haiku-latest");
    assert_eq!(messages["max_tokens"], 50);
    assert_eq!(messages["stop_sequences"], json!(["\n\n"]));
    assert_eq!(
        messages["messages"],
        json!([{"role": "user", "content": "Capital of France?"}])
    );

    // The fallback answer is stored in OpenAI's shape and replays like any other, also as a stream.
    let again = post(&gw, &config, &body).await;
    assert_eq!(again.headers()["x-portkey-cache-status"], "HIT");
    assert_eq!(
        again.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "Paris."
    );
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let replay = post(&gw, &config, &streamed).await;
    assert_eq!(replay.headers()["x-portkey-cache-status"], "HIT");
    let text = replay.text().await.unwrap();
    assert!(
        text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(claude.calls(), 1);
}

#[tokio::test]
async fn a_claude_stream_arrives_as_openai_chunks() {
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = gateway(&yi).await;
    yi.script([Reply::status(503)]);
    claude.script([claude_stream(&["Bon", "jour", "!"])]);
    let body = json!({"model": "yi-lightning", "stream": true,
        "messages": [{"role": "user", "content": "Say hello in French"}]});
    let res = post(&gw, &fallback_to_claude(&claude), &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, "Bonjour!");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(
        !text.contains("content_block_delta"),
        "no Anthropic event leaks: {text}"
    );
    let sent: Value = serde_json::from_slice(&claude.received()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
}

#[tokio::test]
async fn a_claude_error_is_an_openai_error_and_overloaded_is_retried() {
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = gateway(&yi).await;
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let invalid = json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": "max_tokens: must be at least 1"}});
    let config =
        json!({"provider": "anthropic", "custom_host": claude.url, "api_key": "sk-ant-test",
        "retry": {"attempts": 1, "on_status_codes": [503]}})
        .to_string();
    claude.script([
        Reply {
            status: 529,
            body: overloaded.to_string(),
            ..Reply::default()
        },
        Reply {
            status: 400,
            body: invalid.to_string(),
            ..Reply::default()
        },
    ]);
    let body = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 0,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = post(&gw, &config, &body).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.headers()["x-portkey-retry-attempt-count"],
        "1",
        "529 is retried as a 503"
    );
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["message"], "max_tokens: must be at least 1");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(claude.calls(), 2);
    assert_eq!(yi.calls(), 0);
}

#[tokio::test]
async fn azure_openai_gets_its_deployment_url_api_version_and_api_key() {
    let (yi, azure) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = gateway(&yi).await;
    yi.script([Reply::status(503)]);
    let root = azure.url.trim_end_matches("/v1");
    let config = json!({
        "strategy": {"mode": "fallback"}, "retry": {"attempts": 0},
        "targets": [
            {},
            {"provider": "azure-openai", "custom_host": root, "deployment_id": "gpt-4o-mini",
             "api_version": "2024-06-01", "api_key": "az-key-1"},
        ],
    })
    .to_string();
    let body = json!({"model": "yi-lightning", "messages": [{"role": "user", "content": "hi"}]});
    let res = post(&gw, &config, &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-last-used-option-index"], "1");
    let sent = &azure.received()[0];
    assert_eq!(
        sent.path,
        "/openai/deployments/gpt-4o-mini/chat/completions"
    );
    assert_eq!(sent.query, "api-version=2024-06-01");
    assert_eq!(sent.headers["api-key"], "az-key-1");
    assert!(sent.headers.get("authorization").is_none());

    // An Azure target must name its deployment, and no part of the URL may smuggle a host.
    for bad in [
        json!({"provider": "azure-openai", "resource_name": "r"}),
        json!({"provider": "azure-openai", "resource_name": "evil.com#", "deployment_id": "d"}),
        json!({"provider": "azure-openai", "resource_name": "r", "deployment_id": "d/../../x"}),
    ] {
        let res = post(&gw, &bad.to_string(), &body).await;
        assert_eq!(res.status(), 400, "{bad}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_config", "{bad}");
    }
    assert_eq!(azure.calls(), 1);
}
