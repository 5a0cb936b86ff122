//! deja: a self-hosted, OpenAI-compatible gateway for 01.AI with a retrying forwarder (and, next,
//! a two-tier response cache).

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod embedding;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod portkey;
pub mod request;
pub mod routes;
pub mod state;
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
    let state = AppState::new(config)?;
    let grace = state.config.server.shutdown_grace;
    let router = app::build_router(state);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let grace_over = async move {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server => served?,
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
