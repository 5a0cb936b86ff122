//! `build_router`: the routes and layers, with no side effects, so tests can serve it anywhere.

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::limits::{self, EdgeLimits};
use crate::routes;
use crate::state::AppState;

/// The whole HTTP surface of the gateway.
pub fn build_router(state: AppState) -> Router {
    let edge = EdgeLimits::from(&state.config.server);
    routes::table()
        // Bodies are bounded once, in `limits::enforce`, whose error names the limit for the
        // 413; left on, axum's extractors would add their own 2 MB default on top.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(edge, limits::enforce))
        .with_state(state)
}
