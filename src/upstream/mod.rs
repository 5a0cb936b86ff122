//! The provider side: one shared reqwest client, the attempt that sends a request and reads its
//! answer within the per-attempt timeout, and the retry loop around it (in `retry`).

pub mod providers;
pub mod retry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use secrecy::ExposeSecret;

use crate::config::{RetryConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::stream::record::ByteStream;

/// Why the upstream gave no answer.
#[derive(Debug, thiserror::Error)]
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
        }
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
    /// `Authorization` for this call (a virtual key's credential) instead of `[upstream] api_key`.
    pub auth: Option<&'a HeaderValue>,
    /// Base URL for this call (a target's provider or host) instead of `[upstream] base_url`.
    pub base_url: Option<&'a str>,
}

/// Sends calls to the provider with retries; built once and shared.
pub struct Forwarder {
    client: reqwest::Client,
    base_url: String,
    auth: Option<HeaderValue>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// Builds the shared client from `[upstream]`.
    pub fn new(config: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Self, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Client(e.to_string()))?;
        let auth = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| {
                    UpstreamError::Client(
                        "upstream.api_key holds characters not allowed in a header".to_owned(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            auth,
            metrics,
        })
    }

    /// Makes the call, retrying per `call.retry`.
    pub async fn send(&self, call: UpstreamCall<'_>) -> Forwarded {
        let base = call
            .base_url
            .map_or(self.base_url.as_str(), |b| b.trim_end_matches('/'));
        let url = format!("{base}{}", call.path);
        let (result, retries) =
            retry::run(call.retry, |budget| self.attempt(&url, &call, budget)).await;
        if retries > 0 {
            self.metrics.retries(call.route, retries);
        }
        Forwarded {
            result: result.map(|a| a.value),
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
        if let Some(auth) = call.auth.or(self.auth.as_ref()) {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry::retry_after(response.headers(), SystemTime::now());
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = if call.stream && status.is_success() {
            first_chunk_read(response).await?
        } else {
            AnswerBody::Full(response.bytes().await.map_err(transport_error)?)
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

/// Waits for a stream's first chunk inside the attempt, so a connection that breaks or stalls
/// before any byte reaches the client is retried like any other failed attempt.
async fn first_chunk_read(response: reqwest::Response) -> Result<AnswerBody, UpstreamError> {
    let mut chunks = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(transport_message(&e))));
    loop {
        match chunks.next().await {
            Some(Ok(first)) if first.is_empty() => {}
            Some(Ok(first)) => {
                let rest = futures_util::stream::once(async { Ok(first) }).chain(chunks);
                return Ok(AnswerBody::Stream(rest.boxed()));
            }
            Some(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
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
