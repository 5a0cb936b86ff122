//! deja: a self-hosted, OpenAI-compatible gateway for 01.AI: retries, fallback and load
//! balancing across providers, a two-tier (exact and semantic) response cache that also records
//! and replays streams, and a control plane (API keys, virtual keys, saved configs, request log).

pub mod alerts;
pub mod analytics;
pub mod app;
pub mod auth;
mod background;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod embedding;
pub mod error;
pub mod eval;
pub mod fd_limit;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod portkey;
pub mod redact;
pub mod reqlog;
pub mod request;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod starting;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod upstream;

use std::future::Future;

use tokio::net::TcpListener;

pub use config::Config;
pub use state::{AppState, StartError};

/// Serves `config` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for up to `server.shutdown_grace`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Loading the model takes a second or two of CPU: keep it off the async workers, and
    // answer on the port meanwhile.
    let header_read_timeout = config.server.header_read_timeout;
    let building = tokio::task::spawn_blocking(move || AppState::new(config));
    let state = starting::answer_while(&listener, header_read_timeout, building)
        .await
        .map_err(|e| StartError::Serve(std::io::Error::other(e)))??;
    serve(state, listener, shutdown).await
}

/// Serves an assembled `state` (see [`run`]); background upkeep stops with the server.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // The control plane is ready before the first request: migrated, keys loaded.
    state.store.migrate().await?;
    state.keys.refresh(&state.store).await?;
    // Every background task lives in this set; dropping it (the server stopped) aborts them.
    let _background = background::start(&state);
    let settings = state.config.server.clone();
    let grace = settings.shutdown_grace;
    let router = app::build_router(state);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = server::serve(listener, router, &settings, signal);
    let grace_over = async move {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = server => {}
        () = grace_over => tracing::warn!(
            grace = %humantime::format_duration(grace),
            "shutdown grace elapsed; dropping requests still in flight"
        ),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
