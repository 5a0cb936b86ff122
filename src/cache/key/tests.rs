use proptest::prelude::*;
use serde_json::json;

use super::*;

fn keys(body: Value) -> CacheKeys {
    cache_keys("ns", "default", &body).unwrap()
}

fn base() -> Value {
    json!({
        "model": "yi-lightning",
        "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is an AI gateway?"}
        ]
    })
}

#[test]
fn field_order_whitespace_and_number_spelling_do_not_matter() {
    let a = keys(base());
    let reordered: Value = serde_json::from_str(
        r#"{ "messages" : [ {"content":"You are terse.","role":"system"},
             {"content":"What is an AI gateway?","role":"user"} ],
             "temperature":0.30, "model":"yi-lightning" }"#,
    )
    .unwrap();
    assert_eq!(a, keys(reordered));
    let mut one = base();
    one["temperature"] = json!(1);
    let mut one_float = base();
    one_float["temperature"] = json!(1.0);
    assert_eq!(keys(one), keys(one_float));
}

#[test]
fn stream_user_and_metadata_do_not_split_the_cache() {
    let a = keys(base());
    let mut b = base();
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    b["user"] = json!("u-42");
    b["metadata"] = json!({"trace": "x"});
    assert_eq!(a, keys(b));
}

#[test]
fn everything_that_shapes_the_answer_changes_the_partition() {
    let a = keys(base());
    let mut variants = Vec::new();
    for (field, value) in [
        ("model", json!("yi-large")),
        ("temperature", json!(0.9)),
        ("max_tokens", json!(10)),
        ("seed", json!(7)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("x_unknown_param", json!(1)),
    ] {
        let mut b = base();
        b[field] = value;
        variants.push((field.to_owned(), b));
    }
    let mut system = base();
    system["messages"][0]["content"] = json!("You are verbose.");
    variants.push(("system prompt".into(), system));
    let mut history = base();
    history["messages"] = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is an AI gateway?"}
    ]);
    variants.push(("earlier turns".into(), history));
    for (what, body) in variants {
        let b = keys(body);
        assert_ne!(a.partition, b.partition, "{what} must change the partition");
        assert_ne!(a.exact, b.exact, "{what} must change the exact key");
    }
    let other_ns = cache_keys("other", "default", &base()).unwrap();
    assert_ne!(a.partition, other_ns.partition);
    let other_route = cache_keys("ns", "batch", &base()).unwrap();
    assert_ne!(a.partition, other_route.partition);
}

#[test]
fn the_final_turn_changes_only_the_exact_key() {
    let a = keys(base());
    let mut b = base();
    b["messages"][1]["content"] = json!("What does an AI gateway do?");
    let b = keys(b);
    assert_eq!(a.partition, b.partition);
    assert_ne!(a.exact, b.exact);
    assert_eq!(
        b.final_user_text.as_deref(),
        Some("What does an AI gateway do?")
    );
}

#[test]
fn only_plain_user_text_is_embedded() {
    let mut parts = base();
    parts["messages"][1]["content"] =
        json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
    assert_eq!(keys(parts).final_user_text.as_deref(), Some("a\nb"));
    let mut image = base();
    image["messages"][1]["content"] = json!([{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "x"}}]);
    assert_eq!(keys(image).final_user_text, None);
    let mut tool = base();
    tool["messages"][1] = json!({"role": "tool", "tool_call_id": "1", "content": "42"});
    assert_eq!(keys(tool).final_user_text, None);
    let mut blank = base();
    blank["messages"][1]["content"] = json!("  ");
    assert_eq!(keys(blank).final_user_text, None);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `value` with object keys in reverse order and random spacing.
fn scramble(value: &Value, spaces: &mut impl Iterator<Item = bool>) -> String {
    let pad = |s: &mut dyn Iterator<Item = bool>| if s.next().unwrap_or(false) { " " } else { "" };
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.reverse();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}{}:{}{}",
                        Value::String(k.clone()),
                        pad(spaces),
                        pad(spaces),
                        scramble(&map[k], spaces)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(|v| scramble(v, spaces)).collect();
            format!("[{}{}]", inner.join(", "), pad(spaces))
        }
        other => other.to_string(),
    }
}

proptest! {
    #[test]
    fn keys_ignore_field_order_and_whitespace(extra in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..5),
                                             question in "[a-z ?]{1,30}",
                                             spaces in prop::collection::vec(any::<bool>(), 64)) {
        let mut object: Map<String, Value> = extra.into_iter().collect();
        object.insert("model".into(), json!("yi-lightning"));
        object.insert("messages".into(), json!([{"role": "user", "content": question}]));
        let body = Value::Object(object);
        let text = scramble(&body, &mut spaces.into_iter().cycle());
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(keys(body), keys(reparsed));
    }

    #[test]
    fn canonical_text_parses_back_to_an_equal_value(v in json_value()) {
        let text = canonical(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(canonical(&back), text);
    }
}
