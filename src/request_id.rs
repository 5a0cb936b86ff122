//! Every request's id: deja assigns one to each request (a caller's `x-request-id` is replaced,
//! so ids stay unique and cannot be forged into another request's log row), returns it as
//! `x-request-id` and as Portkey's `x-portkey-request-id` (Portkey's SDKs read it), and keys the
//! request log's row with it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use tower_http::request_id::{MakeRequestId, RequestId};

/// The header deja sets on the request and returns on the response.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Portkey's name for the same id.
pub const PORTKEY_HEADER: HeaderName = HeaderName::from_static("x-portkey-request-id");

/// Makes `req_` followed by 16 random hex characters.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let id = format!("req_{}", crate::store::random_hex(8));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Outermost: drops a caller's `x-request-id` so the next layer always assigns a fresh one.
pub async fn replace_callers(mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(HEADER);
    next.run(request).await
}

/// Copies the id to Portkey's header on every response.
pub async fn portkey_alias(request: Request, next: Next) -> Response {
    let id = request.headers().get(HEADER).cloned();
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.headers_mut().insert(PORTKEY_HEADER, id);
    }
    response
}

/// The id deja gave a request, from its headers.
pub fn of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
