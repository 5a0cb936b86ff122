use serde_json::{Value, json};

use super::*;

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let chat = json!({
        "model": "claude-3-5-haiku-latest",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "max_tokens": 300, "stop": "END", "temperature": 0.2, "top_p": 0.9, "stream": true,
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required", "user": "u-1", "presence_penalty": 0.5,
    });
    let out = parsed(&request(chat.to_string().as_bytes()).unwrap());
    assert_eq!(out["system"], "Be brief.\n\nAnswer in English.");
    assert_eq!(out["max_tokens"], 300);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(
        (out["temperature"].clone(), out["top_p"].clone()),
        (json!(0.2), json!(0.9))
    );
    assert_eq!(out["stream"], true);
    assert_eq!(
        out["messages"][0],
        json!({"role": "user", "content": "Weather?"})
    );
    assert_eq!(
        out["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        out["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"})
    );
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    assert_eq!(out["metadata"]["user_id"], "u-1");
    assert!(
        out.get("presence_penalty").is_none(),
        "Anthropic has no such field"
    );
}

#[test]
fn max_tokens_is_always_sent() {
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let out = parsed(&request(chat.to_string().as_bytes()).unwrap());
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(out.get("system").is_none());
    assert!(request(b"not json").is_none());
}

#[test]
fn a_messages_answer_becomes_a_chat_completion() {
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Paris is "}, {"type": "text", "text": "sunny."}],
        "stop_reason": "max_tokens", "usage": {"input_tokens": 12, "output_tokens": 5},
    });
    let out = parsed(&answer(true, &Bytes::from(message.to_string())));
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "msg_1");
    assert_eq!(out["choices"][0]["message"]["content"], "Paris is sunny.");
    assert_eq!(out["choices"][0]["finish_reason"], "length");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
    );
}

#[test]
fn a_tool_use_answer_becomes_tool_calls() {
    let message = json!({
        "id": "msg_2", "model": "claude-x", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    });
    let out = parsed(&answer(true, &Bytes::from(message.to_string())));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        parsed(call["function"]["arguments"].as_str().unwrap().as_bytes()),
        json!({"city": "Oslo"})
    );
}

#[test]
fn errors_come_back_in_openai_shape() {
    let body =
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
    let out = parsed(&answer(false, &Bytes::from(body.to_string())));
    assert_eq!(out["error"]["message"], "slow down");
    assert_eq!(out["error"]["type"], "rate_limit_error");
    assert_eq!(
        answer(false, &Bytes::from_static(b"<html>")),
        Bytes::from_static(b"<html>")
    );
}

#[test]
fn a_stream_is_translated_event_by_event_whatever_the_chunking() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_s", "model": "claude-x", "usage": {"input_tokens": 9}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        json!({"type": "message_stop"}),
    ];
    let wire: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    for split in [1, 7, 64, wire.len()] {
        let mut translator = StreamTranslator::default();
        let out: String = wire
            .as_bytes()
            .chunks(split)
            .map(|c| String::from_utf8(translator.feed(c).to_vec()).unwrap())
            .collect();
        let data: Vec<&str> = out
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "split {split}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| parsed(d.as_bytes()))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello", "split {split}");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["usage"]["total_tokens"], 11);
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == "msg_s" && c["object"] == "chat.completion.chunk")
        );
    }
}

#[test]
fn streamed_tool_calls_keep_their_index() {
    let events = [
        json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
    ];
    let wire: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    let out = StreamTranslator::default().feed(wire.as_bytes());
    let chunks: Vec<Value> = String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(|d| parsed(d.as_bytes())))
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0])
        .collect();
    assert_eq!(calls[1]["id"], "toolu_9");
    assert_eq!(calls[1]["index"], 0);
    let args: String = calls[2..]
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"a\":1}");
}
