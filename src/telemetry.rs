//! Logging set-up: `RUST_LOG` filters (default `info`, the HNSW library's own chatter at `warn`), text or JSON lines. Lines logged while a
//! request is served carry its `request` span (its id and endpoint).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber; call once, from `main`.
pub fn init(format: LogFormat) {
    // hnsw_rs and anndists log their graph parameters at INFO through `log`: noise to operators.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hnsw_rs=warn,anndists=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // Each line names the request it belongs to (`span.id`); the span list would repeat it.
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
