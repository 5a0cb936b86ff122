//! The table of paths; handlers are thin: extract, call a service, shape the response.

mod admin;
mod analytics;
mod chat;
mod ops;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header;

use crate::error::AppError;
use crate::gateway::GatewayResponse;
use crate::state::AppState;
use crate::upstream::AnswerBody;

/// Every path deja serves.
pub fn table(state: &AppState) -> Router<AppState> {
    let control_plane = Router::new()
        .route(
            "/v1/configs",
            post(admin::create_config).get(admin::list_configs),
        )
        .route(
            "/v1/configs/{slug}",
            get(admin::get_config)
                .put(admin::update_config)
                .delete(admin::delete_config),
        )
        .route("/v1/configs/{slug}/versions", get(admin::config_versions))
        .route("/v1/configs/{slug}/rollback", post(admin::rollback_config))
        .route(
            "/v1/virtual-keys",
            post(admin::create_virtual_key).get(admin::list_virtual_keys),
        )
        .route(
            "/v1/virtual-keys/{slug}",
            get(admin::get_virtual_key)
                .put(admin::update_virtual_key)
                .delete(admin::delete_virtual_key),
        )
        .route("/v1/logs", get(admin::logs))
        .route("/v1/analytics/cache", get(analytics::cache))
        .route("/v1/analytics/graphs/{name}", get(analytics::graph))
        .route("/v1/analytics/graphs/{group}/{name}", get(analytics::graph))
        .route("/v1/analytics/summary/cache", get(analytics::cache_summary));
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route(
            "/r/{route}/v1/chat/completions",
            post(chat::completions_on_route),
        )
        .route("/v1/models", get(chat::models))
        .route("/r/{route}/v1/models", get(chat::models_on_route))
        .merge(admin_only(control_plane, state))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/app.js", get(crate::dashboard::script))
        .route("/dashboard/app.css", get(crate::dashboard::style))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // Last: it applies to the routes above (axum's own 405 has an empty body).
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

/// `routes` refused (401, 403) to every key without admin or operator scope before any handler
/// runs: a control-plane endpoint cannot be declared open by forgetting a check.
pub fn admin_only(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.route_layer(axum::middleware::from_extractor_with_state::<
        crate::auth::AdminCaller,
        AppState,
    >(state.clone()))
}

async fn not_found(uri: http::Uri) -> AppError {
    AppError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> AppError {
    AppError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

impl IntoResponse for GatewayResponse {
    fn into_response(self) -> Response {
        let body = match self.answer.body {
            AnswerBody::Full(bytes) => Body::from(bytes),
            AnswerBody::Stream(stream) => Body::from_stream(stream),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.answer.status;
        let headers = response.headers_mut();
        if let Some(content_type) = self.answer.content_type {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        self.meta.write_headers(headers);
        response
    }
}
