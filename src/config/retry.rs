//! `[routes.retry]`: the retry policy, shared by the config file and `x-portkey-config`.

use std::time::Duration;

use serde::Deserialize;

/// Most retries a policy may ask for; keeps one request from hammering a struggling provider.
pub const MAX_ATTEMPTS: u32 = 10;

/// Statuses retried when `on_status_codes` is not given.
pub const DEFAULT_RETRY_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// How failed upstream calls are retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first try (0 = no retry); at most 10.
    pub attempts: u32,
    /// Upstream statuses that are retried; default `[429, 500, 502, 503, 504]`.
    pub on_status_codes: Vec<u16>,
    /// First backoff step; step n waits up to `base_delay * 2^n`; default `1s`.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Cap on one backoff wait; default `30s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured; a longer one ends retrying; default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Full jitter (wait a random time up to the step); `false` waits the whole step. Default true.
    pub jitter: bool,
    /// Whether an upstream `Retry-After` header sets the wait; default true.
    pub use_retry_after_header: bool,
    /// Overall time for all attempts and waits of one request; unset = no limit beyond
    /// `attempts` x timeout. No wait starts that would end past it; the last attempt's timeout
    /// is cut to what is left.
    #[serde(with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 0,
            on_status_codes: DEFAULT_RETRY_STATUSES.to_vec(),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            jitter: true,
            use_retry_after_header: true,
            deadline: None,
        }
    }
}

impl RetryConfig {
    /// Appends a message per broken rule, each prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if self.attempts > MAX_ATTEMPTS {
            errors.push(format!(
                "{path}.attempts must be at most {MAX_ATTEMPTS}, got {}",
                self.attempts
            ));
        }
        for (i, code) in self.on_status_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                errors.push(format!(
                    "{path}.on_status_codes[{i}] must be an HTTP status (100-599), got {code}"
                ));
            }
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            errors.push(format!("{path}.deadline must be above 0"));
        }
        if self.base_delay > self.max_delay {
            errors.push(format!(
                "{path}.base_delay ({}) must not exceed max_delay ({})",
                humantime::format_duration(self.base_delay),
                humantime::format_duration(self.max_delay)
            ));
        }
    }

    /// Whether an upstream answer with this status is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        self.on_status_codes.contains(&status)
    }
}
