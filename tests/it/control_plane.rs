//! The control plane over HTTP and the command line, on a SQLite file and on Postgres: API keys
//! (missing, wrong scope, revoked), tenants in the cache partition, and saved configs created,
//! used by slug and version, updated, rolled back and deleted without a restart.

use crate::common;

use std::time::{Duration, Instant};

use common::postgres::PgDatabase;
use common::upstream::{DONE, chunk, event};
use common::{
    Endpoint, Gateway, Reply, Upstream, ask, call, config, eventually, question, streamed,
};
use deja::store::Store;
use deja::store::keys::Scope;
use serde_json::{Value, json};

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// How long a change made through the control plane may take to reach the gateway (its caches
/// of keys and saved configs refresh every few seconds).
const FRESH: Duration = Duration::from_secs(6);

struct Plane {
    gw: Gateway,
    upstream: Upstream,
    store: Store,
    admin: String,
    inference: String,
    store_url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn plane(url: Option<String>, require_auth: bool, extra: &str) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let url = url
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display()));
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let (_, inference) = store.create_key("acme", Scope::Inference).await.unwrap();
    let upstream = Upstream::spawn().await;
    let text = format!(
        "[store]\nurl = \"{url}\"\nsecret_key = \"{SECRET}\"\n[server]\nrequire_auth = {require_auth}\n{extra}"
    );
    let gw = Gateway::spawn(config(&upstream.url, &text)).await;
    Plane {
        gw,
        upstream,
        store,
        admin,
        inference,
        store_url: url,
        _dir: Some(dir),
    }
}

impl Endpoint for Plane {
    fn base_url(&self) -> &str {
        &self.gw.url
    }
}

#[tokio::test]
async fn keys_guard_the_gateway_and_a_revoked_key_stops_within_seconds() {
    let p = plane(None, true, "").await;
    let anonymous = ask(&p, &question("hi"), &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["code"], "invalid_api_key");
    let bearer = format!("Bearer {}", p.inference);
    assert_eq!(
        ask(&p, &question("hi"), &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(
        ask(
            &p,
            &question("hi"),
            &[("x-portkey-api-key", "dk-not-a-key")]
        )
        .await
        .status,
        401
    );
    // A provider key is not a deja key.
    assert_eq!(
        ask(
            &p,
            &question("hi"),
            &[("authorization", "Bearer sk-openai-abc")]
        )
        .await
        .status,
        401
    );

    // A second replica on the same store: revocation reaches both.
    let url = p.store_url.clone();
    let replica = Gateway::spawn(config(
        &p.upstream.url,
        &format!("[store]\nurl = \"{url}\"\n[server]\nrequire_auth = true\n"),
    ))
    .await;
    let on_replica = || async {
        ask(&replica, &question("hi"), &[("authorization", &bearer)])
            .await
            .status
    };
    assert_eq!(on_replica().await, 200);
    let id = p
        .store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.scope == Scope::Inference)
        .unwrap()
        .id;
    p.store.revoke_key(&id).await.unwrap();
    let revoked_at = Instant::now();
    eventually("revocation", FRESH, || async {
        ask(&p, &question("hi"), &[("authorization", &bearer)])
            .await
            .status
            == 401
    })
    .await;
    eventually("revocation on the replica", FRESH, || async {
        on_replica().await == 401
    })
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn without_require_auth_anonymous_calls_pass_but_a_bad_deja_key_does_not() {
    let p = plane(None, false, "").await;
    assert_eq!(ask(&p, &question("hi"), &[]).await.status, 200);
    assert_eq!(
        ask(&p, &question("hi"), &[("authorization", "Bearer unused")])
            .await
            .status,
        200
    );
    assert_eq!(
        ask(
            &p,
            &question("hi"),
            &[("authorization", "Bearer dk-revoked-or-wrong")]
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn tenants_never_share_entries_unless_the_route_is_shared() {
    let p = plane(None, true, "").await;
    let (_, other) = p
        .store
        .create_key("globex", Scope::Inference)
        .await
        .unwrap();
    eventually("the new key", FRESH, || async {
        ask(&p, &question("warm"), &[("x-portkey-api-key", &other)])
            .await
            .status
            == 200
    })
    .await;
    let acme = [("x-portkey-api-key", p.inference.as_str())];
    let globex = [("x-portkey-api-key", other.as_str())];
    assert_eq!(
        ask(&p, &question("What is deja?"), &acme).await.cache(),
        "MISS"
    );
    assert_eq!(
        ask(&p, &question("What is deja?"), &acme).await.cache(),
        "HIT"
    );
    assert_eq!(
        ask(&p, &question("What is deja?"), &globex).await.cache(),
        "MISS",
        "another tenant"
    );

    let shared = plane(
        None,
        true,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nshared = true\n",
    )
    .await;
    let (_, other) = shared
        .store
        .create_key("globex", Scope::Inference)
        .await
        .unwrap();
    eventually("the new key", FRESH, || async {
        ask(&shared, &question("warm"), &[("x-portkey-api-key", &other)])
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(
        ask(
            &shared,
            &question("What is deja?"),
            &[("x-portkey-api-key", &shared.inference)]
        )
        .await
        .cache(),
        "MISS"
    );
    assert_eq!(
        ask(
            &shared,
            &question("What is deja?"),
            &[("x-portkey-api-key", &other)]
        )
        .await
        .cache(),
        "HIT",
        "shared route"
    );
}

async fn saved_configs_flow(p: &Plane) {
    use http::Method;
    let body = json!({"name": "01ai retry", "slug": "pc-01ai-retry-123", "config": {"retry": {"attempts": 2, "on_status_codes": [503]}}});
    assert_eq!(
        call(p, Method::POST, "/v1/configs", None, Some(body.clone()))
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            p,
            Method::POST,
            "/v1/configs",
            Some(&p.inference),
            Some(body.clone())
        )
        .await
        .0,
        403
    );
    let bad = json!({"name": "bad", "config": {"retry": {"attempts": 12}}});
    let (status, err) = call(p, Method::POST, "/v1/configs", Some(&p.admin), Some(bad)).await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry.attempts"),
        "{err}"
    );
    let (status, created) = call(
        p,
        Method::POST,
        "/v1/configs",
        Some(&p.admin),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["slug"], "pc-01ai-retry-123");
    let v1 = created["version_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(p, Method::POST, "/v1/configs", Some(&p.admin), Some(body))
            .await
            .0,
        409
    );

    // The tutorial's call: retries from the saved config, its version on the answer.
    let key = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-config", "pc-01ai-retry-123"),
    ];
    p.upstream.script([Reply::status(503), Reply::ok()]);
    let calls = p.upstream.calls();
    let retried = ask(p, &question("retry me"), &key).await;
    assert_eq!(
        (retried.status, retried.header("x-deja-config-version")),
        (200, Some(v1.as_str()))
    );
    assert_eq!(p.upstream.calls() - calls, 2);

    let update = json!({"config": {"retry": {"attempts": 0}}});
    let (status, updated) = call(
        p,
        Method::PUT,
        "/v1/configs/pc-01ai-retry-123",
        Some(&p.admin),
        Some(update),
    )
    .await;
    assert_eq!(status, 200);
    let v2 = updated["version_id"].as_str().unwrap().to_owned();
    eventually("the update", FRESH, || async {
        ask(p, &question("after update"), &key)
            .await
            .header("x-deja-config-version")
            == Some(v2.as_str())
    })
    .await;
    p.upstream.script([Reply::status(503)]);
    assert_eq!(ask(p, &question("no retry now"), &key).await.status, 503);

    let pinned = format!("pc-01ai-retry-123@{v1}");
    let pinned = ask(
        p,
        &question("pinned"),
        &[
            ("x-portkey-api-key", &p.inference),
            ("x-portkey-config", &pinned),
        ],
    )
    .await;
    assert_eq!(pinned.header("x-deja-config-version"), Some(v1.as_str()));

    let (status, rolled) = call(
        p,
        Method::POST,
        "/v1/configs/pc-01ai-retry-123/rollback",
        Some(&p.admin),
        Some(json!({"version_id": v1})),
    )
    .await;
    assert_eq!(status, 200);
    let v3 = rolled["version_id"].as_str().unwrap().to_owned();
    let (_, got) = call(
        p,
        Method::GET,
        "/v1/configs/pc-01ai-retry-123",
        Some(&p.admin),
        None,
    )
    .await;
    assert_eq!(
        (
            got["version_id"].as_str(),
            got["config"]["retry"]["attempts"].as_u64()
        ),
        (Some(v3.as_str()), Some(2))
    );
    let (_, versions) = call(
        p,
        Method::GET,
        "/v1/configs/pc-01ai-retry-123/versions",
        Some(&p.admin),
        None,
    )
    .await;
    assert_eq!(versions["total"], 3);
    let (_, list) = call(p, Method::GET, "/v1/configs", Some(&p.admin), None).await;
    assert_eq!(list["total"], 1);

    assert_eq!(
        call(
            p,
            Method::DELETE,
            "/v1/configs/pc-01ai-retry-123",
            Some(&p.admin),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            p,
            Method::GET,
            "/v1/configs/pc-01ai-retry-123",
            Some(&p.admin),
            None
        )
        .await
        .0,
        404
    );
    let gone = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-config", "pc-nope"),
    ];
    let unknown = ask(p, &question("unknown"), &gone).await;
    let err = unknown.json();
    assert_eq!(
        (unknown.status, err["error"]["code"].as_str()),
        (400, Some("config_not_found"))
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pc-nope")
    );
}

#[tokio::test]
async fn saved_configs_on_sqlite() {
    saved_configs_flow(&plane(None, true, "").await).await;
}

#[tokio::test]
async fn saved_configs_on_postgres() {
    let db = PgDatabase::create().await;
    saved_configs_flow(&plane(Some(db.url.clone()), true, "").await).await;
}

#[test]
fn keys_are_issued_listed_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deja.toml");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display());
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n")).unwrap();
    let keys = |args: &[&str]| {
        let out = common::deja(dir.path())
            .args(["keys", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created = keys(&["create", "--tenant", "acme", "--scope", "admin"]);
    let secret = created.lines().next().unwrap();
    assert!(secret.starts_with("dk-"), "{created}");
    let id = created.split_whitespace().nth(2).unwrap().to_owned();
    let listed = keys(&["list"]);
    assert!(
        listed.contains(&id) && listed.contains("acme") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(secret), "a secret was listed");
    let db = std::fs::read(dir.path().join("deja.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored"
    );
    keys(&["revoke", &id]);
    assert!(keys(&["list"]).contains("revoked"));
}

#[tokio::test]
async fn virtual_keys_are_sealed_masked_and_used_for_the_provider() {
    use http::Method;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vk.db");
    let p = plane(
        Some(format!("sqlite://{}?mode=rwc", file.display())),
        true,
        "",
    )
    .await;
    let secret = "sk-yi-virtual-1234567890";
    let new = json!({"name": "01.AI prod", "provider": "lingyi", "key": secret, "note": "team A"});
    assert_eq!(
        call(
            &p,
            Method::POST,
            "/v1/virtual-keys",
            Some(&p.inference),
            Some(new.clone())
        )
        .await
        .0,
        403
    );
    let (status, created) = call(
        &p,
        Method::POST,
        "/v1/virtual-keys",
        Some(&p.admin),
        Some(new),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let slug = created["slug"].as_str().unwrap().to_owned();
    assert!(slug.starts_with("01-ai-prod-"), "{slug}");
    let (_, listed) = call(&p, Method::GET, "/v1/virtual-keys", Some(&p.admin), None).await;
    assert_eq!(listed["data"][0]["key"], "sk-y****7890");
    let (_, one) = call(
        &p,
        Method::GET,
        &format!("/v1/virtual-keys/{slug}"),
        Some(&p.admin),
        None,
    )
    .await;
    assert!(!one.to_string().contains(secret) && !listed.to_string().contains(secret));
    let db = std::fs::read(&file).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "stored in the clear"
    );

    let with_key = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-virtual-key", slug.as_str()),
    ];
    assert_eq!(
        ask(&p, &question("via a virtual key"), &with_key)
            .await
            .status,
        200
    );
    let last = p.upstream.received().pop().unwrap();
    assert_eq!(last.headers["authorization"], format!("Bearer {secret}"));

    let saved =
        json!({"name": "vk config", "config": {"virtual_key": slug, "retry": {"attempts": 1}}});
    let (_, cfg) = call(&p, Method::POST, "/v1/configs", Some(&p.admin), Some(saved)).await;
    let cfg_slug = cfg["slug"].as_str().unwrap();
    let via_config = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-config", cfg_slug),
    ];
    assert_eq!(
        ask(&p, &question("via a saved config"), &via_config)
            .await
            .status,
        200
    );
    assert_eq!(
        p.upstream.received().pop().unwrap().headers["authorization"],
        format!("Bearer {secret}")
    );

    let rotated = "sk-yi-rotated-0987654321";
    let (status, _) = call(
        &p,
        Method::PUT,
        &format!("/v1/virtual-keys/{slug}"),
        Some(&p.admin),
        Some(json!({"key": rotated})),
    )
    .await;
    assert_eq!(status, 200);
    eventually("the rotated key", FRESH, || async {
        ask(
            &p,
            &question(&format!("rotated {}", deja::store::random_hex(4))),
            &with_key,
        )
        .await;
        p.upstream.received().pop().unwrap().headers["authorization"] == format!("Bearer {rotated}")
    })
    .await;

    let unknown = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-virtual-key", "nope"),
    ];
    let refused = ask(&p, &question("unknown key"), &unknown).await;
    assert_eq!(
        (refused.status, refused.json()["error"]["param"].as_str()),
        (400, Some("x-portkey-virtual-key"))
    );
    assert_eq!(
        call(
            &p,
            Method::DELETE,
            &format!("/v1/virtual-keys/{slug}"),
            Some(&p.admin),
            None
        )
        .await
        .0,
        200
    );
    eventually("the deletion", FRESH, || async {
        ask(&p, &question("deleted"), &with_key).await.status == 400
    })
    .await;
}

#[tokio::test]
async fn without_a_secret_key_virtual_keys_are_refused_clearly() {
    // On Postgres: a SQLite store without a configured key makes one beside its file.
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let (_, admin) = store.create_key("acme", Scope::Admin).await.unwrap();
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(
        &upstream.url,
        &format!("[store]\nurl = \"{url}\"\n"),
    ))
    .await;
    let (status, err) = call(
        &gw,
        http::Method::POST,
        "/v1/virtual-keys",
        Some(&admin),
        Some(json!({"name": "x", "provider": "lingyi", "key": "sk-x"})),
    )
    .await;
    assert_eq!(status, 503, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DEJA_SECRET_KEY"),
        "{err}"
    );
}

#[tokio::test]
async fn every_request_is_logged_and_filtered_without_bodies_unless_asked() {
    use http::Method;
    let p = plane(None, true, "").await;
    let key = [("x-portkey-api-key", p.inference.as_str())];
    ask(&p, &question("log me"), &key).await;
    ask(&p, &question("log me"), &key).await;
    p.upstream.script([Reply::status(503)]);
    ask(&p, &question("fail me"), &key).await;
    let rows = logs_until(&p, 3).await;
    let newest = &rows["data"][0];
    assert_eq!(
        (newest["status"].as_i64(), newest["tenant"].as_str()),
        (Some(503), Some("acme")),
        "{rows}"
    );
    let hit = &rows["data"][1];
    assert_eq!(
        (hit["cache_status"].as_str(), hit["tokens"].as_i64()),
        (Some("hit"), Some(10)),
        "{rows}"
    );
    assert_eq!(hit["route"], "default");
    assert!(
        hit["prompt"].is_null() && hit["answer"].is_null(),
        "no bodies by default"
    );
    assert!(hit["latency_ms"].as_f64().unwrap() > 0.0);
    let (_, hits) = call(
        &p,
        Method::GET,
        "/v1/logs?cache_status=HIT",
        Some(&p.admin),
        None,
    )
    .await;
    assert_eq!(hits["total"], 1);
    let (_, failed) = call(
        &p,
        Method::GET,
        "/v1/logs?status=503&route=default",
        Some(&p.admin),
        None,
    )
    .await;
    assert_eq!(failed["total"], 1);
    assert_eq!(
        call(&p, Method::GET, "/v1/logs", Some(&p.inference), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&p, Method::GET, "/v1/logs?status=abc", Some(&p.admin), None)
            .await
            .0,
        400
    );

    let verbose = plane(None, true, "[log]\nbodies = true\n").await;
    let key = [("x-portkey-api-key", verbose.inference.as_str())];
    ask(&verbose, &question("keep my words"), &key).await;
    let rows = logs_until(&verbose, 1).await;
    assert!(
        rows["data"][0]["prompt"]
            .as_str()
            .unwrap()
            .contains("keep my words")
    );
    assert!(
        rows["data"][0]["answer"]
            .as_str()
            .unwrap()
            .contains("hello from the stand-in")
    );
}

#[tokio::test]
async fn a_callers_trace_id_comes_back_and_is_logged_with_the_answering_target() {
    let p = plane(None, true, "").await;
    let traced = [
        ("x-portkey-api-key", p.inference.as_str()),
        ("x-portkey-trace-id", "checkout-7f3a"),
    ];
    let first = ask(&p, &question("trace me"), &traced).await;
    assert_eq!(first.header("x-portkey-trace-id"), Some("checkout-7f3a"));
    assert!(first.header("x-portkey-request-id").is_some());
    let again = ask(&p, &question("trace me"), &traced).await;
    assert_eq!(again.cache(), "HIT");
    for bad in ["has spaces in it", &"x".repeat(129)] {
        let headers = [
            ("x-portkey-api-key", p.inference.as_str()),
            ("x-portkey-trace-id", bad),
        ];
        let refused = ask(&p, &question("bad trace"), &headers).await;
        assert_eq!(
            (refused.status, refused.json()["error"]["param"].as_str()),
            (400, Some("x-portkey-trace-id")),
            "{bad}"
        );
    }
    let rows = logs_until(&p, 4).await;
    let rows = rows["data"].as_array().unwrap();
    let with = |cache: &str| rows.iter().find(|r| r["cache_status"] == cache).unwrap();
    let (hit, miss) = (with("hit"), with("miss"));
    assert_eq!(
        (&hit["trace_id"], &miss["trace_id"]),
        (&json!("checkout-7f3a"), &json!("checkout-7f3a"))
    );
    // The provider answered the miss (the stand-in's host); the cache answered the hit.
    assert_eq!(
        (&miss["target"], &hit["target"]),
        (&json!("127.0.0.1"), &json!(""))
    );
    let refused: Vec<&Value> = rows.iter().filter(|r| r["status"] == 400).collect();
    assert_eq!(refused.len(), 2, "{rows:?}");
    assert!(
        refused.iter().all(|r| r["trace_id"] == ""),
        "a refused trace id is not kept"
    );
}

#[tokio::test]
async fn streamed_answers_and_their_replays_are_logged_with_their_usage() {
    let p = plane(None, true, "").await;
    let mut last = chunk(json!({}), Some("stop"));
    last["usage"] = json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11});
    let events = [
        event(&chunk(json!({"role": "assistant", "content": "hi"}), None)),
        event(&last),
        DONE.to_owned(),
    ];
    p.upstream.script([Reply::sse(&events, None)]);
    let ask_stream = || async {
        let key = [("x-portkey-api-key", p.inference.as_str())];
        let reply = ask(&p, &streamed("stream and count me"), &key).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.ends_with(DONE), "{}", reply.body);
        reply
    };
    assert_eq!(ask_stream().await.cache(), "MISS");
    // Replayed from the cache without `include_usage`, the stream carries no usage chunk; the
    // log counts the stored answer's.
    let replayed = ask_stream().await;
    assert_eq!(replayed.cache(), "HIT");
    assert!(!replayed.body.contains("\"usage\":{"), "{}", replayed.body);
    let rows = logs_until(&p, 2).await;
    for row in rows["data"].as_array().unwrap() {
        assert_eq!(
            (
                row["tokens"].as_i64(),
                row["prompt_tokens"].as_i64(),
                row["completion_tokens"].as_i64()
            ),
            (Some(11), Some(7), Some(4)),
            "{rows}"
        );
    }
    assert_eq!(rows["data"][0]["cache_status"], "hit");
}

/// The request log once it holds `n` rows, and no more.
async fn logs_until(p: &Plane, n: u64) -> Value {
    let rows = common::until_logged(p, &p.admin, n as usize).await;
    assert_eq!(rows["total"], n, "{rows}");
    rows
}

#[tokio::test]
async fn cache_analytics_come_from_the_request_log() {
    use http::Method;
    let p = plane(
        None,
        true,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"simple\"\n",
    )
    .await;
    let key = [("x-portkey-api-key", p.inference.as_str())];
    for _ in 0..3 {
        ask(&p, &question("analytics"), &key).await;
    }
    logs_until(&p, 3).await;
    let (status, report) = call(
        &p,
        Method::GET,
        "/v1/analytics/cache?window=1h",
        Some(&p.admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let route = &report["routes"][0];
    assert_eq!(
        (route["route"].as_str(), route["requests"].as_u64()),
        (Some("default"), Some(3))
    );
    assert!(
        (route["exact_hit_ratio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{route}"
    );
    assert_eq!(
        route["tokens_saved"], 20,
        "two hits of the stand-in's 10 tokens"
    );
    assert!((route["cost_saved_usd"].as_f64().unwrap() - 20.0 * 0.14 / 1e6).abs() < 1e-12);
    assert_eq!(route["latency"]["hit"]["count"], 2);
    assert_eq!(
        call(
            &p,
            Method::GET,
            "/v1/analytics/cache?window=soon",
            Some(&p.admin),
            None
        )
        .await
        .0,
        400
    );
}
