//! OpenAI-compatible endpoints: chat completions and the model list.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;

use crate::error::AppError;
use crate::gateway::{self, Call};
use crate::state::AppState;

pub(super) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat(&state, None, &headers, body).await
}

pub(super) async fn completions_on_route(
    State(state): State<AppState>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat(&state, Some(&route), &headers, body).await
}

async fn chat(
    state: &AppState,
    path_route: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = body.map_err(AppError::from);
    let call = Call {
        path_route,
        headers,
    };
    gateway::chat_completions(state, call, body)
        .await
        .into_response()
}

pub(super) async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let call = Call {
        path_route: None,
        headers: &headers,
    };
    gateway::models(&state, call).await.into_response()
}

pub(super) async fn models_on_route(
    State(state): State<AppState>,
    Path(route): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        path_route: Some(&route),
        headers: &headers,
    };
    gateway::models(&state, call).await.into_response()
}
