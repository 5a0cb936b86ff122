//! Portkey's `strategy` + `targets` against two and three upstream stand-ins: fallback on a 503
//! and on a refused connection, `on_status_codes`, weighted load balancing over 2,000 requests,
//! circuit breakers opening and closing, `override_params`, nested strategies, targets in the
//! TOML config, and the cache in front of all of it.

use crate::common;

use std::time::Duration;

use common::{ChatReply, Gateway, Reply, Upstream, ask, free_port, metric, question};

/// The stand-ins are on loopback: callers may name them only because the operator lists it.
fn config_allowing_loopback(upstream_url: &str, extra: &str) -> deja::Config {
    common::config(
        upstream_url,
        &format!("[security]\nallowed_hosts = [\"127.0.0.1\"]\n{extra}"),
    )
}
use serde_json::{Value, json};

/// Asks `text` under the Portkey config `plan` (`x-portkey-config`).
async fn ask_with_plan(gw: &Gateway, plan: &Value, text: &str) -> ChatReply {
    let plan = plan.to_string();
    ask(gw, &question(text), &[("x-portkey-config", &plan)]).await
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}/v1", free_port())
}

#[tokio::test]
async fn fallback_moves_on_after_a_503_and_a_refused_connection() {
    let (default, a, b) = (
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
    );
    let gw = Gateway::spawn(config_allowing_loopback(
        &default.url,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n",
    ))
    .await;
    a.script([Reply::status(503)]);
    let plan = json!({"strategy": {"mode": "fallback"}, "retry": {"attempts": 0},
        "targets": [{"custom_host": a.url}, {"custom_host": b.url}]});
    let r = ask_with_plan(&gw, &plan, "first").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-portkey-last-used-option-index"), Some("1"));
    assert_eq!(r.header("x-deja-target"), Some("targets[1]"));
    assert_eq!((a.calls(), b.calls(), default.calls()), (1, 1, 0));

    let refused = json!({"strategy": {"mode": "fallback"},
        "targets": [{"custom_host": closed_port_url(), "retry": {"attempts": 0}}, {"custom_host": b.url}]});
    let r = ask_with_plan(&gw, &refused, "second").await;
    assert_eq!(
        (r.status, r.header("x-deja-target")),
        (200, Some("targets[1]"))
    );

    // Only the statuses the strategy names move it on.
    a.script([Reply::status(503)]);
    let narrow = json!({"strategy": {"mode": "fallback", "on_status_codes": [429]}, "retry": {"attempts": 0},
        "targets": [{"custom_host": a.url}, {"custom_host": b.url}]});
    let r = ask_with_plan(&gw, &narrow, "third").await;
    assert_eq!(
        (r.status, r.header("x-deja-target")),
        (503, Some("targets[0]"))
    );
    assert_eq!(b.calls(), 2);
    let metrics = gw.scrape_metrics().await;
    // A caller's own targets are counted under `caller` (their paths are the caller's to pick):
    // b's two answers and a's final 503.
    let answered = [("route", "default"), ("target", "caller")];
    assert_eq!(
        metric(&metrics, "deja_target_answers_total", &answered),
        Some(3.0)
    );
}

#[tokio::test]
async fn loadbalance_splits_by_weight_and_weight_0_disables() {
    let (default, a, b, c) = (
        Upstream::spawn_quiet().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
    );
    let gw = Gateway::spawn(config_allowing_loopback(
        &default.url,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n",
    ))
    .await;
    let plan = json!({"strategy": {"mode": "loadbalance"},
        "targets": [{"custom_host": a.url, "weight": 3}, {"custom_host": b.url, "weight": 1}, {"custom_host": c.url, "weight": 0}]});
    for i in 0..2000 {
        assert_eq!(
            ask_with_plan(&gw, &plan, &format!("q{i}")).await.status,
            200
        );
    }
    // Binomial(2000, 0.75): mean 1500, standard deviation 19.4; 5 deviations either side.
    let (na, nb) = (a.calls(), b.calls());
    assert_eq!(na + nb, 2000);
    assert!((1403..=1597).contains(&na), "a got {na}, b got {nb}");
    assert_eq!(c.calls(), 0, "weight 0 is never picked");
}

#[tokio::test]
async fn a_circuit_opens_after_failures_and_closes_after_a_good_probe() {
    let (default, a, b) = (
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
    );
    // The route's own targets: their circuits are exported by path.
    let gw = Gateway::spawn(config_allowing_loopback(
        &default.url,
        &format!(
            "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n\
             [routes.retry]\nattempts = 0\n[routes.strategy]\nmode = \"fallback\"\n\
             [[routes.targets]]\ncustom_host = \"{}\"\n\
             cb_config = {{ failure_threshold = 2, cooldown = 300 }}\n\
             [[routes.targets]]\ncustom_host = \"{}\"\n",
            a.url, b.url
        ),
    ))
    .await;
    let plan = json!({});
    a.script([Reply::status(503), Reply::status(503), Reply::status(503)]);
    for i in 0..5 {
        assert_eq!(
            ask_with_plan(&gw, &plan, &format!("q{i}")).await.status,
            200
        );
    }
    assert_eq!(a.calls(), 2, "open after 2 failures: a is skipped");
    let metrics = gw.scrape_metrics().await;
    let open = [("route", "default"), ("target", "targets[0]")];
    assert_eq!(
        metric(&metrics, "deja_target_circuit_open", &open),
        Some(1.0)
    );
    // Past the 300 ms cooldown the test set: the wait is what is being tested (polling would
    // send the probe early).
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The probe fails (a's third scripted 503): open again.
    ask_with_plan(&gw, &plan, "probe").await;
    assert_eq!(a.calls(), 3);
    ask_with_plan(&gw, &plan, "skipped").await;
    assert_eq!(a.calls(), 3);
    // Past the cooldown again, as above.
    tokio::time::sleep(Duration::from_millis(350)).await;
    // This probe succeeds: closed, and a serves again.
    let r = ask_with_plan(&gw, &plan, "good probe").await;
    assert_eq!(r.header("x-deja-target"), Some("targets[0]"));
    let r = ask_with_plan(&gw, &plan, "closed").await;
    assert_eq!(r.header("x-deja-target"), Some("targets[0]"));
    let metrics = gw.scrape_metrics().await;
    assert_eq!(
        metric(&metrics, "deja_target_circuit_open", &open),
        Some(0.0)
    );
}

#[tokio::test]
async fn override_params_nested_strategies_and_credentials() {
    let (default, a, b, c) = (
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
    );
    let gw = Gateway::spawn(config_allowing_loopback(
        &default.url,
        "[[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n",
    ))
    .await;
    a.script([Reply::status(503)]);
    b.script([Reply::status(503)]);
    let plan = json!({"strategy": {"mode": "fallback"}, "retry": {"attempts": 0},
    "override_params": {"temperature": 0.1, "model": "yi-lightning"},
    "targets": [
        {"strategy": {"mode": "fallback"}, "targets": [{"custom_host": a.url}, {"custom_host": b.url}]},
        {"custom_host": c.url, "api_key": "sk-target-c", "override_params": {"model": "yi-large"}}
    ]});
    let r = ask_with_plan(&gw, &plan, "nested").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-deja-target"), Some("targets[1]"));
    assert_eq!(r.header("x-deja-model"), Some("yi-large"));
    let sent = c.received().pop().unwrap();
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        (body["model"].as_str(), body["temperature"].as_f64()),
        (Some("yi-large"), Some(0.1))
    );
    assert_eq!(sent.headers["authorization"], "Bearer sk-target-c");
    assert!(
        a.received()[0].headers.get("authorization").is_none(),
        "the operator's key goes only to [upstream], never to another host"
    );
    let r = ask_with_plan(&gw, &plan, "inner answers").await;
    assert_eq!(r.header("x-deja-target"), Some("targets[0].targets[0]"));
    assert_eq!(r.header("x-portkey-last-used-option-index"), Some("0"));
}

#[tokio::test]
async fn bad_target_configs_are_refused_with_the_known_providers() {
    let default = Upstream::spawn().await;
    let gw = Gateway::spawn(config_allowing_loopback(&default.url, "")).await;
    let plan = json!({"strategy": {"mode": "fallback"}, "targets": [{"provider": "acme-ai"}, {"weight": -1}]});
    let r = ask_with_plan(&gw, &plan, "bad").await;
    assert_eq!(r.status, 400);
    let err = r.json();
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("targets[0].provider `acme-ai` is not known; known providers: lingyi"),
        "{message}"
    );
    assert!(
        message.contains("targets[1].weight must be a number >= 0"),
        "{message}"
    );
    assert_eq!(default.calls(), 0);
    let bad = deja::Config::from_toml_with_env(
        "[[routes]]\nname = \"r\"\n[[routes.targets]]\nprovider = \"nope\"\n",
        "t.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("routes[0].targets[0].provider `nope` is not known"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_route_lists_targets_in_toml_and_the_cache_sits_in_front() {
    let (default, a, b) = (
        Upstream::spawn().await,
        Upstream::spawn().await,
        Upstream::spawn().await,
    );
    let toml = format!(
        "[[routes]]\nname = \"default\"\n[routes.strategy]\nmode = \"fallback\"\n\
         [[routes.targets]]\ncustom_host = \"{}\"\n[[routes.targets]]\ncustom_host = \"{}\"\n\
         [routes.targets.override_params]\nmodel = \"yi-large\"\n",
        a.url, b.url
    );
    let gw = Gateway::spawn(config_allowing_loopback(&default.url, &toml)).await;
    a.script([
        Reply::status(503),
        Reply::status(503),
        Reply::status(503),
        Reply::status(503),
    ]);
    let miss = ask_with_plan(&gw, &json!({"retry": {"attempts": 0}}), "cache me").await;
    assert_eq!(miss.header("x-deja-target"), Some("targets[1]"));
    assert_eq!(miss.cache(), "MISS");
    let hit = ask(&gw, &question("cache me"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.header("x-deja-target"), None, "a hit touches no target");
    assert_eq!((a.calls(), b.calls(), default.calls()), (1, 1, 0));
}
