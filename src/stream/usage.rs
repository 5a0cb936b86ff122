//! Watches an event stream on its way to the client for the chunk that carries `usage` (the
//! last one, when the provider sends it or the client asked for `stream_options.include_usage`)
//! and reports it once the stream is over, finished or dropped because the client hung up, so a
//! streamed request is logged with its tokens like a plain one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::record::ByteStream;
use super::sse::{Event, SseParser};

/// Longest event line looked at; past it the stream is passed on unwatched.
const MAX_LINE: usize = 1 << 20;

/// Receives the `data` of the last event whose `usage` was an object, if any.
pub type OnEnd = Box<dyn FnOnce(Option<Bytes>) + Send>;

/// The stream, passed on unchanged, and what it has seen.
pub struct UsageTap {
    inner: ByteStream,
    parser: SseParser,
    events: Vec<Event>,
    usage: Option<Bytes>,
    on_end: Option<OnEnd>,
}

impl UsageTap {
    /// Wraps `inner`; `on_end` runs exactly once, when the tap is dropped.
    pub fn new(inner: ByteStream, on_end: OnEnd) -> Self {
        Self {
            inner,
            parser: SseParser::new(MAX_LINE),
            events: Vec::new(),
            usage: None,
            on_end: Some(on_end),
        }
    }

    fn look_at(&mut self, chunk: &[u8]) {
        self.parser.feed(chunk, &mut self.events);
        for event in self.events.drain(..) {
            // Most chunks carry no usage (or `"usage": null`): skip the parse for them.
            if !event.data.contains("\"usage\"") {
                continue;
            }
            let has_usage = serde_json::from_str::<serde_json::Value>(&event.data)
                .is_ok_and(|v| v.get("usage").is_some_and(serde_json::Value::is_object));
            if has_usage {
                self.usage = Some(Bytes::from(event.data));
            }
        }
    }
}

impl Stream for UsageTap {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let chunk = chunk.clone();
            self.look_at(&chunk);
        }
        polled
    }
}

impl Drop for UsageTap {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.usage.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn tapped(chunks: &[&'static str]) -> (UsageTap, Arc<Mutex<Option<Option<Bytes>>>>) {
        let seen = Arc::new(Mutex::new(None));
        let report = Arc::clone(&seen);
        let inner = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .collect::<Vec<_>>(),
        )
        .boxed();
        let tap = UsageTap::new(
            inner,
            Box::new(move |usage| *report.lock().unwrap() = Some(usage)),
        );
        (tap, seen)
    }

    #[tokio::test]
    async fn the_last_usage_object_is_reported_when_the_stream_ends() {
        let (tap, seen) = tapped(&[
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"us",
            "age\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        ]);
        let passed: Vec<Bytes> = tap.map(Result::unwrap).collect().await;
        assert_eq!(passed.len(), 4, "every chunk passes unchanged");
        let usage = seen.lock().unwrap().clone().expect("reported on drop");
        let usage: serde_json::Value = serde_json::from_slice(&usage.unwrap()).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 5);
    }

    #[tokio::test]
    async fn a_stream_without_usage_or_cut_short_reports_none() {
        let (mut tap, seen) = tapped(&[
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"usage\":{\"total_tokens\":9}}\n\n",
        ]);
        assert!(tap.next().await.is_some());
        drop(tap);
        assert_eq!(
            *seen.lock().unwrap(),
            Some(None),
            "the client hung up first"
        );
    }
}
