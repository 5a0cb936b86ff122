//! The open-file limit. Every call in flight holds two sockets (the client's and the provider's),
//! so the limit, not memory, is what first caps how many LLM calls one process can hold: at
//! start the soft limit is raised to the hard one, and a limit still too low for the routes'
//! admission is named in the log with what to do.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Sockets and files beyond two per admitted call: listeners, Redis, the store, the model.
const SPARE: u64 = 256;

/// Raises the soft open-file limit to the hard one; returns the limit in force (`None` where
/// the platform has none to read).
pub fn raise(calls_admitted: usize) -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current?, limit.maximum);
    let wanted = hard.unwrap_or(soft);
    let now = if wanted > soft
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: hard,
            },
        )
        .is_ok()
    {
        wanted
    } else {
        soft
    };
    let needed = (calls_admitted as u64)
        .saturating_mul(2)
        .saturating_add(SPARE);
    if now < needed {
        tracing::warn!(
            open_files = now,
            needed,
            "the open-file limit is below what the routes admit (two sockets a call): raise it \
             (ulimit -n, systemd LimitNOFILE, docker-compose ulimits) or lower [routes.limits] \
             max_concurrent"
        );
    } else {
        tracing::info!(open_files = now, "open-file limit");
    }
    Some(now)
}
