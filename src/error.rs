//! `AppError`: every failure that reaches the HTTP edge, with the one status mapping and the
//! OpenAI-shaped body `{"error":{"message","type","param","code"}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::portkey::{HEADER_RETRY_COUNT, PortkeyConfigError};
use crate::upstream::UpstreamError;

/// A request that could not be answered normally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not JSON.
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// A field is missing or has the wrong type.
    #[error("{message}")]
    InvalidField {
        /// Field at fault, such as `messages`.
        param: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The body is over `server.max_body_bytes`.
    #[error("Request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read from the connection.
    #[error("Could not read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive within `server.body_read_timeout`.
    #[error("The request body did not arrive within {}", humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    /// The request's headers total more than `server.max_header_bytes`.
    #[error("Request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The path exists but not for this method.
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// `x-portkey-config` was refused.
    #[error(transparent)]
    Config(#[from] PortkeyConfigError),
    /// The call asked for a host or credential use the policy does not allow.
    #[error(transparent)]
    Denied(#[from] crate::policy::Denied),
    /// A route named by path or header does not exist.
    #[error("No route named `{0}` is configured")]
    UnknownRoute(String),
    /// The route is at its concurrency limit and cannot queue this request.
    #[error("Route `{route}` is at capacity ({why}); retry after {retry_after_s} s")]
    Overloaded {
        /// The route.
        route: String,
        /// `queue full` or how long the request waited.
        why: String,
        /// Seconds to wait before retrying, also sent as `Retry-After`.
        retry_after_s: u64,
    },
    /// No endpoint at this path.
    #[error("Unknown endpoint: {0}")]
    NotFound(String),
    /// The upstream gave no answer after the retries.
    #[error("{source}")]
    Upstream {
        /// Why the last attempt failed.
        source: UpstreamError,
        /// Retries made before giving up.
        retries: u32,
    },
    /// No valid API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key without the scope the call needs.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A control-plane object does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// A control-plane object with that slug exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The control plane's database failed.
    #[error("control plane store unavailable: {0}")]
    Store(String),
    /// Virtual keys were used on a gateway without a key to seal them with.
    #[error(
        "virtual keys need a secret key and this gateway has none: run `deja secret-key`, set \
         its output as DEJA_SECRET_KEY (the same on every replica) and restart"
    )]
    NoSecretKey,
    /// A fault inside deja; the message is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// The process is still loading its model and state; the port answers meanwhile.
    #[error("deja is starting (loading the embedding model and its cache); retry in a second")]
    Starting,
}

impl AppError {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidField { .. } => "invalid_field",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyRead(_) => "body_read",
            Self::BodyTimeout(_) => "request_timeout",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Config(PortkeyConfigError::UnknownSaved(_)) => "config_not_found",
            Self::Config(_) => "invalid_config",
            Self::Denied(denied) => denied.kind(),
            Self::UnknownRoute(_) => "route_not_found",
            Self::NotFound(_) => "not_found",
            Self::Overloaded { .. } => "rate_limit_exceeded",
            Self::Upstream { source, .. } => match source {
                UpstreamError::Timeout(_) => "upstream_timeout",
                UpstreamError::Unreachable(_) => "upstream_unreachable",
                UpstreamError::Client(_) => "upstream_client",
                UpstreamError::TooLarge { .. } => "upstream_response_too_large",
            },
            Self::Unauthorized(_) => "invalid_api_key",
            Self::Forbidden(_) => "insufficient_scope",
            Self::Missing(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Store(_) => "store_unavailable",
            Self::NoSecretKey => "secret_key_missing",
            Self::Internal(_) => "internal",
            Self::Starting => "starting",
        }
    }

    /// The HTTP status this error answers with; the only such mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_)
            | Self::InvalidField { .. }
            | Self::BodyRead(_)
            | Self::Config(_)
            | Self::Denied(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownRoute(_) | Self::NotFound(_) | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) | Self::Starting | Self::NoSecretKey => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream {
                source: UpstreamError::Timeout(_),
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream {
                source: UpstreamError::Unreachable(_) | UpstreamError::TooLarge { .. },
                ..
            } => StatusCode::BAD_GATEWAY,
            Self::Upstream {
                source: UpstreamError::Client(_),
                ..
            }
            | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidField { param, .. } => Some(param),
            Self::Config(_) | Self::Denied(_) => Some(crate::portkey::HEADER_CONFIG),
            _ => None,
        }
    }
}

impl AppError {
    /// The OpenAI-shaped error body.
    fn body(&self) -> serde_json::Value {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, kind = self.kind(), "internal error");
            "The gateway hit an internal error; it has been logged.".to_owned()
        } else if let Self::Upstream {
            source: UpstreamError::Unreachable(cause),
            ..
        } = self
        {
            // Refused, reset or unresolvable all read the same to the caller: the cause would
            // make deja a port scanner. Operators find it in the log.
            tracing::warn!(cause = %cause, "upstream unreachable");
            "The upstream provider could not be reached.".to_owned()
        } else {
            self.to_string()
        };
        let kind = match status.as_u16() {
            500..=599 => "api_error",
            429 => "rate_limit_error",
            _ => "invalid_request_error",
        };
        json!({"error": {
            "message": message,
            "type": kind,
            "param": self.param(),
            "code": self.kind(),
        }})
    }

    /// The same body as an SSE event, for a failure after a stream's first byte (when the status
    /// line has long been sent). OpenAI's SDKs raise an `APIError` on it.
    pub fn event(&self) -> Bytes {
        Bytes::from(format!("data: {}\n\n", self.body()))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        match self {
            Self::Upstream { retries, .. } => {
                response
                    .headers_mut()
                    .insert(HEADER_RETRY_COUNT, HeaderValue::from(retries));
            }
            Self::Overloaded { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            Self::Starting => {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        response
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(what) => Self::Missing(what),
            StoreError::Conflict(what) => Self::Conflict(what),
            other => {
                // A driver's message may quote the database URL, password included.
                let message = crate::redact::urls_in(&other.to_string());
                tracing::error!(error = %message, "control plane store failed");
                Self::Store(message)
            }
        }
    }
}

// Extractor rejections become our errors here, so a handler takes `Result<Json<T>, _>` and
// writes `?`. A body refused by `limits` (too large, too slow) keeps its 413 or 408 whichever
// extractor read it.

impl From<axum::extract::rejection::BytesRejection> for AppError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        crate::limits::refusal(&rejection).unwrap_or_else(|| Self::BodyRead(rejection.body_text()))
    }
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        crate::limits::refusal(&rejection)
            .unwrap_or_else(|| Self::InvalidJson(rejection.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::InvalidField {
            param: "query",
            message: rejection.body_text(),
        }
    }
}
