//! The tasks that run beside the server for as long as it serves: API-key reloads, the
//! request-log writer, alert rules, the semantic tier's warm-up and upkeep, following the other
//! replicas' cache changes, following a Sentinel-managed Redis master, and probing a Redis taken for
//! down.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::state::AppState;
use crate::{alerts, auth};

/// How often expired semantic entries are swept and tombstone-heavy indexes compacted.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);
/// Share of dead entries in an index that triggers its compaction.
const COMPACT_AT_TOMBSTONES: f32 = 0.25;

/// Starts every background task; they stop when the returned set is dropped.
pub fn start(state: &AppState) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let (keys, store) = (Arc::clone(&state.keys), state.store.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(auth::REFRESH_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = keys.refresh(&store).await {
                tracing::warn!(error = %e, "reloading API keys failed; keeping the last set");
            }
        }
    });
    if let Some(log) = &state.request_log {
        tasks.spawn(Arc::clone(log).run(state.store.clone()));
    }
    tasks.spawn(alerts::run(
        Arc::clone(&state.config),
        Arc::clone(&state.metrics),
        reqwest::Client::new(),
    ));
    let cache = Arc::clone(&state.cache);
    tasks.spawn(async move {
        cache.warm_up().await;
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let cache = Arc::clone(&cache);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(tier) = cache.semantic() {
                    tier.maintain(COMPACT_AT_TOMBSTONES);
                }
            })
            .await;
        }
    });
    let cache = Arc::clone(&state.cache);
    tasks.spawn(async move { cache.follow_replicas().await });
    let cache = Arc::clone(&state.cache);
    tasks.spawn(async move { cache.watch_redis().await });
    let (cache, every) = (Arc::clone(&state.cache), state.config.redis.probe_interval);
    tasks.spawn(async move { cache.probe_redis(every).await });
    tasks
}
