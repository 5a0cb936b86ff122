//! The upstream stand-in: a small axum server on an ephemeral port that answers from a script
//! (statuses in order, `Retry-After`, delays, SSE), records what it received, and otherwise
//! answers a fixed chat completion.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, Uri};
use tokio::sync::Notify;

/// The fixed answer given when the script is empty.
pub const DEFAULT_ANSWER: &str = r#"{"id":"chatcmpl-standin","object":"chat.completion","created":1700000000,"model":"yi-lightning","choices":[{"index":0,"message":{"role":"assistant","content":"hello from the stand-in"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}"#;

/// The end of an OpenAI event stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// The id of every chat completion chunk [`chunk`] makes.
pub const CHUNK_ID: &str = "chatcmpl-standin";

/// An OpenAI `chat.completion.chunk` whose one choice carries `delta` (and ends with `finish`).
pub fn chunk(delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
    serde_json::json!({"id": CHUNK_ID, "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "yi-lightning", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// One server-sent event carrying `data`.
pub fn event(data: &serde_json::Value) -> String {
    format!("data: {data}\n\n")
}

/// [`DEFAULT_ANSWER`] with `content` as the assistant's text.
pub fn answer_body(content: &str) -> String {
    let mut answer: serde_json::Value = serde_json::from_str(DEFAULT_ANSWER).unwrap();
    answer["choices"][0]["message"]["content"] = content.into();
    answer.to_string()
}

/// One scripted answer.
#[derive(Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// When set, a 200 event stream of these chunks; a chunk may wait on `gate` first.
    pub sse: Option<Vec<String>>,
    /// Chunks after the first wait for this to be notified.
    pub gate: Option<Arc<Notify>>,
    /// After the chunks (or, for a plain answer, half its body), break the connection instead
    /// of ending the body.
    pub abort: bool,
    /// Answer 200 with `echo: <last message's content>`, so a test can tell whose answer it got.
    pub echo: bool,
    /// Between an event stream's chunks: a slow stream, as LLMs send them.
    pub chunk_every: Duration,
}

impl Reply {
    /// Anthropic's answer to a Messages request (as its API reference shows it) saying `text`.
    pub fn claude(text: &str) -> Self {
        let body = serde_json::json!({"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-3-5-haiku-latest", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 4}});
        Self {
            status: 200,
            body: body.to_string(),
            ..Self::default()
        }
    }

    /// Anthropic's event stream saying `parts`, one `content_block_delta` each.
    pub fn claude_stream(parts: &[&str]) -> Self {
        use serde_json::json;
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "msg_02", "type": "message",
                "role": "assistant", "model": "claude-3-5-haiku-latest", "content": [],
                "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        for part in parts {
            events.push(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": part}}));
        }
        events.extend([
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                "stop_sequence": null}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop"}),
        ]);
        let chunks: Vec<String> = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
            .collect();
        Self::sse(&chunks, None)
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: format!(
                r#"{{"error":{{"message":"stand-in says {status}","type":"upstream","code":{status}}}}}"#
            ),
            ..Self::default()
        }
    }

    pub fn ok() -> Self {
        Self {
            status: 200,
            body: DEFAULT_ANSWER.to_owned(),
            ..Self::default()
        }
    }

    /// A 200 chat completion whose answer is `content`.
    pub fn answer(content: &str) -> Self {
        Self {
            status: 200,
            body: answer_body(content),
            ..Self::default()
        }
    }

    pub fn echo() -> Self {
        Self {
            status: 200,
            echo: true,
            ..Self::default()
        }
    }

    /// A 200 `echo` answer whose connection breaks halfway through the body.
    pub fn echo_then_reset() -> Self {
        Self {
            abort: true,
            ..Self::echo()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// A 200 event stream of `chunks` (each sent as given: see [`event`] and [`DONE`]).
    pub fn sse<S: AsRef<str>>(chunks: &[S], gate: Option<Arc<Notify>>) -> Self {
        Self {
            status: 200,
            sse: Some(chunks.iter().map(|c| c.as_ref().to_owned()).collect()),
            gate,
            ..Self::default()
        }
    }

    /// Waits `every` before each chunk after the first.
    #[allow(dead_code, reason = "used by the benches")]
    pub fn paced(mut self, every: Duration) -> Self {
        self.chunk_every = every;
        self
    }

    /// An event stream of `chunks` whose connection breaks after the last.
    pub fn sse_then_reset<S: AsRef<str>>(chunks: &[S]) -> Self {
        Self {
            abort: true,
            ..Self::sse(chunks, None)
        }
    }
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    /// The answer once the script is used up (default: [`Reply::ok`]).
    fallback: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
    record: bool,
    /// Event streams dropped before their last chunk was sent: the client went away.
    streams_cancelled: AtomicUsize,
}

/// A running stand-in.
#[derive(Clone)]
pub struct Upstream {
    #[allow(dead_code, reason = "the forward bench dials the stand-in directly")]
    pub addr: SocketAddr,
    /// Base URL to put in `[upstream] base_url` (ends in `/v1`).
    pub url: String,
    inner: Arc<Inner>,
}

impl Upstream {
    /// Starts a recording stand-in.
    pub async fn spawn() -> Self {
        Self::start(true).await
    }

    /// Starts a stand-in that records nothing (for load).
    pub async fn spawn_quiet() -> Self {
        Self::start(false).await
    }

    async fn start(record: bool) -> Self {
        let inner = Arc::new(Inner {
            record,
            ..Inner::default()
        });
        let app = Router::new()
            .fallback(respond)
            .with_state(Arc::clone(&inner));
        // deja's own deep accept queue: the streams bench opens thousands of connections in
        // bursts, and a provider that drops handshakes would be measured, not deja.
        let listener = deja::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            url: format!("http://{addr}/v1"),
            inner,
        }
    }

    /// Queues answers, given in order to the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// The answer to every request once the script is used up.
    #[allow(dead_code, reason = "used by the benches")]
    pub fn answer_by_default(&self, reply: Reply) {
        *self.inner.fallback.lock().unwrap() = Some(reply);
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Event streams whose reader went away before their last chunk.
    pub fn streams_cancelled(&self) -> usize {
        self.inner.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Number of requests received so far.
    pub fn calls(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }
}

async fn respond(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let asked = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| {
            b["messages"].as_array()?.last()?["content"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if inner.record {
        inner.received.lock().unwrap().push(Received {
            method,
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            headers,
            body,
            at: Instant::now(),
        });
    }
    let reply = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.fallback.lock().unwrap().clone())
        .unwrap_or_else(Reply::ok);
    if !reply.delay.is_zero() {
        // A slow provider is what the script asked for.
        tokio::time::sleep(reply.delay).await;
    }
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(name, value);
    }
    if let Some(chunks) = reply.sse {
        let gate = reply.gate.clone();
        let watch = CancelWatch {
            inner: Arc::clone(&inner),
            finished: false,
        };
        let stream = async_stream(chunks, (gate, reply.chunk_every), reply.abort, watch);
        return builder
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let body = if reply.echo {
        answer_body(&format!("echo: {asked}"))
    } else {
        reply.body
    };
    let builder = builder.header("content-type", "application/json");
    if reply.abort {
        let half = Bytes::from(body[..body.len() / 2].to_owned());
        let broken = futures_util::stream::iter([
            Ok(half),
            Err(std::io::Error::other("stand-in breaks the connection")),
        ]);
        return builder.body(Body::from_stream(broken)).unwrap();
    }
    builder.body(Body::from(body)).unwrap()
}

/// Counts the stream as cancelled if it is dropped before it finished.
struct CancelWatch {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn async_stream(
    chunks: Vec<String>,
    (gate, every): (Option<Arc<Notify>>, Duration),
    abort: bool,
    watch: CancelWatch,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        (chunks.into_iter(), gate, true, watch),
        move |(mut chunks, gate, first, mut watch)| async move {
            let Some(chunk) = chunks.next() else {
                watch.finished = true;
                if !abort {
                    return None;
                }
                // Give what was sent time to leave before the connection breaks: nothing here
                // can see the client read it, and a reset sent at once may overtake it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let reset = std::io::Error::other("stand-in breaks the connection");
                return Some((Err(reset), (chunks, gate, false, watch)));
            };
            if let (false, Some(g)) = (first, &gate) {
                g.notified().await;
            }
            if !first && !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            Some((Ok(Bytes::from(chunk)), (chunks, gate, false, watch)))
        },
    )
}
