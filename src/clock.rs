//! Wall-clock time as the store, the request log and the cache's TTLs record it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 on a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
