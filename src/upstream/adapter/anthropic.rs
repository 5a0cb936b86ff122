//! Anthropic's Messages API behind deja's OpenAI-shaped chat completions: the request is
//! translated to `/v1/messages` (system prompt, roles, `max_tokens`, stop sequences, sampling,
//! tools), the answer back to a `chat.completion` (content, tool calls, `finish_reason`,
//! `usage`), errors to OpenAI's `{"error": {...}}`, and a stream event by event
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`) into OpenAI chunks.
//! Written from Anthropic's public API reference.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::stream::sse::{Event, SseParser};

/// The API version deja speaks (sent as `anthropic-version`).
pub const VERSION: &str = "2023-06-01";

/// `max_tokens` is required by Anthropic; used when the request sets none.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Longest event line looked at in a stream.
const MAX_LINE: usize = 1 << 20;

/// The Messages request for an OpenAI chat completion body; `None` when the body is not one
/// (the caller then gets the provider's own 400).
pub fn request(body: &[u8]) -> Option<Bytes> {
    let chat: Value = serde_json::from_slice(body).ok()?;
    let chat = chat.as_object()?;
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for message in chat.get("messages")?.as_array()? {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let text = text_of(message.get("content"));
        match role {
            "system" | "developer" => system.push(text),
            "assistant" => messages.push(assistant_turn(message, text)),
            "tool" => messages.push(json!({"role": "user", "content": [{
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
                "content": text,
            }]})),
            _ => messages.push(json!({"role": "user", "content": text})),
        }
    }
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|k| chat.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut out = Map::new();
    out.insert("model".into(), chat.get("model")?.clone());
    out.insert("max_tokens".into(), max_tokens.into());
    out.insert("messages".into(), messages.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    for key in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = chat.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "description": f.get("description").cloned().unwrap_or(Value::Null),
                    "input_schema": f.get("parameters").cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                })
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    if let Some(choice) = chat.get("tool_choice").and_then(tool_choice) {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Some(Bytes::from(Value::Object(out).to_string()))
}

/// A message's text: a string, or the text parts of a content array.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn assistant_turn(message: &Value, text: String) -> Value {
    let calls = message.get("tool_calls").and_then(Value::as_array);
    let Some(calls) = calls.filter(|c| !c.is_empty()) else {
        return json!({"role": "assistant", "content": text});
    };
    let mut blocks = Vec::new();
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in calls {
        let function = call.get("function").cloned().unwrap_or(Value::Null);
        let input = function
            .get("arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": function.get("name").cloned().unwrap_or(Value::Null),
            "input": input,
        }));
    }
    json!({"role": "assistant", "content": blocks})
}

fn tool_choice(choice: &Value) -> Option<Value> {
    Some(match choice {
        Value::String(s) if s == "auto" => json!({"type": "auto"}),
        Value::String(s) if s == "required" => json!({"type": "any"}),
        Value::String(s) if s == "none" => json!({"type": "none"}),
        Value::Object(_) => json!({"type": "tool", "name": choice.pointer("/function/name")?}),
        _ => return None,
    })
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop: Option<&str>) -> Value {
    match stop {
        Some("max_tokens") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        Some(_) => "stop".into(),
        None => Value::Null,
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

fn now_s() -> i64 {
    crate::clock::now_ms() / 1000
}

/// A `chat.completion` for a Messages answer (2xx), or an OpenAI-shaped error for an error
/// answer. A body that is neither is passed on unchanged.
pub fn answer(success: bool, body: &Bytes) -> Bytes {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let translated = if success {
        completion(&message)
    } else {
        error(&message)
    };
    translated.map_or_else(|| body.clone(), |v| Bytes::from(v.to_string()))
}

fn completion(message: &Value) -> Option<Value> {
    let blocks = message.get("content")?.as_array()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str)?),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id"),
                "type": "function",
                "function": {
                    "name": block.get("name"),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        reply["tool_calls"] = calls.into();
        if text.is_empty() {
            reply["content"] = Value::Null;
        }
    }
    let count = |k: &str| {
        message
            .pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
    };
    Some(json!({
        "id": message.get("id"),
        "object": "chat.completion",
        "created": now_s(),
        "model": message.get("model"),
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage(count("input_tokens").unwrap_or(0), count("output_tokens").unwrap_or(0)),
    }))
}

fn error(body: &Value) -> Option<Value> {
    let error = body.get("error")?;
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    Some(json!({"error": {
        "message": error.get("message").and_then(Value::as_str).unwrap_or(kind),
        "type": kind,
        "param": null,
        "code": kind,
    }}))
}

/// Translates a Messages event stream into OpenAI chunks as its bytes arrive.
pub struct StreamTranslator {
    parser: SseParser,
    events: Vec<Event>,
    id: Value,
    model: Value,
    created: i64,
    input_tokens: u64,
    /// Index among tool calls of each content block that is one.
    tool_blocks: Vec<(u64, usize)>,
}

impl Default for StreamTranslator {
    fn default() -> Self {
        Self {
            parser: SseParser::new(MAX_LINE),
            events: Vec::new(),
            id: Value::Null,
            model: Value::Null,
            created: now_s(),
            input_tokens: 0,
            tool_blocks: Vec::new(),
        }
    }
}

impl StreamTranslator {
    /// The OpenAI chunks (`data: ...` lines) for the events this chunk completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.parser.feed(chunk, &mut self.events);
        let mut out = String::new();
        for event in std::mem::take(&mut self.events) {
            let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
            for line in self.translate(kind, &data) {
                out.push_str("data: ");
                out.push_str(&line);
                out.push_str("\n\n");
            }
        }
        Bytes::from(out)
    }

    fn chunk(&self, delta: Value, finish: Value) -> String {
        self.chunk_value(delta, finish).to_string()
    }

    fn chunk_value(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn translate(&mut self, kind: &str, data: &Value) -> Vec<String> {
        match kind {
            "message_start" => {
                let message = data.get("message").cloned().unwrap_or(Value::Null);
                self.id = message.get("id").cloned().unwrap_or(Value::Null);
                self.model = message.get("model").cloned().unwrap_or(Value::Null);
                self.input_tokens = message
                    .pointer("/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            "content_block_start" => {
                let block = data.get("content_block").cloned().unwrap_or(Value::Null);
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Vec::new();
                }
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call = self.tool_blocks.len();
                self.tool_blocks.push((index, call));
                let delta = json!({"tool_calls": [{
                    "index": call, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }]});
                vec![self.chunk(delta, Value::Null)]
            }
            "content_block_delta" => self.block_delta(data).into_iter().collect(),
            "message_delta" => {
                let stop = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                let output = data
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let mut chunk = self.chunk_value(json!({}), finish_reason(stop));
                chunk["usage"] = usage(self.input_tokens, output);
                vec![chunk.to_string()]
            }
            "message_stop" => vec!["[DONE]".to_owned()],
            "error" => error(data).map(|e| e.to_string()).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn block_delta(&self, data: &Value) -> Option<String> {
        let delta = data.get("delta")?;
        match delta.get("type").and_then(Value::as_str)? {
            "text_delta" => Some(self.chunk(json!({"content": delta.get("text")?}), Value::Null)),
            "input_json_delta" => {
                let index = data.get("index").and_then(Value::as_u64)?;
                let call = self.tool_blocks.iter().find(|(b, _)| *b == index)?.1;
                let delta = json!({"tool_calls": [{
                    "index": call, "function": {"arguments": delta.get("partial_json")?},
                }]});
                Some(self.chunk(delta, Value::Null))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
