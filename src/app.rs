//! `build_router`: the routes and layers, with no side effects, so tests can serve it anywhere.
//! Every request passes the same layers: a request id, a panic guard, the edge limits.

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::AppError;
use crate::limits::{self, EdgeLimits};
use crate::request_id;
use crate::routes;
use crate::state::AppState;

/// The whole HTTP surface of the gateway.
pub fn build_router(state: AppState) -> Router {
    layered(routes::table(&state), state)
}

/// `routes` behind the layers every request passes (tests add routes of their own here).
pub fn layered(routes: Router<AppState>, state: AppState) -> Router {
    let edge = EdgeLimits::from(&state.config.server);
    routes
        // Bodies are bounded once, in `limits::enforce`, whose error names the limit for the
        // 413; left on, axum's extractors would add their own 2 MB default on top.
        .layer(DefaultBodyLimit::disable())
        .layer(from_fn_with_state(edge, limits::enforce))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(from_fn(request_id::assign))
        .with_state(state)
}

/// A panic in a handler: an OpenAI-shaped 500 (the message is logged, not returned) instead of
/// a dropped connection.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    AppError::Internal(format!("a handler panicked: {what}")).into_response()
}
