//! The incoming chat completion body: parsed once, checked for the fields deja relies on, and
//! kept whole (unknown fields included) for forwarding.

use bytes::Bytes;
use serde_json::Value;

use crate::error::AppError;

/// A chat completion request that passed validation.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body exactly as received; forwarded unchanged.
    pub raw: Bytes,
    /// The parsed body, for keys and routing.
    pub json: Value,
    /// `model` as sent.
    pub model: String,
    /// `stream: true` was asked for.
    pub stream: bool,
    /// `stream_options.include_usage: true` was asked for.
    pub include_usage: bool,
}

impl ChatRequest {
    /// The request with `model` in place of the one sent (a route's alias resolved).
    pub fn with_model(mut self, model: &str) -> Self {
        if let Some(object) = self.json.as_object_mut() {
            object.insert("model".to_owned(), Value::String(model.to_owned()));
            self.raw = Bytes::from(self.json.to_string());
            self.model = model.to_owned();
        }
        self
    }

    /// Parses and validates `raw`; errors name the field at fault.
    pub fn parse(raw: Bytes) -> Result<Self, AppError> {
        let json: Value =
            serde_json::from_slice(&raw).map_err(|e| AppError::InvalidJson(e.to_string()))?;
        let Some(object) = json.as_object() else {
            return Err(AppError::InvalidJson(
                "the body must be a JSON object".to_owned(),
            ));
        };
        match object.get("messages") {
            None | Some(Value::Null) => return Err(missing("messages")),
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(AppError::InvalidField {
                    param: "messages",
                    message: "'messages' must contain at least one message".to_owned(),
                });
            }
            Some(Value::Array(list)) => {
                if let Some(i) = list.iter().position(|m| !m.is_object()) {
                    return Err(AppError::InvalidField {
                        param: "messages",
                        message: format!("'messages[{i}]' must be an object"),
                    });
                }
            }
            Some(other) => return Err(wrong_type("messages", "an array", other)),
        }
        let model = match object.get("model") {
            None | Some(Value::Null) => return Err(missing("model")),
            Some(Value::String(m)) if m.is_empty() => return Err(missing("model")),
            Some(Value::String(m)) => m.clone(),
            Some(other) => return Err(wrong_type("model", "a string", other)),
        };
        let stream = match object.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(wrong_type("stream", "a boolean", other)),
        };
        let include_usage = json
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            raw,
            json,
            model,
            stream,
            include_usage,
        })
    }
}

fn missing(param: &'static str) -> AppError {
    AppError::InvalidField {
        param,
        message: format!("Missing required parameter: '{param}'"),
    }
}

fn wrong_type(param: &'static str, expected: &str, got: &Value) -> AppError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    AppError::InvalidField {
        param,
        message: format!("'{param}' must be {expected}, got {got}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChatRequest, AppError> {
        ChatRequest::parse(Bytes::from(s.to_owned()))
    }

    #[test]
    fn accepts_a_minimal_body_and_reads_stream() {
        let r = parse(
            r#"{"model":"yi-lightning","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        assert_eq!(r.model, "yi-lightning");
        assert!(r.stream);
    }

    #[test]
    fn names_the_field_at_fault() {
        let cases = [
            (r#"{"model":"m"}"#, "Missing required parameter: 'messages'"),
            (
                r#"{"model":"m","messages":"hi"}"#,
                "'messages' must be an array, got a string",
            ),
            (r#"{"model":"m","messages":[]}"#, "at least one message"),
            (
                r#"{"model":"m","messages":[1]}"#,
                "'messages[0]' must be an object",
            ),
            (
                r#"{"messages":[{}]}"#,
                "Missing required parameter: 'model'",
            ),
            (
                r#"{"model":7,"messages":[{}]}"#,
                "'model' must be a string, got a number",
            ),
            (
                r#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                "'stream' must be a boolean",
            ),
            (r#"[1,2]"#, "must be a JSON object"),
            (r#"{"model":"m","#, "could not parse the JSON"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
