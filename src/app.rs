//! `build_router`: the routes and layers, with no side effects, so tests can serve it anywhere.

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::routes;
use crate::state::AppState;

/// The whole HTTP surface of the gateway.
pub fn build_router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    routes::table()
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
