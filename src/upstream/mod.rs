//! The provider side: one shared reqwest client, the attempt that sends a request and reads its
//! answer within the per-attempt timeout, and the retry loop around it (in `retry`).

pub mod adapter;
pub mod providers;
pub mod retry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};

use crate::config::{RetryConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::stream::record::ByteStream;

/// Why the upstream gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made, or it broke before the answer was complete.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// One attempt took longer than its timeout.
    #[error("upstream did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The client could not be built or the request could not be formed.
    #[error("upstream client: {0}")]
    Client(String),
    /// The answer (a stream's total) is larger than `upstream.max_response_bytes`.
    #[error("The upstream answer is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
}

impl UpstreamError {
    /// Whether another attempt may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout(_))
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Client(_) => "client",
            Self::TooLarge { .. } => "too_large",
        }
    }

    /// The failure a stream's `io::Error` stands for: ours when it carries one (such as
    /// [`UpstreamError::TooLarge`]), else a broken connection.
    pub fn from_stream_error(e: &std::io::Error) -> Self {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Self>())
            .cloned()
            .unwrap_or_else(|| Self::Unreachable(e.to_string()))
    }
}

/// The body of an upstream answer: whole, or a stream passed on chunk by chunk.
pub enum AnswerBody {
    /// The full body, read within the attempt's timeout.
    Full(Bytes),
    /// A 2xx event stream, handed on as its chunks arrive; its first chunk has arrived.
    Stream(ByteStream),
}

impl std::fmt::Debug for AnswerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// What the upstream answered.
#[derive(Debug)]
pub struct Answer {
    /// Upstream status, passed on as is.
    pub status: StatusCode,
    /// Upstream `content-type`, passed on as is.
    pub content_type: Option<HeaderValue>,
    /// Upstream body.
    pub body: AnswerBody,
}

/// An upstream call after its retries.
#[derive(Debug)]
pub struct Forwarded {
    /// The last answer, or why there was none.
    pub result: Result<Answer, UpstreamError>,
    /// Retries made after the first try.
    pub retries: u32,
}

/// One call to make: where, what, and under which policy.
pub struct UpstreamCall<'a> {
    /// Route name, for metrics.
    pub route: &'a str,
    /// Path below the base URL, such as `/chat/completions`.
    pub path: &'static str,
    /// JSON body to POST; `None` sends a GET.
    pub body: Option<Bytes>,
    /// Whether a 2xx answer is an event stream to pass through.
    pub stream: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: &'a RetryConfig,
    /// `Authorization` for this call, as the policy bound it (none is sent without one).
    pub auth: Option<&'a HeaderValue>,
    /// Base URL for this call, as the policy resolved it.
    pub base_url: &'a str,
    /// The provider's wire format.
    pub wire: &'a adapter::Wire,
}

/// Sends calls to the provider with retries; built once and shared.
pub struct Forwarder {
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Largest answer read (a stream's total); see [`UpstreamError::TooLarge`].
    max_response_bytes: usize,
}

impl Forwarder {
    /// Builds the shared client from `[upstream]`; names resolve through `resolver`.
    pub fn new(
        config: &UpstreamConfig,
        resolver: Arc<crate::policy::GuardedResolver>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamError> {
        let client = reqwest::Client::builder()
            // A redirect would take deja to a host no policy checked.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve names where the guard cannot see.
            .no_proxy()
            .dns_resolver(resolver)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Client(e.to_string()))?;
        Ok(Self {
            client,
            metrics,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Makes the call, retrying per `call.retry`.
    pub async fn send(&self, mut call: UpstreamCall<'_>) -> Forwarded {
        let wire = call.wire;
        let url = wire.url(call.base_url, call.path);
        call.body = call.body.map(|body| wire.request(call.path, body));
        let (result, retries) =
            retry::run(call.retry, |budget| self.attempt(&url, &call, budget)).await;
        if retries > 0 {
            self.metrics.retries(call.route, retries);
        }
        Forwarded {
            result: result.map(|a| wire.answer(call.path, a.value)),
            retries,
        }
    }

    async fn attempt(
        &self,
        url: &str,
        call: &UpstreamCall<'_>,
        budget: Option<Duration>,
    ) -> Result<retry::Attempt<Answer>, UpstreamError> {
        let timeout = budget.map_or(call.timeout, |b| b.min(call.timeout));
        let outcome = tokio::time::timeout(timeout, self.exchange(url, call))
            .await
            .unwrap_or(Err(UpstreamError::Timeout(timeout)));
        let label = match &outcome {
            Ok(a) => status_label(a.status),
            Err(e) => e.kind(),
        };
        self.metrics.upstream_attempt(call.route, label);
        outcome
    }

    async fn exchange(
        &self,
        url: &str,
        call: &UpstreamCall<'_>,
    ) -> Result<retry::Attempt<Answer>, UpstreamError> {
        let mut request = match &call.body {
            Some(body) => self
                .client
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            None => self.client.get(url),
        };
        for (name, value) in call.wire.headers(call.auth) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = call.wire.status(response.status());
        let retry_after = retry::retry_after(response.headers(), SystemTime::now());
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let limit = self.max_response_bytes;
        // An announced length over the limit is refused before a byte of the body is read.
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(UpstreamError::TooLarge { limit });
        }
        let body = if call.stream && status.is_success() {
            first_chunk_read(response, limit).await?
        } else {
            AnswerBody::Full(read_capped(response, limit).await?)
        };
        Ok(retry::Attempt {
            status: status.as_u16(),
            retry_after,
            value: Answer {
                status,
                content_type,
                body,
            },
        })
    }
}

/// Reads a whole body chunk by chunk, giving up as soon as it passes `limit` bytes (the
/// `Content-Length` may be absent or lie).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    let announced = response.content_length().unwrap_or(0);
    let mut body =
        bytes::BytesMut::with_capacity(usize::try_from(announced).unwrap_or(limit).min(limit));
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if chunk.len() > limit - body.len() {
            return Err(UpstreamError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Passes a stream's chunks on while their total stays within `limit`; the chunk that would
/// pass it is replaced by a [`UpstreamError::TooLarge`] error, and nothing follows.
fn capped(chunks: ByteStream, limit: usize) -> ByteStream {
    chunks
        .scan((0usize, false), move |(total, over), chunk| {
            if *over {
                return futures_util::future::ready(None);
            }
            let item = match chunk {
                Ok(bytes) if bytes.len() > limit - *total => {
                    *over = true;
                    Err(std::io::Error::other(UpstreamError::TooLarge { limit }))
                }
                Ok(bytes) => {
                    *total += bytes.len();
                    Ok(bytes)
                }
                Err(e) => Err(e),
            };
            futures_util::future::ready(Some(item))
        })
        .boxed()
}

/// Waits for a stream's first chunk inside the attempt, so a connection that breaks or stalls
/// before any byte reaches the client is retried like any other failed attempt.
async fn first_chunk_read(
    response: reqwest::Response,
    limit: usize,
) -> Result<AnswerBody, UpstreamError> {
    let chunks = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(transport_message(&e))))
        .boxed();
    let mut chunks = capped(chunks, limit);
    loop {
        match chunks.next().await {
            Some(Ok(first)) if first.is_empty() => {}
            Some(Ok(first)) => {
                let rest = futures_util::stream::once(async { Ok(first) }).chain(chunks);
                return Ok(AnswerBody::Stream(rest.boxed()));
            }
            Some(Err(e)) => return Err(UpstreamError::from_stream_error(&e)),
            None => {
                return Err(UpstreamError::Unreachable(
                    "the event stream ended before its first byte".to_owned(),
                ));
            }
        }
    }
}

fn transport_error(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(transport_message(&e))
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's Display omits the cause ("error sending request"); the source says what broke.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// Status code as a static metric label, so labels never allocate per request.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
