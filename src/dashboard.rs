//! `GET /dashboard`: a page deja serves itself, its script and style compiled into the binary (no
//! CDN, nothing fetched from elsewhere). The page is public; the analytics it draws are read
//! with an admin key the operator types in (or passes as `#key=` in the URL, kept in the tab).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Only this origin: the page cannot be framed and its script can only call deja.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// Its script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
