//! Every request's id: deja assigns one to each request (a caller's `x-request-id` is replaced,
//! so ids stay unique and cannot be forged into another request's log row), returns it as
//! `x-request-id` and as Portkey's `x-portkey-request-id` (Portkey's SDKs read it), and keys the
//! request log's row with it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};

/// The header deja sets on the request and returns on the response.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Portkey's name for the same id.
pub const PORTKEY_HEADER: HeaderName = HeaderName::from_static("x-portkey-request-id");

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
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(HEADER, id.clone());
    headers.insert(PORTKEY_HEADER, id);
    response
}

/// The id deja gave a request, from its headers.
pub fn of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
