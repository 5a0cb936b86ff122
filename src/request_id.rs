//! Every request's id: deja assigns one to each request (a caller's `x-request-id` is replaced,
//! so ids stay unique and cannot be forged into another request's log row), returns it as
//! `x-request-id` and as Portkey's `x-portkey-request-id` (Portkey's SDKs read it), and keys the
//! request log's row with it. A caller's own `x-portkey-trace-id` (which groups calls that belong
//! together) is kept beside it: echoed back and written to the request log.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};

/// The header deja sets on the request and returns on the response.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Portkey's name for the same id.
pub const PORTKEY_HEADER: HeaderName = HeaderName::from_static("x-portkey-request-id");
/// A caller's trace id.
pub const TRACE_HEADER: HeaderName = HeaderName::from_static("x-portkey-trace-id");
/// Longest trace id kept: enough for a UUID or a W3C trace id with a prefix, short enough that a
/// caller cannot grow every log row.
pub const MAX_TRACE_ID: usize = 128;

/// `req_` and 16 random hex characters, in one allocation.
fn fresh() -> HeaderValue {
    let id = format!("req_{:016x}", rand::random::<u64>());
    // Only ASCII hex: always a valid header value.
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

/// The layer: gives the request a fresh id (a caller's `x-request-id` is replaced) and returns
/// it as `x-request-id` and `x-portkey-request-id`. One middleware instead of tower-http's
/// set, propagate and a copy: each layer costs every request a boxed future.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = fresh();
    request.headers_mut().insert(HEADER, id.clone());
    let trace = trace_id(request.headers())
        .ok()
        .flatten()
        .and_then(|t| HeaderValue::from_str(&t).ok());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(HEADER, id.clone());
    headers.insert(PORTKEY_HEADER, id);
    if let Some(trace) = trace {
        headers.insert(TRACE_HEADER, trace);
    }
    response
}

/// The caller's `x-portkey-trace-id`: 1 to [`MAX_TRACE_ID`] visible ASCII characters, or a 400
/// naming the header (a trace id that cannot be logged as sent would not find its calls again).
pub fn trace_id(headers: &http::HeaderMap) -> Result<Option<String>, crate::error::AppError> {
    let Some(raw) = headers.get(&TRACE_HEADER) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > MAX_TRACE_ID || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(crate::error::AppError::InvalidField {
            param: "x-portkey-trace-id",
            message: format!(
                "x-portkey-trace-id must be 1 to {MAX_TRACE_ID} visible ASCII characters without spaces"
            ),
        });
    }
    Ok(Some(text.to_owned()))
}

/// The id deja gave a request, from its headers.
pub fn of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
