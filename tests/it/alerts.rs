//! Alert rules against a local webhook receiver (a stand-in that records what it is sent): an
//! error-ratio rule fires once when errors pass the threshold, does not repeat while firing, and
//! resolves once when requests succeed again.

use crate::common;

use std::time::Duration;

use common::{Gateway, Reply, Upstream, config, eventually, question};
use serde_json::Value;

/// Asks `text` with retries off; the status.
async fn ask_once(gw: &Gateway, text: &str) -> u16 {
    let no_retry = [("x-portkey-config", r#"{"retry":{"attempts":0}}"#)];
    common::ask(gw, &question(text), &no_retry).await.status
}

fn posted(receiver: &Upstream) -> Vec<Value> {
    receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn an_alert_fires_once_and_resolves_once() {
    let (upstream, receiver) = (Upstream::spawn().await, Upstream::spawn().await);
    let extra = format!(
        "[alerting]\ninterval = \"100ms\"\n[[alerts]]\nname = \"errors\"\nmetric = \"error_ratio\"\n\
         op = \">\"\nthreshold = 0.5\nwindow = \"300ms\"\nwebhook = \"{}/hook\"\n\
         [[routes]]\nname = \"default\"\n[routes.cache]\nmode = \"off\"\n",
        receiver.url
    );
    let gw = Gateway::spawn(config(&upstream.url, &extra)).await;
    // Fail until the rule fires.
    eventually("the alert to fire", Duration::from_secs(5), || async {
        if receiver.calls() > 0 {
            return true;
        }
        upstream.script([Reply::status(503)]);
        assert_eq!(ask_once(&gw, "fail").await, 503);
        false
    })
    .await;
    // Still failing: no repeat while firing.
    for _ in 0..10 {
        upstream.script([Reply::status(503)]);
        ask_once(&gw, "still failing").await;
        // A claim about what does not happen: keep failing across several of the rule's 100 ms
        // evaluations (nothing counts evaluations to wait on instead).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.calls(), 1, "{:?}", posted(&receiver));
    // Succeed until it resolves.
    eventually("the alert to resolve", Duration::from_secs(5), || async {
        if receiver.calls() > 1 {
            return true;
        }
        assert_eq!(ask_once(&gw, "fine").await, 200);
        false
    })
    .await;
    let hooks = posted(&receiver);
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(
        (hooks[0]["alert"].as_str(), hooks[0]["status"].as_str()),
        (Some("errors"), Some("firing"))
    );
    assert!(hooks[0]["value"].as_f64().unwrap() > 0.5);
    assert_eq!(
        hooks[0]["metric"], "error_ratio",
        "named as the config names it"
    );
    assert_eq!(hooks[1]["status"], "resolved");
    assert!(hooks[1]["value"].as_f64().unwrap() <= 0.5);
    assert_eq!(receiver.received()[0].path, "/v1/hook");
}

#[test]
fn bad_alert_rules_are_refused_at_load() {
    let err = deja::Config::from_toml_with_env(
        "[[alerts]]\nname = \"x\"\nmetric = \"hit_ratio\"\nop = \"<\"\nthreshold = 0.2\nwindow = \"0s\"\nwebhook = \"ftp://x\"\n",
        "t.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("alerts[0].webhook must be an http(s) URL"),
        "{err}"
    );
    assert!(err.contains("alerts[0].window must be above 0"), "{err}");
    let err = deja::Config::from_toml_with_env(
        "[[alerts]]\nname = \"x\"\nmetric = \"nope\"\nop = \"<\"\nthreshold = 1\nwindow = \"1m\"\nwebhook = \"http://x\"\n",
        "t.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("alerts[0].metric"), "{err}");
}
