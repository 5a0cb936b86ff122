//! Limits on what a client may send, enforced in one layer in front of every route: the total
//! size of a request's headers (431), and its body's size (413) and arrival time (408). The
//! body limits travel with the body itself, so whichever extractor reads it (bytes or JSON)
//! fails with an error that [`refusal`] turns into the right answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Sleep;

use crate::config::ServerConfig;
use crate::error::AppError;

/// The limits the layer enforces, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Largest total of header names and values, in bytes.
    pub max_header_bytes: usize,
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Longest time for the whole body to arrive once the headers are in.
    pub body_read_timeout: Duration,
}

impl From<&ServerConfig> for EdgeLimits {
    fn from(server: &ServerConfig) -> Self {
        Self {
            max_header_bytes: server.max_header_bytes,
            max_body_bytes: server.max_body_bytes,
            body_read_timeout: server.body_read_timeout,
        }
    }
}

/// Why a request body was cut off; carried as the body's error up to the extractor.
#[derive(Debug, thiserror::Error)]
pub enum BodyLimitError {
    /// More than `limit` bytes arrived.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// `server.max_body_bytes`.
        limit: usize,
    },
    /// The body was not complete within this time.
    #[error("request body did not arrive within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// The layer: refuses oversized headers, and bounds the body a handler will read.
pub async fn enforce(State(limits): State<EdgeLimits>, request: Request, next: Next) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        return AppError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        }
        .into_response();
    }
    let request = request.map(|body| Body::new(GuardedBody::new(body, limits)));
    next.run(request).await
}

/// The error a body extractor's rejection stands for when it came from the limits here
/// (anywhere in its chain of sources); `None` for any other rejection.
pub fn refusal(rejection: &(dyn std::error::Error + 'static)) -> Option<AppError> {
    let mut current = Some(rejection);
    while let Some(error) = current {
        match error.downcast_ref::<BodyLimitError>() {
            Some(BodyLimitError::TooLarge { limit }) => {
                return Some(AppError::BodyTooLarge { limit: *limit });
            }
            Some(BodyLimitError::Timeout(after)) => return Some(AppError::BodyTimeout(*after)),
            None => current = error.source(),
        }
    }
    None
}

/// A request body that fails once it passes its byte limit or its deadline.
struct GuardedBody {
    inner: Body,
    read: usize,
    limit: usize,
    after: Duration,
    /// Starts when the headers are in: the clock runs whether or not the handler is reading.
    deadline: Pin<Box<Sleep>>,
}

impl GuardedBody {
    fn new(inner: Body, limits: EdgeLimits) -> Self {
        Self {
            inner,
            read: 0,
            limit: limits.max_body_bytes,
            after: limits.body_read_timeout,
            deadline: Box::pin(tokio::time::sleep(limits.body_read_timeout)),
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        // Checked first, so a client trickling bytes steadily still meets the deadline.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyLimitError::Timeout(this.after).into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.read = this
                    .read
                    .saturating_add(frame.data_ref().map_or(0, Bytes::len));
                if this.read > this.limit {
                    let limit = this.limit;
                    return Poll::Ready(Some(Err(BodyLimitError::TooLarge { limit }.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::rejection::BytesRejection;
    use axum::routing::post;
    use futures_util::StreamExt;
    use tower_service::Service;

    async fn echo(body: Result<Bytes, BytesRejection>) -> Response {
        match body {
            Ok(bytes) => bytes.into_response(),
            Err(rejection) => refusal(&rejection)
                .unwrap_or_else(|| AppError::BodyRead(rejection.body_text()))
                .into_response(),
        }
    }

    fn router(limits: EdgeLimits) -> Router {
        Router::new()
            .route("/", post(echo))
            .layer(axum::middleware::from_fn_with_state(limits, enforce))
    }

    const LIMITS: EdgeLimits = EdgeLimits {
        max_header_bytes: 64,
        max_body_bytes: 8,
        body_read_timeout: Duration::from_secs(5),
    };

    async fn status_of(limits: EdgeLimits, request: http::Request<Body>) -> (u16, String) {
        let response = router(limits).call(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post_body(body: Body) -> http::Request<Body> {
        http::Request::post("/").body(body).unwrap()
    }

    #[tokio::test]
    async fn bodies_within_the_limits_pass_untouched() {
        let (status, body) = status_of(LIMITS, post_body(Body::from("12345678"))).await;
        assert_eq!((status, body.as_str()), (200, "12345678"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413_naming_it() {
        let (status, body) = status_of(LIMITS, post_body(Body::from("123456789"))).await;
        assert_eq!(status, 413, "{body}");
        assert!(
            body.contains("body_too_large") && body.contains("8 bytes"),
            "{body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_a_408() {
        let stalled =
            futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("1")) })
                .chain(futures_util::stream::pending());
        let request = post_body(Body::from_stream(stalled));
        let (status, body) = status_of(LIMITS, request).await;
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("request_timeout"), "{body}");
    }

    #[tokio::test]
    async fn headers_over_the_limit_are_a_431() {
        let request = http::Request::post("/")
            .header("x-big", "v".repeat(100))
            .body(Body::empty())
            .unwrap();
        let (status, body) = status_of(LIMITS, request).await;
        assert_eq!(status, 431, "{body}");
        assert!(body.contains("headers_too_large"), "{body}");
    }
}
