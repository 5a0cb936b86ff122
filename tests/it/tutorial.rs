//! The tutorial (../shared, "Portkey + 01.AI"), step by step against deja, as a new user would
//! run it: provider credentials as virtual keys, one saved config with retries, a semantic cache
//! and a fallback from 01.AI to Claude, calls that name the config by id, a paraphrase answered
//! from the cache, 01.AI going down and Claude answering, the analytics of all that, and the
//! config's versions with a rollback. The providers are stand-ins on loopback; everything else is
//! deja as it ships.

use http::Method;
use serde_json::{Value, json};

use crate::common::{
    Gateway, Reply, Upstream, ask, call, config_with_mode, question, shared_embedder, until_logged,
};
use deja::store::keys::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_from_virtual_keys_to_rollback() {
    // Setup: an admin key for the team, and an inference key for its application.
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = crate::common::sqlite_store(dir.path()).await;
    let (_, admin) = store.create_key("team", Scope::Admin).await.unwrap();
    let (_, app) = store.create_key("team", Scope::Inference).await.unwrap();
    let (yi, claude) = (Upstream::spawn().await, Upstream::spawn().await);
    // The route's own cache is off: the saved config is what turns caching on. Stand-ins listen
    // on loopback, which the operator allows here.
    let extra = format!(
        "[store]\nurl = \"{url}\"\n[server]\nrequire_auth = true\n\
         [security]\nallowed_hosts = [\"127.0.0.1\"]\n"
    );
    let config = config_with_mode(&yi.url, "off", &extra);
    let gw = Gateway::spawn_with_embedder(config, shared_embedder()).await;
    let admin_call = |method: Method, path: &str, body: Option<Value>| {
        let (gw, admin) = (&gw, admin.clone());
        let path = path.to_owned();
        async move { call(gw, method, &path, Some(&admin), body).await }
    };

    // Step 1: the provider keys become virtual keys (sealed; only their slugs leave deja).
    let (status, yi_key) = admin_call(
        Method::POST,
        "/v1/virtual-keys",
        Some(json!({"name": "01.AI", "provider": "lingyi", "key": "sk-yi-tutorial"})),
    )
    .await;
    assert_eq!(status, 200, "{yi_key}");
    let (status, claude_key) = admin_call(
        Method::POST,
        "/v1/virtual-keys",
        Some(
            json!({"name": "Claude", "provider": "anthropic", "key": "sk-ant-tutorial",
                    "hosts": [claude.url]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{claude_key}");

    // Step 2: one saved config: retry 429/503, semantic cache, fall back from 01.AI to Claude.
    let tutorial_config = json!({
        "retry": {"attempts": 2, "on_status_codes": [429, 503]},
        "cache": {"mode": "semantic", "max_age": 3600},
        "strategy": {"mode": "fallback", "on_status_codes": [429, 503]},
        "targets": [
            {"virtual_key": yi_key["slug"]},
            {"provider": "anthropic", "custom_host": claude.url, "virtual_key": claude_key["slug"],
             "override_params": {"model": "claude-3-5-haiku-latest"}},
        ],
    });
    let (status, saved) = admin_call(
        Method::POST,
        "/v1/configs",
        Some(json!({"name": "tutorial", "slug": "pc-01ai-tutorial", "config": tutorial_config})),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let first_version = saved["version_id"].as_str().unwrap().to_owned();
    let by_id = [
        ("x-portkey-api-key", app.as_str()),
        ("x-portkey-config", "pc-01ai-tutorial"),
    ];

    // Step 3: a call by config id; 01.AI answers 503 once and the retry gets the answer.
    yi.script([
        Reply::status(503),
        Reply::answer("AI网关统一管理模型调用。"),
    ]);
    let first = ask(&gw, &question("介绍一下AI网关的作用"), &by_id).await;
    assert_eq!(
        (first.status, first.cache()),
        (200, "MISS"),
        "{}",
        first.body
    );
    assert_eq!(first.content(), "AI网关统一管理模型调用。");
    assert_eq!(first.header("x-portkey-retry-attempt-count"), Some("1"));
    assert_eq!(
        first.header("x-deja-config-version"),
        Some(first_version.as_str())
    );
    assert_eq!(
        yi.received()[0].headers["authorization"],
        "Bearer sk-yi-tutorial"
    );

    // Step 4: the same question in other words is answered from the semantic cache.
    let paraphrase = ask(&gw, &question("请介绍一下AI网关的作用"), &by_id).await;
    assert_eq!(paraphrase.cache(), "SEMANTIC HIT", "{}", paraphrase.body);
    assert_eq!(paraphrase.content(), "AI网关统一管理模型调用。");
    assert_eq!(yi.calls(), 2, "the hit touched no provider");

    // Step 5: 01.AI is down (every try 503): Claude answers, in OpenAI's shape.
    yi.script(std::iter::repeat_n(Reply::status(503), 3));
    claude.script([Reply::claude(
        "An AI gateway routes, retries and caches model calls.",
    )]);
    let fallback = ask(&gw, &question("What does an AI gateway do?"), &by_id).await;
    assert_eq!(fallback.status, 200, "{}", fallback.body);
    assert_eq!(
        fallback.header("x-portkey-last-used-option-index"),
        Some("1")
    );
    assert_eq!(
        fallback.content(),
        "An AI gateway routes, retries and caches model calls."
    );
    let sent = &claude.received()[0];
    assert_eq!(sent.headers["x-api-key"], "sk-ant-tutorial");
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");

    // Step 6: analytics over the request log: three requests, one semantic hit. The logs page
    // names the target that answered the fallback.
    let logged = until_logged(&gw, &admin, 3).await;
    assert_eq!(
        logged["data"][0]["target"], "targets[1] 127.0.0.1",
        "{logged}"
    );
    let (status, report) = admin_call(Method::GET, "/v1/analytics/cache?window=1h", None).await;
    assert_eq!(status, 200, "{report}");
    let route = &report["routes"][0];
    assert_eq!(route["requests"], 3, "{report}");
    assert!(route["tokens_saved"].as_u64().unwrap() > 0, "{report}");

    // Step 7: a new version of the config, its history, and a rollback to the first.
    let (status, updated) = admin_call(
        Method::PUT,
        "/v1/configs/pc-01ai-tutorial",
        Some(json!({"config": {"retry": {"attempts": 0}}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let (_, versions) =
        admin_call(Method::GET, "/v1/configs/pc-01ai-tutorial/versions", None).await;
    assert_eq!(versions["total"], 2, "{versions}");
    let (status, rolled) = admin_call(
        Method::POST,
        "/v1/configs/pc-01ai-tutorial/rollback",
        Some(json!({"version_id": first_version})),
    )
    .await;
    assert_eq!(status, 200, "{rolled}");
    let (_, newest) = admin_call(Method::GET, "/v1/configs/pc-01ai-tutorial", None).await;
    assert_eq!(
        newest["config"]["cache"]["mode"], "semantic",
        "the first body is back"
    );
    // The node that took the rollback serves it at once.
    let after = ask(&gw, &question("介绍一下AI网关的作用"), &by_id).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(
        after.header("x-deja-config-version"),
        rolled["version_id"].as_str()
    );
}
