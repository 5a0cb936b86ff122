//! The official OpenAI Python SDK (installed by `tests/sdk/setup.sh`, which `scripts/test.sh`
//! runs) against a real gateway, changing only the base URL: the same text on a streamed miss,
//! an exact hit and a semantic hit, streamed or plain; and a stream broken mid-way surfaces as
//! the SDK's own `APIError`.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::redis::RedisServer;
use common::upstream::{DONE, chunk, event};
use common::{Gateway, Reply, Upstream, config_with_mode, redis_section};
use serde_json::{Value, json};

const PYTHON: &str = "tests/sdk/.venv/bin/python";

/// Runs the SDK script with one job per prompt; returns its results in order.
fn run_sdk(gw: &Gateway, jobs: &[(&str, bool)]) -> Vec<Value> {
    run_sdk_with(gw, jobs, &[])
}

/// [`run_sdk`] with environment for the script (`DEJA_API_KEY`, `DEJA_VIRTUAL_KEY`).
fn run_sdk_with(gw: &Gateway, jobs: &[(&str, bool)], env: &[(&str, &str)]) -> Vec<Value> {
    assert!(
        Path::new(PYTHON).exists(),
        "the SDK venv is missing: run scripts/test.sh (or tests/sdk/setup.sh)"
    );
    let mut child = Command::new(PYTHON)
        .args(["tests/sdk/openai_chat.py", &gw.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (prompt, stream) in jobs {
        writeln!(stdin, "{}", json!({"prompt": prompt, "stream": stream})).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the SDK script failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_the_same_text_on_a_miss_and_on_both_kinds_of_hit() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let extra = redis_section(&redis.url, None);
    let gw =
        Gateway::spawn_sharing_model(config_with_mode(&upstream.url, "semantic", &extra)).await;
    let text = "An AI gateway sits between apps and models. 它负责重试与缓存。";
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(
        [
            "An AI gateway ",
            "sits between apps and models. ",
            "它负责重试",
            "与缓存。",
        ]
        .iter()
        .map(|p| chunk(json!({ "content": p }), None)),
    );
    events.push(chunk(json!({}), Some("stop")));
    let mut usage = chunk(json!({}), None);
    usage["choices"] = json!([]);
    usage["usage"] = json!({"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32});
    events.push(usage);
    let mut chunks: Vec<String> = events.iter().map(event).collect();
    chunks.push(DONE.to_owned());
    upstream.script([Reply::sse(&chunks, None)]);

    let sdk = tokio::task::spawn_blocking(move || {
        let results = run_sdk(
            &gw,
            &[
                ("What is an AI gateway?", true),
                ("What is an AI gateway?", true),
                ("What's an AI gateway?", true),
                ("What is an AI gateway?", false),
            ],
        );
        (gw, results)
    });
    let (_gw, results) = sdk.await.unwrap();
    let caches: Vec<&str> = results
        .iter()
        .map(|r| r["cache"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        caches,
        ["MISS", "HIT", "SEMANTIC HIT", "HIT"],
        "{results:?}"
    );
    for r in &results {
        assert_eq!(r["text"], text, "{r}");
        assert_eq!(r["finish"], "stop", "{r}");
        assert_eq!(r["usage"], 32, "{r}");
    }
    assert!(results[2]["similarity"].as_str().is_some());
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_midway_is_an_api_error_in_the_sdk_and_is_not_cached() {
    let upstream = Upstream::spawn().await;
    let redis = RedisServer::start();
    let extra = redis_section(&redis.url, None);
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "simple", &extra)).await;
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "half an ans"}), None),
    ];
    let chunks: Vec<String> = events.iter().map(event).collect();
    upstream.script([Reply::sse_then_reset(&chunks)]);
    let sdk = tokio::task::spawn_blocking(move || {
        let results = run_sdk(&gw, &[("Break, please", true), ("Break, please", false)]);
        (gw, results)
    });
    let (_gw, results) = sdk.await.unwrap();
    assert_eq!(results[0]["error"], "APIError", "{results:?}");
    assert!(
        results[0]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
    );
    assert_eq!(
        results[1]["cache"], "MISS",
        "a broken stream is never stored"
    );
    assert_eq!(results[1]["text"], "hello from the stand-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_uses_a_deja_api_key_and_a_virtual_key_header() {
    use deja::store::keys::Scope;
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let (_, key) = store.create_key("acme", Scope::Inference).await.unwrap();
    let upstream = Upstream::spawn().await;
    let secret = "ab".repeat(32);
    let extra = format!(
        "[store]\nurl = \"{url}\"\nsecret_key = \"{secret}\"\n[server]\nrequire_auth = true\n"
    );
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "simple", &extra)).await;
    let (status, created) = common::call(
        &gw,
        http::Method::POST,
        "/v1/virtual-keys",
        Some(&admin),
        Some(json!({"name": "yi", "provider": "lingyi", "key": "sk-yi-for-python"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let slug = created["slug"].as_str().unwrap().to_owned();
    let sdk = tokio::task::spawn_blocking(move || {
        let ok = run_sdk_with(
            &gw,
            &[("Hello", false)],
            &[("DEJA_API_KEY", &key), ("DEJA_VIRTUAL_KEY", &slug)],
        );
        let refused = run_sdk_with(&gw, &[("Hello", false)], &[("DEJA_API_KEY", "dk-wrong")]);
        (gw, ok, refused)
    });
    let (_gw, ok, refused) = sdk.await.unwrap();
    assert_eq!(ok[0]["text"], "hello from the stand-in", "{ok:?}");
    assert_eq!(
        upstream.received()[0].headers["authorization"],
        "Bearer sk-yi-for-python"
    );
    assert_eq!(refused[0]["status"], 401, "{refused:?}");
}
