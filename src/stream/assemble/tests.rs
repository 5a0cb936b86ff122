use super::*;

fn assemble(events: &[&str]) -> (Progress, Option<Value>) {
    let mut assembler = Assembler::new(1 << 20);
    let mut progress = Progress::Open;
    for data in events {
        progress = assembler.push(&Event {
            event: None,
            data: (*data).to_owned(),
        });
    }
    (progress, assembler.finish())
}

const ROLE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"yi","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
const HELLO: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"yi","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
const LO: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"yi","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#;
const STOP: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"yi","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;

#[test]
fn a_clean_stream_becomes_one_completion() {
    let usage = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"yi","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let (progress, completion) = assemble(&[ROLE, HELLO, LO, STOP, usage, "[DONE]"]);
    assert_eq!(progress, Progress::Done);
    assert_eq!(
        completion.unwrap(),
        json!({
            "id": "c1", "object": "chat.completion", "created": 7, "model": "yi",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        })
    );
}

#[test]
fn tool_calls_and_reasoning_are_rebuilt() {
    let events = [
        r#"{"id":"c2","created":1,"model":"yi","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think "}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{"reasoning_content":"hard"}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"北京\"}"}}]}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ];
    let completion = assemble(&events).1.unwrap();
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "think hard");
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"北京"}"#
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn streams_that_did_not_end_cleanly_are_not_stored() {
    let two_choices_one_open = r#"{"id":"c1","choices":[{"index":1,"delta":{"content":"x"}}]}"#;
    let cases: [(&str, &[&str], Progress); 6] = [
        ("no [DONE]", &[ROLE, HELLO, STOP], Progress::Open),
        ("no finish_reason", &[ROLE, HELLO, "[DONE]"], Progress::Done),
        (
            "one choice unfinished",
            &[ROLE, two_choices_one_open, STOP, "[DONE]"],
            Progress::Done,
        ),
        (
            "error event",
            &[
                ROLE,
                r#"{"error":{"message":"overloaded"}}"#,
                STOP,
                "[DONE]",
            ],
            Progress::Unstorable("error_event"),
        ),
        (
            "unknown delta",
            &[
                ROLE,
                r#"{"choices":[{"index":0,"delta":{"audio":{"data":"..."}}}]}"#,
                STOP,
                "[DONE]",
            ],
            Progress::Unstorable("unsupported_delta"),
        ),
        (
            "not JSON",
            &[ROLE, "{oops", STOP, "[DONE]"],
            Progress::Unstorable("malformed"),
        ),
    ];
    for (name, events, progress) in cases {
        let (got, completion) = assemble(events);
        assert_eq!(got, progress, "{name}");
        assert!(completion.is_none(), "{name}");
    }
}

#[test]
fn an_event_named_error_or_an_oversized_stream_is_unstorable() {
    let mut assembler = Assembler::new(1 << 20);
    let error = Event {
        event: Some("error".to_owned()),
        data: "{}".to_owned(),
    };
    assert_eq!(assembler.push(&error), Progress::Unstorable("error_event"));

    let mut small = Assembler::new(100);
    for _ in 0..3 {
        small.push(&Event {
            event: None,
            data: HELLO.to_owned(),
        });
    }
    assert_eq!(small.state, Progress::Unstorable("too_large"));
}
