//! Builds one canonical `chat.completion` from the `chat.completion.chunk` events of a stream, so
//! a streamed answer can be stored like a plain one. Anything it cannot rebuild faithfully (an
//! error event, an unknown kind of delta, a choice left unfinished) makes the stream unstorable:
//! a cache must never replay less than the provider said.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::sse::Event;

/// Chunk fields copied once into the completion.
const HEAD_FIELDS: &[&str] = &[
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

/// Where the stream stands after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More events to come.
    Open,
    /// `data: [DONE]` arrived.
    Done,
    /// The stream can no longer be stored; the reason is a metric label.
    Unstorable(&'static str),
}

#[derive(Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    logprobs: Vec<Value>,
    finish_reason: Option<Value>,
}

/// Accumulates a stream's events.
pub struct Assembler {
    head: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
    bytes: usize,
    max_bytes: usize,
    state: Progress,
}

impl Assembler {
    /// An assembler that gives up once the text it holds passes `max_bytes` (the largest entry
    /// the cache stores).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            head: Map::new(),
            choices: BTreeMap::new(),
            usage: None,
            bytes: 0,
            max_bytes,
            state: Progress::Open,
        }
    }

    /// Takes one event; once the stream is done or unstorable, later events change nothing.
    pub fn push(&mut self, event: &Event) -> Progress {
        if self.state == Progress::Open {
            self.state = self.take(event).unwrap_or_else(Progress::Unstorable);
        }
        self.state
    }

    /// Gives up on storing, for a reason found outside the events (a broken connection).
    pub fn abandon(&mut self, reason: &'static str) {
        if self.state == Progress::Open {
            self.state = Progress::Unstorable(reason);
        }
    }

    fn take(&mut self, event: &Event) -> Result<Progress, &'static str> {
        if event.data.trim() == "[DONE]" {
            return Ok(Progress::Done);
        }
        if event.event.as_deref().is_some_and(|e| e == "error") {
            return Err("error_event");
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(|_| "malformed")?;
        let chunk = chunk.as_object().ok_or("malformed")?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err("error_event");
        }
        self.bytes += event.data.len();
        if self.bytes > self.max_bytes {
            return Err("too_large");
        }
        for field in HEAD_FIELDS {
            if let Some(value) = chunk.get(*field).filter(|v| !v.is_null()) {
                self.head.entry(*field).or_insert_with(|| value.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let choices = match chunk.get("choices") {
            None | Some(Value::Null) => return Ok(Progress::Open),
            Some(Value::Array(choices)) => choices,
            Some(_) => return Err("malformed"),
        };
        for choice in choices {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .ok_or("malformed")?;
            self.choices.entry(index).or_default().take(choice)?;
        }
        Ok(Progress::Open)
    }

    /// The completion, when `[DONE]` arrived and every choice has a `finish_reason`.
    pub fn finish(self) -> Option<Value> {
        let finished = self.state == Progress::Done
            && !self.choices.is_empty()
            && self.choices.values().all(|c| c.finish_reason.is_some());
        if !finished {
            return None;
        }
        let mut completion = self.head;
        completion.insert("object".to_owned(), json!("chat.completion"));
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, choice)| choice.into_value(index))
            .collect();
        completion.insert("choices".to_owned(), Value::Array(choices));
        if let Some(usage) = self.usage {
            completion.insert("usage".to_owned(), usage);
        }
        Some(Value::Object(completion))
    }
}

impl Choice {
    fn take(&mut self, choice: &Value) -> Result<(), &'static str> {
        if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
            for (field, value) in delta {
                if value.is_null() {
                    continue;
                }
                match field.as_str() {
                    "role" => self.role = value.as_str().map(str::to_owned),
                    "content" => append(&mut self.content, value)?,
                    "reasoning_content" => append(&mut self.reasoning, value)?,
                    "refusal" => append(&mut self.refusal, value)?,
                    "tool_calls" => self.take_tool_calls(value)?,
                    // Audio, legacy function_call, a provider's extension: not rebuilt, so the
                    // stream is not stored rather than stored without it.
                    _ => return Err("unsupported_delta"),
                }
            }
        }
        if let Some(content) = choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
        {
            self.logprobs.extend(content.iter().cloned());
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = Some(reason.clone());
        }
        Ok(())
    }

    fn take_tool_calls(&mut self, calls: &Value) -> Result<(), &'static str> {
        for call in calls.as_array().ok_or("malformed")? {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .ok_or("malformed")?;
            let slot = self.tool_calls.entry(index).or_default();
            if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                slot.id = Some(id.clone());
            }
            if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
                slot.kind = Some(kind.clone());
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                slot.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                slot.arguments.push_str(args);
            }
        }
        Ok(())
    }

    fn into_value(self, index: u64) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".to_owned(),
            json!(self.role.as_deref().unwrap_or("assistant")),
        );
        let content = match (self.content, self.tool_calls.is_empty()) {
            (Some(text), _) => Value::String(text),
            (None, false) => Value::Null,
            (None, true) => Value::String(String::new()),
        };
        message.insert("content".to_owned(), content);
        if let Some(reasoning) = self.reasoning {
            message.insert("reasoning_content".to_owned(), Value::String(reasoning));
        }
        if let Some(refusal) = self.refusal {
            message.insert("refusal".to_owned(), Value::String(refusal));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_values()
                .map(|call| {
                    json!({
                        "id": call.id.unwrap_or(Value::Null),
                        "type": call.kind.unwrap_or_else(|| json!("function")),
                        "function": {"name": call.name, "arguments": call.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        let logprobs = if self.logprobs.is_empty() {
            Value::Null
        } else {
            json!({ "content": self.logprobs })
        };
        json!({
            "index": index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish_reason,
        })
    }
}

fn append(slot: &mut Option<String>, value: &Value) -> Result<(), &'static str> {
    let text = value.as_str().ok_or("malformed")?;
    slot.get_or_insert_with(String::new).push_str(text);
    Ok(())
}

#[cfg(test)]
mod tests;
