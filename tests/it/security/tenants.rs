//! Attacks on the control plane: one tenant's admin reading or changing another's saved configs,
//! virtual keys, request log and analytics; inline provider keys kept in plaintext; `/metrics`
//! open to anyone.

use http::Method;
use serde_json::{Value, json};

use super::scene::{ACME_SECRET, scene};
use crate::common::{self, eventually};

const INLINE_SECRET: &str = "sk-inline-secret-in-a-saved-config-9999";

#[tokio::test]
async fn another_tenants_admin_sees_and_changes_nothing() {
    let s = scene("").await;
    let config = json!({"retry": {"attempts": 1},
        "targets": [{"provider": "deepseek", "api_key": INLINE_SECRET}]});
    let (status, created) = s
        .admin(
            Method::POST,
            "/v1/configs",
            &s.acme.admin,
            Some(json!({"name": "acme", "slug": "pc-acme", "config": config})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let vk = s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await;
    s.ask_as(&s.acme.inference, &[], "acme's private question")
        .await;
    common::until_logged(&s, &s.acme.admin, 1).await;

    let globex = &s.globex.admin;
    let (_, configs) = s.admin(Method::GET, "/v1/configs", globex, None).await;
    assert_eq!(configs["total"], 0, "{configs}");
    let (_, keys) = s.admin(Method::GET, "/v1/virtual-keys", globex, None).await;
    assert_eq!(keys["total"], 0, "{keys}");
    let (_, logs) = s.admin(Method::GET, "/v1/logs", globex, None).await;
    assert_eq!(logs["total"], 0, "{logs}");
    let (_, summary) = s
        .admin(
            Method::GET,
            "/v1/analytics/graphs/requests?time_of_generation_min=2000-01-01T00:00:00Z\
             &time_of_generation_max=2100-01-01T00:00:00Z",
            globex,
            None,
        )
        .await;
    assert_eq!(summary["summary"]["total"], 0, "{summary}");
    let (_, own) = s
        .admin(
            Method::GET,
            "/v1/analytics/graphs/requests?time_of_generation_min=2000-01-01T00:00:00Z\
             &time_of_generation_max=2100-01-01T00:00:00Z",
            &s.acme.admin,
            None,
        )
        .await;
    assert_eq!(own["summary"]["total"], 1, "{own}");
    let (_, report) = s
        .admin(Method::GET, "/v1/analytics/cache", globex, None)
        .await;
    assert!(!report.to_string().contains("\"requests\":1"), "{report}");
    for (method, path, body) in [
        (Method::GET, "/v1/configs/pc-acme".to_owned(), None),
        (
            Method::PUT,
            "/v1/configs/pc-acme".to_owned(),
            Some(json!({"config": {}})),
        ),
        (Method::GET, "/v1/configs/pc-acme/versions".to_owned(), None),
        (Method::DELETE, "/v1/configs/pc-acme".to_owned(), None),
        (Method::GET, format!("/v1/virtual-keys/{vk}"), None),
        (
            Method::PUT,
            format!("/v1/virtual-keys/{vk}"),
            Some(json!({"key": "sk-stolen"})),
        ),
        (Method::DELETE, format!("/v1/virtual-keys/{vk}"), None),
    ] {
        let (status, body) = s.admin(method.clone(), &path, globex, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    // globex's own config under the same slug is no oracle and no clash.
    let (status, _) = s
        .admin(
            Method::POST,
            "/v1/configs",
            globex,
            Some(json!({"name": "mine", "slug": "pc-acme", "config": {}})),
        )
        .await;
    assert_eq!(status, 200);
    // globex's inference key naming acme's saved config gets globex's own (empty) one.
    let r = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-config", "pc-acme")],
            "mine",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        !s.provider
            .received()
            .iter()
            .any(|r| format!("{:?}", r.headers).contains(INLINE_SECRET))
    );
    // acme's objects are untouched.
    let (_, mine) = s
        .admin(Method::GET, "/v1/configs/pc-acme", &s.acme.admin, None)
        .await;
    assert_eq!(mine["config"]["retry"]["attempts"], 1, "{mine}");
}

#[tokio::test]
async fn inline_keys_in_saved_configs_are_sealed_and_shown_masked() {
    let s = scene("").await;
    let config = json!({"targets": [{"provider": "deepseek", "api_key": INLINE_SECRET}]});
    let (status, _) = s
        .admin(
            Method::POST,
            "/v1/configs",
            &s.acme.admin,
            Some(json!({"name": "k", "slug": "pc-keyed", "config": config})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, shown) = s
        .admin(Method::GET, "/v1/configs/pc-keyed", &s.acme.admin, None)
        .await;
    let shown_text = shown.to_string();
    assert!(!shown_text.contains(INLINE_SECRET), "{shown_text}");
    assert_eq!(shown["config"]["targets"][0]["api_key"], "sk-i****9999");
    let (_, listed) = s
        .admin(Method::GET, "/v1/configs", &s.acme.admin, None)
        .await;
    assert!(!listed.to_string().contains(INLINE_SECRET));
    let (_, versions) = s
        .admin(
            Method::GET,
            "/v1/configs/pc-keyed/versions",
            &s.acme.admin,
            None,
        )
        .await;
    assert!(!versions.to_string().contains(INLINE_SECRET));
    // Saving back what GET showed must not replace the key with its mask.
    let (status, refused) = s
        .admin(
            Method::PUT,
            "/v1/configs/pc-keyed",
            &s.acme.admin,
            Some(json!({"config": shown["config"]})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let stored = s.store.config("acme", "pc-keyed", None).await.unwrap();
    assert!(
        !stored.config.to_string().contains(INLINE_SECRET),
        "stored sealed: {}",
        stored.config
    );
}

#[tokio::test]
async fn an_operator_sees_across_tenants_and_admins_do_not() {
    let s = scene("").await;
    for (admin, slug) in [(&s.acme.admin, "pc-a"), (&s.globex.admin, "pc-g")] {
        let body = json!({"name": slug, "slug": slug, "config": {"retry": {"attempts": 2}}});
        let (status, _) = s
            .admin(Method::POST, "/v1/configs", admin, Some(body))
            .await;
        assert_eq!(status, 200);
    }
    let slugs = |v: &Value| -> Vec<String> {
        let mut s: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["slug"].as_str().unwrap().to_owned())
            .collect();
        s.sort();
        s
    };
    let (_, all) = s.admin(Method::GET, "/v1/configs", &s.operator, None).await;
    assert_eq!(slugs(&all), ["pc-a", "pc-g"]);
    let (_, acme) = s
        .admin(Method::GET, "/v1/configs?tenant=acme", &s.operator, None)
        .await;
    assert_eq!(slugs(&acme), ["pc-a"]);
    let (status, one) = s
        .admin(
            Method::GET,
            "/v1/configs/pc-g?tenant=globex",
            &s.operator,
            None,
        )
        .await;
    assert_eq!((status, one["tenant"].as_str()), (200, Some("globex")));
    let (status, summary) = s
        .admin(
            Method::GET,
            "/v1/analytics/summary/cache?time_of_generation_min=2000-01-01T00:00:00Z\
             &time_of_generation_max=2100-01-01T00:00:00Z&tenant=acme",
            &s.operator,
            None,
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    // An admin naming another tenant still acts in its own.
    let (status, _) = s
        .admin(
            Method::GET,
            "/v1/configs/pc-g?tenant=globex",
            &s.acme.admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_virtual_key_named_inside_a_target_is_logged() {
    let s = scene("").await;
    let vk = s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await;
    let config = json!({"targets": [{"virtual_key": vk}]}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &config)],
            "logged",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let logs = common::until_logged(&s, &s.acme.admin, 1).await;
    assert_eq!(logs["data"][0]["virtual_key"], vk.as_str(), "{logs}");
}

#[tokio::test]
async fn metrics_need_a_key_when_auth_is_required() {
    let s = scene("").await;
    let get = |key: Option<String>| {
        let url = format!("{}/metrics", s.gw.url);
        async move {
            let mut req = crate::common::client().get(url);
            if let Some(key) = key {
                req = req.header("authorization", format!("Bearer {key}"));
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some(s.acme.inference.clone())).await, 403);
    assert_eq!(get(Some(s.acme.admin.clone())).await, 200);
    let (_, scraper) = s
        .store
        .create_key("monitoring", deja::store::keys::Scope::Metrics)
        .await
        .unwrap();
    // Keys are reloaded every REFRESH_EVERY: the new one works within two reloads.
    let reloads = deja::auth::REFRESH_EVERY * 2;
    eventually("the new metrics key to be loaded", reloads, || async {
        let status = get(Some(scraper.clone())).await;
        if status == 200 { Ok(()) } else { Err(status) }
    })
    .await;
    let r = s
        .ask_as(&scraper, &[], "a metrics key calls no model")
        .await;
    assert_eq!(r.status, 403);
    let open = scene("[security]\nopen_metrics = true\n").await;
    let status = crate::common::client()
        .get(format!("{}/metrics", open.gw.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}
