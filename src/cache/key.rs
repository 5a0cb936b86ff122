//! Cache keys. The *partition* hashes everything that shapes an answer except the final user
//! turn: namespace, route, model, every generation parameter, the system prompt and all earlier
//! messages. The *exact key* adds the final turn. JSON is canonicalised first (sorted keys, one
//! spelling per number), so field order and whitespace never change a key.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Body fields that never change the answer's content; everything else is part of the partition,
/// so an unknown new parameter can only split the cache, never mix answers.
const NOT_ANSWER_SHAPING: &[&str] = &[
    "messages",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
];

/// Keys for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeys {
    /// Hex sha256 of everything but the final turn; semantic hits never cross it.
    pub partition: String,
    /// Hex sha256 of the partition and the final turn.
    pub exact: String,
    /// Text of the final turn when it is a user message made only of text; what the semantic
    /// tier embeds. `None` (tool results, images, assistant prefill) keeps the request exact-only.
    pub final_user_text: Option<String>,
}

/// Computes the keys of a validated chat body (an object with a non-empty `messages` array).
pub fn cache_keys(namespace: &str, route: &str, body: &Value) -> Option<CacheKeys> {
    let object = body.as_object()?;
    let messages = object.get("messages")?.as_array()?;
    let (last, earlier) = messages.split_last()?;
    let params: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| !NOT_ANSWER_SHAPING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut partition = Sha256::new();
    for field in [namespace, route] {
        feed(&mut partition, field.as_bytes());
    }
    feed(&mut partition, canonical(&Value::Object(params)).as_bytes());
    feed(
        &mut partition,
        canonical(&Value::Array(earlier.to_vec())).as_bytes(),
    );
    let partition = hex(&partition.finalize());

    let mut exact = Sha256::new();
    feed(&mut exact, partition.as_bytes());
    feed(&mut exact, canonical(last).as_bytes());
    Some(CacheKeys {
        exact: hex(&exact.finalize()),
        partition,
        final_user_text: user_text(last),
    })
}

/// Length-prefixed, so `("ab","c")` and `("a","bc")` never hash alike.
pub(crate) fn feed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn user_text(message: &Value) -> Option<String> {
    let message = message.as_object()?;
    if message.get("role")?.as_str()? != "user" {
        return None;
    }
    match message.get("content")? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                let part = part.as_object()?;
                if part.get("type")?.as_str()? != "text" {
                    return None;
                }
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part.get("text")?.as_str()?);
            }
            Some(text)
        }
        _ => None,
    }
    .filter(|t| !t.trim().is_empty())
}

/// Canonical JSON text: object keys sorted, integral floats written as integers.
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_f64() {
            // 1, 1.0 and 1e0 are one temperature.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.push_str(&(f as i64).to_string());
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests;
