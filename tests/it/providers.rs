//! Providers with their own wire format, each against a stand-in that speaks it (written from the
//! provider's public API reference): 01.AI failing over to Claude (plain and streamed, then
//! replayed from the cache in OpenAI's shape) and to Azure OpenAI (deployment URL, api-version,
//! api-key).

use serde_json::{Value, json};

use crate::common::{Gateway, Reply, Upstream, ask, config};

/// A gateway whose route may reach stand-ins on loopback.
async fn loopback_gateway(primary: &Upstream) -> Gateway {
    let extra = "[security]\nallowed_hosts = [\"127.0.0.1\"]\n";
    Gateway::spawn(config(&primary.url, extra)).await
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

#[tokio::test]
async fn a_failed_yi_call_falls_back_to_claude_in_openai_shape_and_is_cached() {
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = loopback_gateway(&yi).await;
    yi.script([Reply::status(503)]);
    claude.script([Reply::claude("Paris.")]);
    let config = fallback_to_claude(&claude);
    let body = json!({"model": "yi-lightning", "max_tokens": 50, "stop": ["\n\n"], "temperature": 0.3,
        "messages": [{"role": "system", "content": "Answer in one word."},
                     {"role": "user", "content": "Capital of France?"}]});
    let res = ask(&gw, &body, &[("x-portkey-config", config.as_str())]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-portkey-last-used-option-index").unwrap(), "1");
    assert_eq!(res.header("x-portkey-cache-status").unwrap(), "MISS");
    let answer = res.json();
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
    let again = ask(&gw, &body, &[("x-portkey-config", config.as_str())]).await;
    assert_eq!(again.header("x-portkey-cache-status").unwrap(), "HIT");
    assert_eq!(again.json()["choices"][0]["message"]["content"], "Paris.");
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let replay = ask(&gw, &streamed, &[("x-portkey-config", config.as_str())]).await;
    assert_eq!(replay.header("x-portkey-cache-status").unwrap(), "HIT");
    let text = replay.body;
    assert!(
        text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(claude.calls(), 1);
}

#[tokio::test]
async fn a_claude_stream_arrives_as_openai_chunks() {
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = loopback_gateway(&yi).await;
    yi.script([Reply::status(503)]);
    claude.script([Reply::claude_stream(&["Bon", "jour", "!"])]);
    let body = json!({"model": "yi-lightning", "stream": true,
        "messages": [{"role": "user", "content": "Say hello in French"}]});
    let res = ask(
        &gw,
        &body,
        &[("x-portkey-config", fallback_to_claude(&claude).as_str())],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type").unwrap(), "text/event-stream");
    let text = res.body;
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
    let gw = loopback_gateway(&yi).await;
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
    let res = ask(&gw, &body, &[("x-portkey-config", config.as_str())]).await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.header("x-portkey-retry-attempt-count").unwrap(),
        "1",
        "529 is retried as a 503"
    );
    let error = res.json();
    assert_eq!(error["error"]["message"], "max_tokens: must be at least 1");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(claude.calls(), 2);
    assert_eq!(yi.calls(), 0);
}

#[tokio::test]
async fn azure_openai_gets_its_deployment_url_api_version_and_api_key() {
    let (yi, azure) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = loopback_gateway(&yi).await;
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
    let res = ask(&gw, &body, &[("x-portkey-config", config.as_str())]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-portkey-last-used-option-index").unwrap(), "1");
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
        let res = ask(
            &gw,
            &body,
            &[("x-portkey-config", bad.to_string().as_str())],
        )
        .await;
        assert_eq!(res.status, 400, "{bad}");
        let error = res.json();
        assert_eq!(error["error"]["code"], "invalid_config", "{bad}");
    }
    assert_eq!(azure.calls(), 1);
}

#[tokio::test]
async fn the_chinese_openai_compatible_providers_speak_openai_under_their_own_paths() {
    let (yi, standin) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = loopback_gateway(&yi).await;
    let root = standin.url.trim_end_matches("/v1");
    // Each provider under its documented base path (the stand-in listens for any path).
    for (provider, path, model) in [
        ("zhipu", "/api/paas/v4", "glm-4-flash"),
        ("dashscope", "/compatible-mode/v1", "qwen-plus"),
        ("baichuan", "/v1", "Baichuan4-Air"),
        ("siliconflow", "/v1", "Qwen/Qwen2.5-7B-Instruct"),
    ] {
        let documented = deja::upstream::providers::base_url(provider).unwrap();
        assert!(
            documented.starts_with("https://") && documented.ends_with(path),
            "{provider}"
        );
        let config = json!({
            "provider": provider, "custom_host": format!("{root}{path}"),
            "api_key": format!("sk-{provider}"), "override_params": {"model": model},
        })
        .to_string();
        let body = json!({"model": "yi-lightning",
                          "messages": [{"role": "user", "content": format!("hello {provider}")}]});
        let res = ask(&gw, &body, &[("x-portkey-config", config.as_str())]).await;
        assert_eq!(res.status, 200, "{provider}: {}", res.body);
        assert_eq!(res.json()["object"], "chat.completion", "{provider}");
        let sent = standin.received().pop().unwrap();
        assert_eq!(sent.path, format!("{path}/chat/completions"), "{provider}");
        assert_eq!(
            sent.headers["authorization"],
            format!("Bearer sk-{provider}")
        );
        let sent: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(sent["model"], model, "{provider}");
        assert_eq!(sent["messages"][0]["content"], format!("hello {provider}"));
    }
    assert_eq!((standin.calls(), yi.calls()), (4, 0));
}
