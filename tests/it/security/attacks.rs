//! Attacks on the data plane: steering a credential to a host the caller chose, reaching internal
//! addresses, using another tenant's virtual key, poisoning the cache, moving shared breakers,
//! forcing refreshes and stretching TTLs.

use std::time::Duration;

use http::Method;
use serde_json::json;

use super::scene::{ACME_SECRET, OPERATOR_KEY, code, scene};
use crate::common::{Reply as Scripted, eventually, metric};

/// The attacker's host, as a caller would name it.
fn evil(s: &super::scene::Scene) -> String {
    s.attacker.url.clone()
}

#[tokio::test]
async fn a_caller_cannot_send_the_operator_key_to_its_own_host() {
    let s = scene("").await;
    for config in [
        json!({"custom_host": evil(&s)}),
        json!({"provider": "openai-compatible", "custom_host": evil(&s)}),
        json!({"strategy": {"mode": "fallback"}, "targets": [{"custom_host": evil(&s)}]}),
    ] {
        let r = s
            .ask_as(
                &s.globex.inference,
                &[("x-portkey-config", &config.to_string())],
                "hi",
            )
            .await;
        assert_eq!(
            (r.status, code(&r.json())),
            (400, "host_not_allowed"),
            "{config}"
        );
    }
    assert_eq!(s.attacker.calls(), 0);
    // Even a host the operator allowed never gets the operator's key.
    let s = scene("[security]\nallowed_hosts = [\"ATTACKER\"]\n").await;
    let config = json!({"targets": [{"custom_host": evil(&s)}]}).to_string();
    let r = s
        .ask_as(&s.globex.inference, &[("x-portkey-config", &config)], "hi")
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(s.attacker.calls(), 1);
    assert!(
        s.attacker.received()[0]
            .headers
            .get("authorization")
            .is_none()
    );
    assert!(!s.attacker_saw().contains(OPERATOR_KEY));
}

#[tokio::test]
async fn a_virtual_key_is_never_sent_to_a_caller_chosen_host() {
    let s = scene("[security]\nallowed_hosts = [\"ATTACKER\"]\n").await;
    let slug = s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await;
    // Named with the host on the same node: refused outright.
    let top = json!({"custom_host": evil(&s)}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &top), ("x-portkey-virtual-key", &slug)],
            "hi",
        )
        .await;
    assert_eq!(
        (r.status, code(&r.json())),
        (400, "credential_not_allowed"),
        "{}",
        r.json()
    );
    let named = json!({"targets": [{"custom_host": evil(&s), "virtual_key": slug}]}).to_string();
    let r = s
        .ask_as(&s.acme.inference, &[("x-portkey-config", &named)], "hi")
        .await;
    assert_eq!(code(&r.json()), "credential_not_allowed");
    // Inherited from the header by a target whose host was changed: dropped, not sent.
    let child = json!({"targets": [{"custom_host": evil(&s)}]}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[
                ("x-portkey-config", &child),
                ("x-portkey-virtual-key", &slug),
            ],
            "hi",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        !s.attacker_saw().contains(ACME_SECRET),
        "{}",
        s.attacker_saw()
    );
    assert!(!s.attacker_saw().contains(OPERATOR_KEY));
    // A host listed on the virtual key by its admin does get it.
    let (status, _) = s
        .admin(
            Method::PUT,
            &format!("/v1/virtual-keys/{slug}"),
            &s.acme.admin,
            Some(json!({"hosts": [evil(&s)]})),
        )
        .await;
    assert_eq!(status, 200);
    // Saved virtual keys are re-read once their copy is FRESH_FOR old.
    let bound = [
        ("x-portkey-config", top.as_str()),
        ("x-portkey-virtual-key", slug.as_str()),
    ];
    let within = deja::policy::saved::FRESH_FOR + Duration::from_secs(1);
    eventually("the key's new host to take effect", within, || async {
        let r = s.ask_as(&s.acme.inference, &bound, "bound").await;
        if r.status == 200 { Ok(()) } else { Err(r.body) }
    })
    .await;
    let last = s.attacker.received().pop().unwrap();
    assert_eq!(
        last.headers["authorization"],
        format!("Bearer {ACME_SECRET}")
    );
}

#[tokio::test]
async fn another_tenants_virtual_key_is_unknown() {
    let s = scene("").await;
    let slug = s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await;
    let theirs = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-virtual-key", &slug)],
            "hi",
        )
        .await;
    let unknown = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-virtual-key", "no-such-key-1a2b3c")],
            "hi",
        )
        .await;
    assert_eq!((theirs.status, unknown.status), (400, 400));
    let message = |r: &crate::common::ChatReply| {
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&slug, "SLUG")
            .replace("no-such-key-1a2b3c", "SLUG")
    };
    assert_eq!(message(&theirs), message(&unknown), "no existence oracle");
    let in_config = json!({"targets": [{"virtual_key": slug}]}).to_string();
    let r = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-config", &in_config)],
            "hi",
        )
        .await;
    assert_eq!(r.status, 400);
    let everything: String = s
        .provider
        .received()
        .iter()
        .map(|r| format!("{:?}", r.headers))
        .collect();
    assert!(!everything.contains(ACME_SECRET));
    // acme itself uses it.
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-virtual-key", &slug)],
            "mine",
        )
        .await;
    assert_eq!(r.status, 200);
    let last = s.provider.received().pop().unwrap();
    assert_eq!(
        last.headers["authorization"],
        format!("Bearer {ACME_SECRET}")
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_without_connecting() {
    let s = scene("[security]\nallowed_hosts = [\"*.example.com\", \"localhost\"]\n").await;
    let port = s
        .attacker
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/v1")
        .to_owned();
    for host in [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://127.1.2.3:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        "http://10.0.0.1/v1".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        format!("http://127.0.0.1:{port}/v1?x=/ignored"),
        format!("http://user:pw@127.0.0.1:{port}/v1"),
    ] {
        let config = json!({"targets": [{"custom_host": host}]}).to_string();
        let r = s
            .ask_as(&s.globex.inference, &[("x-portkey-config", &config)], "hi")
            .await;
        assert_eq!(
            (r.status, code(&r.json())),
            (400, "host_not_allowed"),
            "{host}: {}",
            r.json()
        );
    }
    // A listed name that resolves to an internal address is refused when it is resolved.
    let named = json!({"targets": [{"custom_host": format!("http://localhost:{port}/v1")}]});
    let r = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-config", &named.to_string())],
            "hi",
        )
        .await;
    assert_eq!(
        (r.status, code(&r.json())),
        (502, "upstream_unreachable"),
        "{}",
        r.json()
    );
    assert_eq!(
        s.attacker.calls(),
        0,
        "nothing reached the internal service"
    );
}

#[tokio::test]
async fn an_azure_resource_name_is_a_host_the_caller_chose() {
    // Anyone can own `{name}.openai.azure.com`: naming a resource is naming a host, refused
    // (before any connection) unless the operator lists it, whatever credential comes with it.
    let s = scene("").await;
    let slug = s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await;
    let azure = json!({"provider": "azure-openai", "resource_name": "attacker",
                       "deployment_id": "gpt-4o"});
    let mut inline_key = azure.clone();
    inline_key["api_key"] = json!("sk-callers-own");
    for (config, virtual_key) in [
        (json!({"targets": [azure.clone()]}), None),
        (json!({"targets": [inline_key]}), None),
        (azure.clone(), Some(slug.as_str())),
        (json!({"targets": [{}, azure]}), None),
    ] {
        let config = config.to_string();
        let mut headers = vec![("x-portkey-config", config.as_str())];
        headers.extend(virtual_key.map(|slug| ("x-portkey-virtual-key", slug)));
        let r = s.ask_as(&s.acme.inference, &headers, "hi").await;
        let error = r.json();
        assert_eq!(
            (r.status, code(&error)),
            (400, "host_not_allowed"),
            "{config}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("resource_name") && message.contains("attacker.openai.azure.com"),
            "{message}"
        );
    }
    assert_eq!(
        s.provider.calls(),
        0,
        "a refused plan calls no target, not even the first"
    );
}

#[tokio::test]
async fn connection_failures_all_read_the_same() {
    let s = scene("[security]\nallowed_hosts = [\"127.0.0.1\"]\n").await;
    let closed = format!("http://127.0.0.1:{}/v1", crate::common::redis::free_port());
    s.attacker.script([Scripted::echo_then_reset()]);
    let mut messages = Vec::new();
    for host in [closed, evil(&s)] {
        let config = json!({"retry": {"attempts": 0}, "targets": [{"custom_host": host}]});
        let r = s
            .ask_as(
                &s.globex.inference,
                &[("x-portkey-config", &config.to_string())],
                "hi",
            )
            .await;
        assert_eq!(
            (r.status, code(&r.json())),
            (502, "upstream_unreachable"),
            "{}",
            r.json()
        );
        messages.push(r.json()["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(messages[0], messages[1], "refused and reset look alike");
    assert!(!messages[0].contains("refused") && !messages[0].contains("closed"));
}

#[tokio::test]
async fn an_answer_from_a_callers_host_is_never_served_to_others() {
    let s = scene(
        "[security]\nallowed_hosts = [\"ATTACKER\"]\n[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"simple\"\n",
    )
    .await;
    s.attacker.script([Scripted::echo()]);
    let own = json!({"custom_host": evil(&s), "api_key": "sk-attackers-own"}).to_string();
    let poisoned = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &own)],
            "what is our refund policy?",
        )
        .await;
    assert_eq!((poisoned.status, poisoned.cache()), (200, "MISS"));
    // The same question from a colleague without that config goes to the provider.
    let clean = s
        .ask_as(&s.acme.inference, &[], "what is our refund policy?")
        .await;
    assert_eq!(clean.cache(), "MISS");
    assert_eq!(s.provider.calls(), 1);
    let again = s
        .ask_as(&s.acme.inference, &[], "what is our refund policy?")
        .await;
    assert_eq!(again.cache(), "HIT");
    assert_eq!(
        again.json()["choices"][0]["message"]["content"],
        "hello from the stand-in"
    );
    // A different credential to the same host is a different producer too.
    let other = json!({"custom_host": evil(&s), "api_key": "sk-someone-else"}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &other)],
            "what is our refund policy?",
        )
        .await;
    assert_eq!(r.cache(), "MISS");
}

#[tokio::test]
async fn a_callers_answer_is_not_a_semantic_hit_for_others_nor_another_models() {
    let s = scene(
        "[security]\nallowed_hosts = [\"ATTACKER\"]\n[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"semantic\"\n",
    )
    .await;
    s.attacker.script([Scripted::echo()]);
    let own = json!({"custom_host": evil(&s), "api_key": "sk-attackers-own"}).to_string();
    let question = "How do I reset my account password?";
    let poisoned = s
        .ask_as(&s.acme.inference, &[("x-portkey-config", &own)], question)
        .await;
    assert_eq!((poisoned.status, poisoned.cache()), (200, "MISS"));
    // A colleague's paraphrase, and the same words, without that config: the provider answers.
    let paraphrase = "How can I reset the password of my account?";
    for asked in [paraphrase, question] {
        let clean = s.ask_as(&s.acme.inference, &[], asked).await;
        assert_ne!(
            clean.json()["choices"][0]["message"]["content"],
            poisoned.json()["choices"][0]["message"]["content"],
            "{asked}"
        );
    }
    assert!(s.provider.calls() >= 1);
    // The route's own host is asked for another model: another producer, not a hit either.
    let before = s.provider.calls();
    let larger = json!({"override_params": {"model": "yi-large"}}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &larger)],
            question,
        )
        .await;
    assert_eq!(r.cache(), "MISS");
    assert_eq!(s.provider.calls(), before + 1);
    let sent = s.provider.received().pop().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["model"], "yi-large");
}

#[tokio::test]
async fn force_refresh_needs_permission() {
    let s = scene("[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"simple\"\n").await;
    assert_eq!(
        s.ask_as(&s.acme.inference, &[], "fresh?").await.cache(),
        "MISS"
    );
    let refresh = [("x-portkey-cache-force-refresh", "true")];
    let r = s.ask_as(&s.acme.inference, &refresh, "fresh?").await;
    assert_eq!(r.cache(), "HIT", "an inference key's ask is ignored");
    assert_eq!(s.provider.calls(), 1);
    let r = s.ask_as(&s.acme.admin, &refresh, "fresh?").await;
    assert_eq!(r.cache(), "REFRESH");
    assert_eq!(s.provider.calls(), 2);
    let text = s.gw.scrape_metrics_as(&s.operator).await;
    assert_eq!(
        metric(
            &text,
            "deja_force_refresh_refused_total",
            &[("route", "default")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn caller_ttls_are_capped_and_nonsense_is_refused() {
    let redis = crate::common::redis::RedisServer::start();
    let s = scene(&format!(
        "[redis]\nurl = \"{}\"\n[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"simple\"\nttl = \"1h\"\n",
        redis.url
    ))
    .await;
    for (config, field) in [
        (json!({"cache": {"max_age": u64::MAX}}), "cache.max_age"),
        (json!({"cache": {"ttl": 0}}), "cache.ttl"),
        (
            json!({"cache": {"max_age": 40_000_000_000u64}}),
            "cache.max_age",
        ),
    ] {
        let r = s
            .ask_as(
                &s.acme.inference,
                &[("x-portkey-config", &config.to_string())],
                "ttl",
            )
            .await;
        assert_eq!(r.status, 400, "{config}");
        let body = r.json();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    let long = json!({"cache": {"mode": "simple", "max_age": 300 * 86_400}}).to_string();
    let r = s
        .ask_as(
            &s.acme.inference,
            &[("x-portkey-config", &long)],
            "long life",
        )
        .await;
    assert_eq!(r.status, 200);
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("deja:*exact*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key} lives {ttl} ms");
    }
}

#[tokio::test]
async fn a_callers_breaker_cannot_open_the_routes_own() {
    let s = scene(
        "[security]\nallowed_hosts = [\"127.0.0.1\"]\n[[routes]]\nname = \"default\"\n\
         [routes.cache]\nmode = \"off\"\n[routes.strategy]\nmode = \"fallback\"\n\
         [[routes.targets]]\ncustom_host = \"PROVIDER\"\n\
         cb_config = { failure_threshold = 1, cooldown = 60000 }\n",
    )
    .await;
    let dead = format!("http://127.0.0.1:{}/v1", crate::common::redis::free_port());
    let huge = json!({"retry": {"attempts": 0}, "cb_config": {"failure_threshold": 1, "cooldown": 86_400_000u64},
        "targets": [{"custom_host": dead}]});
    let r = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-config", &huge.to_string())],
            "x",
        )
        .await;
    assert_eq!(
        (r.status, code(&r.json())),
        (400, "cooldown_too_long"),
        "{}",
        r.json()
    );
    let allowed = json!({"retry": {"attempts": 0}, "cb_config": {"failure_threshold": 1, "cooldown": 30_000},
        "targets": [{"custom_host": dead}]});
    for _ in 0..2 {
        let r = s
            .ask_as(
                &s.globex.inference,
                &[("x-portkey-config", &allowed.to_string())],
                "x",
            )
            .await;
        assert_eq!(r.status, 502);
    }
    // The route's own target at the same path still answers, for every tenant.
    for key in [&s.acme.inference, &s.globex.inference] {
        let r = s.ask_as(key, &[], "route target").await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
}

#[tokio::test]
async fn a_callers_bad_requests_cannot_open_the_routes_breaker() {
    let s = scene(
        "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n\
         [routes.strategy]\nmode = \"fallback\"\n[[routes.targets]]\ncustom_host = \"PROVIDER\"\n\
         cb_config = { failure_threshold = 2, cooldown = 60000 }\n",
    )
    .await;
    s.provider
        .script([Scripted::status(400), Scripted::status(400)]);
    for _ in 0..2 {
        assert_eq!(
            s.ask_as(&s.globex.inference, &[], "bad parameter")
                .await
                .status,
            400
        );
    }
    let r = s.ask_as(&s.acme.inference, &[], "fine").await;
    assert_eq!(
        r.status,
        200,
        "a 4xx the caller caused is not the target's failure: {}",
        r.json()
    );
}

#[tokio::test]
async fn a_config_cannot_fan_out_without_bound() {
    let s = scene("").await;
    let targets: Vec<_> = (0..17).map(|_| json!({})).collect();
    let config = json!({"strategy": {"mode": "fallback"}, "targets": targets}).to_string();
    let r = s
        .ask_as(&s.globex.inference, &[("x-portkey-config", &config)], "fan")
        .await;
    assert_eq!(
        (r.status, code(&r.json())),
        (400, "too_many_targets"),
        "{}",
        r.json()
    );
    assert_eq!(s.provider.calls(), 0);
}

#[tokio::test]
async fn the_operator_key_stays_under_its_base_path() {
    let s = scene("").await;
    // The provider's own host and port, another path (another account behind one gateway).
    let other_path = s.provider.url.replace("/v1", "/attacker-account/gw");
    let config = json!({"custom_host": other_path}).to_string();
    let r = s
        .ask_as(
            &s.globex.inference,
            &[("x-portkey-config", &config)],
            "path",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let sent = s.provider.received().pop().unwrap();
    assert_eq!(sent.path, "/attacker-account/gw/chat/completions");
    assert!(
        sent.headers.get("authorization").is_none(),
        "the key is bound to /v1"
    );
}

#[tokio::test]
async fn a_callers_target_paths_are_not_metric_labels() {
    let s = scene("[security]\nallowed_hosts = [\"ATTACKER\"]\n").await;
    let deep = json!({"strategy": {"mode": "loadbalance"}, "targets": [
        {"strategy": {"mode": "loadbalance"}, "targets": [{"custom_host": evil(&s)}]}]})
    .to_string();
    let r = s
        .ask_as(&s.globex.inference, &[("x-portkey-config", &deep)], "label")
        .await;
    assert_eq!(r.status, 200);
    let text = s.gw.scrape_metrics_as(&s.operator).await;
    assert!(
        !text.contains("targets[0].targets[0]"),
        "a caller's path became a series"
    );
    assert_eq!(
        metric(&text, "deja_target_answers_total", &[("target", "caller")]),
        Some(1.0)
    );
}
