//! `[log]`: the request log kept in the store.

use std::time::Duration;

use serde::Deserialize;

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Record every request in the store; default on.
    pub enabled: bool,
    /// Keep prompts and answers too; default off (they may hold personal data).
    pub bodies: bool,
    /// With `bodies`, the most bytes kept of each prompt and answer; the rest is cut (on a
    /// character boundary) and the cut marked. Default 64 KiB.
    pub max_body_bytes: usize,
    /// How long rows are kept; default `7d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Records waiting to be written; past it new ones are dropped (and counted). Default 10000.
    pub queue: usize,
    /// USD per million tokens by model glob, for the cost the cache saved; default: 01.AI's
    /// list prices (`yi-lightning` 0.14, `yi-large*` 2.80...).
    pub prices: Option<std::collections::BTreeMap<String, f64>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bodies: false,
            max_body_bytes: 64 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            queue: 10_000,
            prices: None,
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if self.retention.is_zero() {
            errors.push(format!("{path}.retention must be above 0"));
        }
        if self.queue == 0 {
            errors.push(format!("{path}.queue must be above 0"));
        }
        if self.max_body_bytes == 0 {
            errors.push(format!("{path}.max_body_bytes must be above 0"));
        }
    }
}

impl LogConfig {
    /// Prices by model glob, most specific (longest) glob first.
    pub fn price_list(&self) -> Vec<(String, f64)> {
        let mut list: Vec<(String, f64)> = match &self.prices {
            Some(prices) => prices.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            None => crate::analytics::DEFAULT_PRICES
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        };
        list.sort_by_key(|(glob, _)| std::cmp::Reverse(glob.len()));
        list
    }
}
