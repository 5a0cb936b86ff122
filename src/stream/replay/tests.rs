use super::*;
use crate::stream::assemble::Assembler;
use crate::stream::sse::SseParser;

const OPTIONS: ReplayOptions = ReplayOptions {
    chunk_chars: 8,
    include_usage: true,
};

fn round_trip(completion: &Value, options: ReplayOptions) -> Value {
    let events = replay(completion.to_string().as_bytes(), options).unwrap();
    let mut parser = SseParser::new(1 << 20);
    let mut assembler = Assembler::new(1 << 20);
    let mut parsed = Vec::new();
    for bytes in &events {
        parser.feed(bytes, &mut parsed);
    }
    for event in &parsed {
        assembler.push(event);
    }
    assembler.finish().unwrap()
}

#[test]
fn a_replayed_completion_assembles_back_to_itself() {
    let completions = [
        json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "yi",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you today? 你好，世界！"},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        json!({"id": "c2", "object": "chat.completion", "created": 8, "model": "yi",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "one", "reasoning_content": "because"},
                 "logprobs": null, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"上海\"}"}}]},
                 "logprobs": null, "finish_reason": "tool_calls"}]}),
        json!({"id": "c3", "object": "chat.completion", "created": 9, "model": "yi",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                         "logprobs": null, "finish_reason": "length"}]}),
    ];
    for completion in completions {
        for chunk_chars in [0, 1, 8, 1000] {
            let options = ReplayOptions {
                chunk_chars,
                ..OPTIONS
            };
            assert_eq!(
                round_trip(&completion, options),
                completion,
                "chunk_chars {chunk_chars}"
            );
        }
    }
}

#[test]
fn framing_follows_openai() {
    let completion = json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "yi",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi you"}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 5}});
    let events = replay(completion.to_string().as_bytes(), OPTIONS).unwrap();
    let texts: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(e.to_vec()).unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .all(|t| t.starts_with("data: ") && t.ends_with("\n\n"))
    );
    assert_eq!(texts.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = texts[..texts.len() - 1]
        .iter()
        .map(|t| serde_json::from_str(&t[6..]).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "c1")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["usage"], Value::Null);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 5);

    let plain = ReplayOptions {
        include_usage: false,
        ..OPTIONS
    };
    let events = replay(completion.to_string().as_bytes(), plain).unwrap();
    assert!(
        events
            .iter()
            .all(|e| !String::from_utf8_lossy(e).contains("usage"))
    );
}

#[test]
fn pieces_cut_at_words_and_never_inside_a_character() {
    assert_eq!(
        pieces("Hello there, friend", 8),
        vec!["Hello ", "there, ", "friend"]
    );
    assert_eq!(
        pieces("你好世界你好世界你好", 4),
        vec!["你好世界", "你好世界", "你好"]
    );
    assert_eq!(pieces("abc", 0), vec!["abc"]);
    assert!(pieces("", 8).is_empty());
    assert_eq!(pieces("abcdefghij", 3).concat(), "abcdefghij");
}

#[test]
fn bytes_that_are_not_a_completion_are_not_replayed() {
    for bad in [&b"nope"[..], b"{}", br#"{"choices":[{"index":0}]}"#] {
        assert!(replay(bad, OPTIONS).is_none());
    }
}
