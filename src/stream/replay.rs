//! Replays a stored `chat.completion` as the OpenAI event stream a provider would have sent: per
//! choice a role delta, reasoning and content deltas in pieces, tool-call deltas, a final chunk
//! with `finish_reason`; then `usage` when asked for; then `[DONE]`.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// How a replay is cut.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Most characters per content delta; 0 sends each text in one delta.
    pub chunk_chars: usize,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

/// The events of `completion` in order, each one `data: ...\n\n`; `None` when the bytes are not a
/// chat completion (the caller then treats the entry as a miss).
pub fn replay(completion: &[u8], options: ReplayOptions) -> Option<Vec<Bytes>> {
    let completion: Value = serde_json::from_slice(completion).ok()?;
    let completion = completion.as_object()?;
    let choices = completion.get("choices")?.as_array()?;
    let mut head = Map::new();
    for field in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(value) = completion.get(field) {
            head.insert(field.to_owned(), value.clone());
        }
    }
    head.insert("object".to_owned(), json!("chat.completion.chunk"));
    if options.include_usage {
        // As OpenAI does: `usage: null` on every chunk but the last.
        head.insert("usage".to_owned(), Value::Null);
    }
    let mut out = Vec::new();
    let mut emit = |choice: Value| {
        let mut chunk = head.clone();
        chunk.insert("choices".to_owned(), Value::Array(vec![choice]));
        out.push(event(&Value::Object(chunk)));
    };
    for (position, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(position));
        let message = choice.get("message").and_then(Value::as_object)?;
        let delta = |delta: Value| json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null});
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        // Tool-call answers open with `content: null`, text answers with "".
        let opening = match message.get("content") {
            Some(Value::Null) => Value::Null,
            _ => json!(""),
        };
        emit(delta(json!({"role": role, "content": opening})));
        for field in ["reasoning_content", "content", "refusal"] {
            if let Some(text) = message.get(field).and_then(Value::as_str) {
                for piece in pieces(text, options.chunk_chars) {
                    emit(delta(json!({ field: piece })));
                }
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for (k, call) in calls.iter().enumerate() {
                let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
                emit(delta(json!({"tool_calls": [{
                    "index": k, "id": call.get("id"), "type": call.get("type"),
                    "function": {"name": name, "arguments": ""}}]})));
                let arguments = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                for piece in pieces(arguments, options.chunk_chars) {
                    emit(delta(
                        json!({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}),
                    ));
                }
            }
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        emit(
            json!({"index": index, "delta": {}, "logprobs": choice.get("logprobs"), "finish_reason": finish}),
        );
    }
    if options.include_usage
        && let Some(usage) = completion.get("usage")
    {
        let mut chunk = head;
        chunk.insert("choices".to_owned(), json!([]));
        chunk.insert("usage".to_owned(), usage.clone());
        out.push(event(&Value::Object(chunk)));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Some(out)
}

fn event(chunk: &Value) -> Bytes {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"data: ");
    // Serialising a Value cannot fail.
    let _ = serde_json::to_writer(&mut line, chunk);
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

/// Cuts `text` into pieces of at most `max` characters, each ending after a space where one falls
/// in the back half of the window, so English comes out a word or two at a time and Chinese a few
/// characters at a time.
pub fn pieces(text: &str, max: usize) -> Vec<&str> {
    if max == 0 || text.is_empty() {
        return if text.is_empty() { vec![] } else { vec![text] };
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let window_end = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let mut cut = window_end;
        if window_end < rest.len() {
            let half = rest.char_indices().nth(max / 2).map_or(0, |(i, _)| i);
            if let Some(space) = rest[..window_end].rfind(char::is_whitespace)
                && space >= half
            {
                cut = space + rest[space..].chars().next().map_or(1, char::len_utf8);
            }
        }
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests;
