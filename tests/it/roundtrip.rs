//! Property: any valid chat body reaches the upstream byte for byte, unknown fields and all.

use crate::common;

use common::{Gateway, Upstream, client, config};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::btree_map("x_[a-z_]{1,10}", value(), 0..5),
        ".{1,40}",
        any::<bool>(),
    )
        .prop_map(|(extra, content, pretty)| {
            let mut object = Map::new();
            object.insert("model".into(), json!("yi-lightning"));
            object.insert(
                "messages".into(),
                json!([{"role": "user", "content": content}]),
            );
            object.extend(extra);
            let v = Value::Object(object);
            // Whitespace and key order are the caller's; the bytes must arrive as sent.
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        })
}

#[test]
fn unknown_fields_survive_forwarding_byte_for_byte() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, gw) = rt.block_on(async {
        let upstream = Upstream::spawn().await;
        let gw = Gateway::spawn(config(&upstream.url, "")).await;
        (upstream, gw)
    });
    let c = client();
    proptest!(ProptestConfig::with_cases(64), |(sent in body())| {
        let before = upstream.calls();
        let status = rt.block_on(async {
            c.post(format!("{}/v1/chat/completions", gw.url)).body(sent.clone()).send().await.unwrap().status()
        });
        prop_assert_eq!(status, 200);
        let got = upstream.received();
        prop_assert_eq!(got.len(), before + 1);
        prop_assert_eq!(&got[before].body[..], &sent[..]);
    });
}
