//! What a new user meets on the embedded defaults: a saved or inline config that turns semantic
//! caching on for a route whose own cache is off, virtual keys without any secret key set up,
//! a request id on every answer (so Portkey's SDK does not send a failed request again), and a
//! config update seen at once by the node that took it.

use std::path::Path;

use http::Method;
use serde_json::{Value, json};

use crate::common::{Gateway, Reply, Upstream, ask, call, config_with_mode, node_script, question};
use deja::store::keys::Scope;

const SEMANTIC: &str = r#"{"cache":{"mode":"semantic"}}"#;

/// A SQLite store file in `dir`, migrated, with an admin key: (its `[store]` section, the key).
async fn store_in(dir: &Path) -> (String, String) {
    let (url, store) = crate::common::sqlite_store(dir).await;
    let (_, admin) = store.create_key("first-run", Scope::Admin).await.unwrap();
    (format!("[store]\nurl = \"{url}\"\n"), admin)
}

#[tokio::test]
async fn a_config_turns_semantic_caching_on_where_the_route_cache_is_off() {
    let upstream = Upstream::spawn().await;
    // The model loads by default even though no route uses semantic mode.
    let config = config_with_mode(&upstream.url, "off", "[embedding]\nenabled = true\n");
    let gw = Gateway::spawn(config).await;
    let plain = ask(&gw, &question("What is an AI gateway?"), &[]).await;
    assert_eq!(plain.cache(), "DISABLED");
    let headers = [("x-portkey-config", SEMANTIC)];
    let first = ask(&gw, &question("What does an AI gateway do?"), &headers).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let paraphrase = ask(&gw, &question("what does an AI gateway do"), &headers).await;
    assert_eq!(paraphrase.cache(), "SEMANTIC HIT", "{}", paraphrase.body);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn semantic_mode_without_the_model_is_refused_clearly() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "simple", "")).await;
    let reply = ask(&gw, &question("hello"), &[("x-portkey-config", SEMANTIC)]).await;
    assert_eq!(reply.status, 400);
    let error = reply.json();
    assert_eq!(error["error"]["code"], "invalid_config");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("enabled = false"), "{message}");
    assert_eq!(upstream.calls(), 0);
    // And a route that names semantic mode does not start without it.
    let text = format!(
        "[upstream]\nbase_url = \"{}\"\n[embedding]\nenabled = false\n",
        upstream.url
    );
    let err = deja::Config::from_toml_with_env(&text, "t", &[]).unwrap_err();
    assert!(
        err.to_string().contains("embedding.enabled is false"),
        "{err}"
    );
}

#[tokio::test]
async fn virtual_keys_work_on_a_sqlite_store_with_no_secret_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = store_in(dir.path()).await;
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    let key_file = dir.path().join("deja.db.key");
    assert!(key_file.exists(), "created beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
    }
    let (status, created) = call(
        &gw,
        Method::POST,
        "/v1/virtual-keys",
        Some(&admin),
        Some(json!({"name": "01.AI", "provider": "lingyi", "key": "sk-yi-first-run"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let slug = created["slug"].as_str().unwrap();
    let as_vk = [
        ("x-portkey-api-key", admin.as_str()),
        ("x-portkey-virtual-key", slug),
    ];
    let reply = ask(&gw, &question("hi"), &as_vk).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        upstream.received()[0].headers["authorization"],
        "Bearer sk-yi-first-run"
    );
    for file in ["deja.db", "deja.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        let plain = b"sk-yi-first-run";
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain),
            "{file}: stored sealed"
        );
    }
    // A restart reads the same key back, so the stored credential still opens.
    drop(gw);
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    let again = ask(&gw, &question("hi again"), &as_vk).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test]
async fn the_secret_key_rotates_and_every_stored_credential_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = store_in(dir.path()).await;
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    let vk = json!({"name": "01.AI", "provider": "lingyi", "key": "sk-yi-before-rotation"});
    let (status, created) = call(
        &gw,
        Method::POST,
        "/v1/virtual-keys",
        Some(&admin),
        Some(vk),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let slug = created["slug"].as_str().unwrap().to_owned();
    let saved = json!({"name": "inline", "slug": "pc-inline",
                       "config": {"api_key": "sk-inline-before-rotation"}});
    let (status, body) = call(&gw, Method::POST, "/v1/configs", Some(&admin), Some(saved)).await;
    assert_eq!(status, 200, "{body}");
    drop(gw);
    std::fs::write(dir.path().join("deja.toml"), &extra).unwrap();
    let key_file = dir.path().join("deja.db.key");
    let before = std::fs::read_to_string(&key_file).unwrap();

    // The wrong current key changes nothing.
    let wrong = crate::common::deja(dir.path())
        .args(["secret-key", "rotate"])
        .env("DEJA_SECRET_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && said.contains("does not open under the current secret key"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), before);

    let rotated = crate::common::deja(dir.path())
        .args(["secret-key", "rotate"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(
        said.contains("resealed 1 virtual keys and 1 inline api_keys"),
        "{said}"
    );
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(after, before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("deja.db.key.old")).unwrap(),
        before
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
    }

    // Restarted on the new key, both credentials still reach the provider.
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    for (header, value, secret) in [
        (
            "x-portkey-virtual-key",
            slug.as_str(),
            "sk-yi-before-rotation",
        ),
        ("x-portkey-config", "pc-inline", "sk-inline-before-rotation"),
    ] {
        let headers = [("x-portkey-api-key", admin.as_str()), (header, value)];
        let reply = ask(&gw, &question(header), &headers).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let sent = upstream.received().pop().unwrap();
        assert_eq!(sent.headers["authorization"], format!("Bearer {secret}"));
    }
}

#[tokio::test]
async fn the_node_that_takes_a_config_update_serves_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = store_in(dir.path()).await;
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    let create = json!({"name": "r", "slug": "pc-retry", "config": {"retry": {"attempts": 0}}});
    let (status, _) = call(&gw, Method::POST, "/v1/configs", Some(&admin), Some(create)).await;
    assert_eq!(status, 200);
    let named = [
        ("x-portkey-api-key", admin.as_str()),
        ("x-portkey-config", "pc-retry"),
    ];
    upstream.script([Reply::status(503)]);
    assert_eq!(ask(&gw, &question("one"), &named).await.status, 503);
    let update = json!({"config": {"retry": {"attempts": 1, "on_status_codes": [503]}}});
    let (status, _) = call(
        &gw,
        Method::PUT,
        "/v1/configs/pc-retry",
        Some(&admin),
        Some(update),
    )
    .await;
    assert_eq!(status, 200);
    upstream.script([Reply::status(503), Reply::ok()]);
    let reply = ask(&gw, &question("two"), &named).await;
    assert_eq!(
        reply.status,
        200,
        "the new version retries, with no wait for the cache: {} (upstream calls {})",
        reply.body,
        upstream.calls()
    );
    assert_eq!(reply.header("x-portkey-retry-attempt-count"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portkeys_sdk_does_not_send_a_failed_request_again() {
    assert!(
        Path::new("tests/sdk/node/node_modules/portkey-ai").exists(),
        "portkey-ai is missing: run scripts/test.sh (or tests/sdk/setup.sh)"
    );
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", "")).await;
    upstream.script(std::iter::repeat_n(Reply::status(503), 10));
    let config = json!({"retry": {"attempts": 2, "on_status_codes": [503]}}).to_string();
    let seen: Value = node_script(
        "failed_call.mjs",
        vec![format!("{}/v1", gw.url), config],
        &[],
    )
    .await;
    assert_eq!(seen["status"], 503, "{seen}");
    assert!(
        seen["requestId"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_")),
        "{seen}"
    );
    assert_eq!(
        upstream.calls(),
        3,
        "attempts + 1, and no second round from the SDK"
    );
}

#[tokio::test]
async fn a_route_maps_the_tutorials_model_alias_to_the_providers_model() {
    let upstream = Upstream::spawn().await;
    let extra =
        "[[routes]]\nname = \"default\"\nmodel_aliases = { \"01-ai/gpt-4\" = \"yi-lightning\" }\n";
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "simple", extra)).await;
    let mut body = question("介绍一下AI网关的作用");
    body["model"] = "01-ai/gpt-4".into();
    assert_eq!(ask(&gw, &body, &[]).await.status, 200);
    let sent: Value = serde_json::from_slice(&upstream.received()[0].body).unwrap();
    assert_eq!(sent["model"], "yi-lightning");
    body["model"] = "yi-lightning".into();
    let same = ask(&gw, &body, &[]).await;
    assert_eq!(
        same.cache(),
        "HIT",
        "the alias and the model it stands for share entries"
    );
}

#[tokio::test]
async fn a_refused_config_counts_under_one_route_in_metrics_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = store_in(dir.path()).await;
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config_with_mode(&upstream.url, "off", &extra)).await;
    let bad = [
        ("x-portkey-api-key", admin.as_str()),
        ("x-portkey-config", r#"{"retry":{"attempts":99}}"#),
    ];
    let reply = ask(&gw, &question("hi"), &bad).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let rows = crate::common::until_logged(&gw, &admin, 1).await;
    let logged = rows["data"][0]["route"].as_str().unwrap().to_owned();
    let metrics = gw.scrape_metrics().await;
    let counted = crate::common::metric(
        &metrics,
        "deja_requests_total",
        &[("route", &logged), ("status", "400")],
    );
    assert_eq!(logged, "default");
    assert_eq!(counted, Some(1.0), "{metrics}");
}
