//! Portkey's own Node SDK (`portkey-ai`, installed by `tests/sdk/setup.sh`) pointed at deja by
//! `baseURL`, running the tutorial: a virtual key and a retry config created through
//! `portkey.virtualKeys` and `portkey.configs`, a chat call that is retried and uses the virtual
//! key's credential, and a semantic cache config that hits.

use crate::common;

use std::path::Path;

use common::{Gateway, Reply, Upstream, config_with_mode, shared_embedder};
use deja::store::keys::Scope;
use serde_json::{Value, json};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A response header as the Node SDK reports it (a JSON object), with or without Portkey's
/// `x-portkey-` prefix.
fn sdk_header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .or_else(|| headers.get(format!("x-portkey-{name}")))
        .and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_runs_on_portkeys_node_sdk() {
    assert!(
        Path::new("tests/sdk/node/node_modules/portkey-ai").exists(),
        "portkey-ai is missing: run scripts/test.sh (or tests/sdk/setup.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (_, admin) = store.create_key("tutorial", Scope::Admin).await.unwrap();
    let (_, inference) = store
        .create_key("tutorial", Scope::Inference)
        .await
        .unwrap();
    let upstream = Upstream::spawn().await;
    let extra = format!(
        "[store]\nurl = \"{url}\"\nsecret_key = \"{SECRET}\"\n[server]\nrequire_auth = true\n"
    );
    let config = config_with_mode(&upstream.url, "off", &extra);
    let gw = Gateway::spawn_with_embedder(config, shared_embedder()).await;
    // The first chat call meets a 503 and is retried by the saved config.
    upstream.script([Reply::status(503), Reply::ok()]);
    let base = format!("{}/v1", gw.url);
    let seen = common::node_script("portkey_flow.mjs", vec![base, admin, inference], &[]).await;

    assert!(
        seen["virtualKey"].as_str().unwrap().starts_with("01-ai-"),
        "{seen}"
    );
    assert!(
        seen["config"]
            .as_str()
            .unwrap()
            .starts_with("pc-01ai-retry-"),
        "{seen}"
    );
    assert_eq!(seen["configsListed"], 1);
    assert_eq!(seen["virtualKeyShown"], "sk-y****-sdk");
    let retried = &seen["retried"];
    assert_eq!(retried["text"], "hello from the stand-in");
    assert_eq!(
        sdk_header(&retried["headers"], "retry-attempt-count"),
        Some("1"),
        "{retried}"
    );
    let calls = upstream.received();
    assert_eq!(
        calls[0].headers["authorization"],
        "Bearer sk-yi-from-the-node-sdk"
    );
    let statuses: Vec<Option<&str>> = seen["cache"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| sdk_header(&r["headers"], "cache-status"))
        .collect();
    assert_eq!(
        statuses,
        [Some("MISS"), Some("HIT"), Some("SEMANTIC HIT")],
        "{seen}"
    );
    assert_eq!(upstream.calls(), 3, "two tries, then one miss");

    // portkey.analytics.* against deja's request log.
    let a = &seen["analytics"];
    assert_eq!(a["requests"]["object"], "analytics-graph", "{a}");
    assert_eq!(a["requests"]["summary"]["total"], 4, "{a}");
    assert!(a["requests"]["data_points"].as_array().unwrap().len() > 1);
    assert_eq!(
        a["byConfig"]["total"], 1,
        "only the chat that named the saved config"
    );
    assert_eq!(
        (
            &a["cacheHitRate"]["hits"],
            &a["cacheHitRate"]["semantic_hits"]
        ),
        (&json!(2), &json!(1)),
        "{a}"
    );
    assert_eq!(a["cacheLatency"]["total"], 2);
    assert_eq!(
        a["tokens"]["total"], 40,
        "four answers of the stand-in's 10 tokens"
    );
    assert_eq!(a["errorsRate"]["rate"], 0.0);
    assert_eq!(a["cacheSummary"]["tokens_saved"], 20);
    assert!(a["latency"]["p99"].as_f64().unwrap() > 0.0);
    // The tutorial names its model `01-ai/gpt-4`, which has no price: its spend shows as 0.
    assert_eq!(a["cost"]["total"], 0.0);
}
