//! `[[routes]]`: how requests are grouped, matched and treated.

use std::time::Duration;

use serde::Deserialize;
use wildmatch::WildMatch;

use super::{RetryConfig, RouteCacheConfig};
use crate::portkey::{RequestConfig, Strategy, TargetFields};

/// One route: a name, the models it claims, and its policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in `/r/{name}/v1/...`, `x-deja-route` and metric labels.
    pub name: String,
    /// Globs matched against the request's `model` (`*`, `?`); default `["*"]`.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Model names callers may use for the provider's: `{ "01-ai/gpt-4" = "yi-lightning" }`
    /// (the tutorial's id). The request's `model` is replaced before the cache key is made
    /// and before any provider sees it.
    #[serde(default)]
    pub model_aliases: std::collections::BTreeMap<String, String>,
    /// Retry policy for this route's upstream calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Cache mode, TTL and threshold for this route.
    #[serde(default)]
    pub cache: RouteCacheConfig,
    /// Per-attempt upstream timeout for this route; default `[upstream] timeout`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// How to pick among `targets` (Portkey's shape).
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Providers this route sends to, instead of `[upstream]` (Portkey's shape).
    #[serde(default)]
    pub targets: Vec<RequestConfig>,
    /// `strategy` and `targets` as one config node, built at load.
    #[serde(skip)]
    pub plan: Option<RequestConfig>,
    /// How much of this route runs at once, and how much may wait.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[routes.limits]`: past `max_concurrent` requests in flight, up to `max_queued` wait (each at
/// most `queue_timeout`); the rest get a fast 429 with `Retry-After`, so a burst cannot grow
/// memory without bound.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests of this route handled at once (a stream counts until it ends); default 10,000.
    /// LLM calls wait seconds on the provider, and one costs deja little while it waits (see
    /// docs/PERFORMANCE.md for the measured cost a call): the cap is memory's guard, not a
    /// throughput setting. Each call holds two sockets: see the open-file limit at start.
    pub max_concurrent: usize,
    /// Requests that may wait for a slot; default 1024. 0 refuses at once when all slots are busy.
    pub max_queued: usize,
    /// Longest wait for a slot; default `5s`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 10_000,
            max_queued: 1024,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

impl RouteConfig {
    /// A route with every default and the given name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            models: all_models(),
            model_aliases: std::collections::BTreeMap::new(),
            retry: RetryConfig::default(),
            cache: RouteCacheConfig::default(),
            timeout: None,
            strategy: None,
            targets: Vec::new(),
            plan: None,
            limits: LimitsConfig::default(),
        }
    }

    /// Whether one of this route's `models` globs matches `model`.
    pub fn matches_model(&self, model: &str) -> bool {
        self.models.iter().any(|g| WildMatch::new(g).matches(model))
    }

    /// Builds `plan` from `strategy` and `targets`.
    pub(super) fn build_plan(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        self.plan = Some(RequestConfig {
            targets_fields: TargetFields {
                strategy: self.strategy.clone(),
                targets: Some(self.targets.clone()),
                ..TargetFields::default()
            },
            ..RequestConfig::default()
        });
    }

    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if let Some(plan) = &self.plan {
            plan.check_targets(&format!("{path}."), errors);
        } else if self.strategy.is_some() {
            errors.push(format!("{path}.strategy needs targets"));
        }
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            errors.push(format!(
                "{path}.name must be 1-64 characters of A-Z, a-z, 0-9, `-`, `_`, got `{}`",
                self.name
            ));
        }
        if self.models.is_empty() {
            errors.push(format!("{path}.models must list at least one glob"));
        }
        for (j, glob) in self.models.iter().enumerate() {
            if glob.trim().is_empty() {
                errors.push(format!("{path}.models[{j}] must not be empty"));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            errors.push(format!("{path}.timeout must be above 0"));
        }
        if self.limits.max_concurrent == 0 {
            errors.push(format!("{path}.limits.max_concurrent must be at least 1"));
        }
        self.retry.validate(&format!("{path}.retry"), errors);
        self.cache.validate(&format!("{path}.cache"), errors);
    }
}
