//! Passes an upstream event stream to the client chunk by chunk while recording it. The recording
//! is handed on only when the stream ended cleanly; a broken or stalled upstream ends the client's
//! stream with an error event; a client that hangs up drops this stream, which drops the upstream
//! response and so closes its connection: the provider stops generating.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{Future, FutureExt};
use tokio::time::{Instant, Sleep};

use super::assemble::{Assembler, Progress};
use super::sse::{Event, SseParser};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;

/// Bytes of an event stream; errors are transport failures.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Called with the assembled `chat.completion` of a stream that ended cleanly; the client gets
/// `[DONE]` once the returned future is done, so its next request finds the entry stored (as
/// for a plain answer). The work itself must not depend on the future being polled to the end.
pub type OnComplete = Box<dyn FnOnce(Bytes) -> BoxFuture<'static, ()> + Send>;

struct Recording {
    parser: SseParser,
    assembler: Assembler,
    on_complete: OnComplete,
}

/// The client's side of an upstream stream.
pub struct Recorder {
    inner: ByteStream,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    recording: Option<Recording>,
    recorded: bool,
    /// Why the recording was dropped before the end, when it was.
    unstorable: Option<&'static str>,
    events: Vec<Event>,
    /// The write-back under way, and the chunk (holding `[DONE]`) sent once it is done.
    storing: Option<(BoxFuture<'static, ()>, Bytes)>,
    route: String,
    metrics: Arc<Metrics>,
    /// Set once the outcome is counted; nothing more is read after.
    outcome: Option<&'static str>,
}

impl Recorder {
    /// Wraps `inner`. `idle` bounds the wait for each next chunk; `record` (largest entry, and
    /// what to do with the result) turns recording on.
    pub fn new(
        inner: ByteStream,
        idle: Duration,
        record: Option<(usize, OnComplete)>,
        route: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            recorded: record.is_some(),
            recording: record.map(|(max_bytes, on_complete)| Recording {
                parser: SseParser::new(max_bytes),
                assembler: Assembler::new(max_bytes),
                on_complete,
            }),
            unstorable: None,
            events: Vec::new(),
            storing: None,
            route: route.to_owned(),
            metrics,
            outcome: None,
        }
    }

    /// Records a chunk; returns the write-back to finish before the chunk is passed on.
    fn record(&mut self, bytes: &[u8]) -> Option<BoxFuture<'static, ()>> {
        let recording = self.recording.as_mut()?;
        recording.parser.feed(bytes, &mut self.events);
        if recording.parser.overflowed() {
            recording.assembler.abandon("too_large");
        }
        let mut progress = Progress::Open;
        for event in self.events.drain(..) {
            progress = recording.assembler.push(&event);
            if progress != Progress::Open {
                break;
            }
        }
        self.events.clear();
        match progress {
            Progress::Open => None,
            Progress::Unstorable(reason) => {
                self.recording = None;
                self.unstorable = Some(reason);
                None
            }
            Progress::Done => {
                let recording = self.recording.take()?;
                match recording.assembler.finish() {
                    Some(completion) => {
                        Some((recording.on_complete)(Bytes::from(completion.to_string())))
                    }
                    None => {
                        self.unstorable = Some("unfinished");
                        None
                    }
                }
            }
        }
    }

    fn end(&mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
        self.recording = None;
        self.metrics.stream_outcome(&self.route, outcome);
    }

    fn fail(&mut self, source: UpstreamError) -> Bytes {
        tracing::warn!(route = %self.route, error = %source, "upstream stream broke after its first byte");
        self.end(source.kind());
        AppError::Upstream { source, retries: 0 }.event()
    }
}

impl Stream for Recorder {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.outcome.is_some() {
            return Poll::Ready(None);
        }
        if let Some((store, _)) = &mut this.storing {
            return match store.poll_unpin(cx) {
                Poll::Ready(()) => Poll::Ready(this.storing.take().map(|(_, bytes)| Ok(bytes))),
                Poll::Pending => Poll::Pending,
            };
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let deadline = Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(deadline);
                match this.record(&bytes) {
                    Some(store) => {
                        this.storing = Some((store, bytes));
                        // Wakes this task again to poll the write-back.
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    None => Poll::Ready(Some(Ok(bytes))),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                // Also how an answer over `upstream.max_response_bytes` ends: the recording is
                // dropped with the stream, so nothing of it is stored.
                let event = this.fail(UpstreamError::from_stream_error(&e));
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => {
                let outcome = match (this.unstorable, &this.recording) {
                    (Some(reason), _) => reason,
                    // Still recording at the end: `[DONE]` never came.
                    (None, Some(_)) => "unfinished",
                    (None, None) if this.recorded => "complete",
                    (None, None) => "ended",
                };
                this.end(outcome);
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let event = this.fail(UpstreamError::Timeout(this.idle));
                    Poll::Ready(Some(Ok(event)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            // The client hung up first; the upstream response goes with this stream.
            self.end("client_gone");
        }
    }
}
