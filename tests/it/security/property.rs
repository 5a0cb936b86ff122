//! Any `x-portkey-config` a caller can send either resolves to hosts and credentials the rules
//! allow, or is refused: generated config trees (hosts, inline keys, virtual keys of the caller's
//! tenant and of another, nested strategies, internal addresses, off-list public names and Azure
//! resources) against a real gateway, with the attacker's host allowed (the worst case), checking
//! what the attacker and the provider received. Off-list names are never connected to: a config
//! naming one must be refused before any call.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};

use super::scene::{ACME_SECRET, OPERATOR_KEY, scene};

const GLOBEX_SECRET: &str = "sk-globex-provider-credential-0002";
const INTERNAL: [&str; 3] = [
    "http://10.0.0.1/v1",
    "http://169.254.169.254/latest",
    "http://[fd00::1]/v1",
];

/// A public name no rule allows.
const OFF_LIST: &str = "https://api.not-on-the-list.example/v1";

/// Hosts by index: 0 none, 1 the attacker, 2 the provider, 3..=5 internal, 6 an off-list name,
/// 7 an Azure resource.
fn node(depth: u32) -> BoxedStrategy<Value> {
    let leaf = (0usize..8, 0usize..3, 0usize..3, any::<bool>()).prop_map(|(host, key, vk, oc)| {
        let mut n = serde_json::Map::new();
        n.insert("host".into(), json!(host));
        n.insert("key".into(), json!(key));
        n.insert("vk".into(), json!(vk));
        n.insert("openai_compatible".into(), json!(oc));
        Value::Object(n)
    });
    if depth == 0 {
        return leaf.boxed();
    }
    (
        leaf,
        prop::collection::vec(node(depth - 1), 0..3),
        any::<bool>(),
    )
        .prop_map(|(mut n, children, lb)| {
            if !children.is_empty() {
                n["children"] = json!(children);
                n["loadbalance"] = json!(lb);
            }
            n
        })
        .boxed()
}

struct Names<'a> {
    attacker: &'a str,
    provider: &'a str,
    acme_vk: &'a str,
    globex_vk: &'a str,
}

/// The generated shape as a Portkey config; whether it names a host no rule allows.
fn render(shape: &Value, names: &Names<'_>, forbidden: &mut bool) -> Value {
    let mut out = serde_json::Map::new();
    match shape["host"].as_u64().unwrap_or(0) {
        0 => {}
        1 => drop(out.insert("custom_host".into(), json!(names.attacker))),
        2 => drop(out.insert("custom_host".into(), json!(names.provider))),
        6 => {
            *forbidden = true;
            out.insert("custom_host".into(), json!(OFF_LIST));
        }
        7 => {
            *forbidden = true;
            out.insert("provider".into(), json!("azure-openai"));
            out.insert("resource_name".into(), json!("attacker"));
            out.insert("deployment_id".into(), json!("gpt-4o"));
        }
        i => {
            *forbidden = true;
            out.insert("custom_host".into(), json!(INTERNAL[(i as usize - 3) % 3]));
        }
    }
    if shape["openai_compatible"] == true && out.contains_key("custom_host") {
        out.insert("provider".into(), json!("openai-compatible"));
    }
    match shape["key"].as_u64() {
        Some(1) => drop(out.insert("api_key".into(), json!("sk-callers-own-key"))),
        Some(2) => drop(out.insert("api_key".into(), json!("sk-another-own-key"))),
        _ => {}
    }
    match shape["vk"].as_u64() {
        Some(1) => drop(out.insert("virtual_key".into(), json!(names.acme_vk))),
        Some(2) => drop(out.insert("virtual_key".into(), json!(names.globex_vk))),
        _ => {}
    }
    if let Some(children) = shape["children"].as_array() {
        let mode = if shape["loadbalance"] == true {
            "loadbalance"
        } else {
            "fallback"
        };
        out.insert("strategy".into(), json!({"mode": mode}));
        let rendered: Vec<Value> = children
            .iter()
            .map(|c| render(c, names, forbidden))
            .collect();
        out.insert("targets".into(), json!(rendered));
    }
    Value::Object(out)
}

#[test]
fn any_caller_config_resolves_within_the_rules_or_is_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = runtime.block_on(scene("[security]\nallowed_hosts = [\"ATTACKER\"]\n"));
    let (acme_vk, globex_vk) = runtime.block_on(async {
        (
            s.virtual_key(&s.acme.admin, ACME_SECRET, json!({})).await,
            s.virtual_key(&s.globex.admin, GLOBEX_SECRET, json!({}))
                .await,
        )
    });
    let names = Names {
        attacker: &s.attacker.url,
        provider: &s.provider.url,
        acme_vk: &acme_vk,
        globex_vk: &globex_vk,
    };
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let shapes = (node(2), 0usize..3);
    runner
        .run(&shapes, |(shape, header_vk)| {
            let mut forbidden = false;
            let mut config = render(&shape, &names, &mut forbidden);
            config["retry"] = json!({"attempts": 0});
            let before = (s.attacker.calls(), s.provider.calls());
            let config_text = config.to_string();
            let mut headers = vec![("x-portkey-config", config_text.as_str())];
            match header_vk {
                1 => headers.push(("x-portkey-virtual-key", acme_vk.as_str())),
                2 => headers.push(("x-portkey-virtual-key", globex_vk.as_str())),
                _ => {}
            }
            let r = runtime.block_on(s.ask_as(&s.acme.inference, &headers, "property"));
            prop_assert!(
                [200, 400, 502].contains(&r.status),
                "{} {}",
                r.status,
                r.body
            );
            if forbidden {
                prop_assert_eq!(
                    r.status,
                    400,
                    "a host no rule allows was not refused: {}",
                    config
                );
            }
            if r.status == 400 {
                prop_assert_eq!((s.attacker.calls(), s.provider.calls()), before);
            }
            let seen = s.attacker_saw();
            for secret in [OPERATOR_KEY, ACME_SECRET, GLOBEX_SECRET] {
                prop_assert!(
                    !seen.contains(secret),
                    "{} reached the attacker via {}",
                    secret,
                    config
                );
            }
            let provider_saw: String = s
                .provider
                .received()
                .iter()
                .map(|r| format!("{:?}", r.headers))
                .collect();
            prop_assert!(
                !provider_saw.contains(GLOBEX_SECRET),
                "another tenant's key was used"
            );
            Ok(())
        })
        .unwrap();
}
