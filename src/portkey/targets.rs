//! Portkey's `strategy` and `targets`: a config is a tree whose leaves are providers. Each node
//! may name a provider, a credential, a host, parameters to override, a weight, and its own
//! retry, cache, timeout and circuit breaker; children inherit what they do not set.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::RequestConfig;
use crate::upstream::providers;

/// How a node picks among its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyMode {
    /// In order, moving on when a target fails.
    Fallback,
    /// One target at random, by weight.
    Loadbalance,
}

/// `strategy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// `fallback` or `loadbalance`.
    pub mode: StrategyMode,
    /// Statuses that move a fallback on; default any non-2xx.
    #[serde(default)]
    pub on_status_codes: Option<Vec<u16>>,
}

/// `cb_config`: a circuit breaker on each target below the node.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failures in a row that open the circuit; default 5.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// Milliseconds an open circuit skips the target before probing it again; default 30000.
    #[serde(default = "default_cooldown")]
    pub cooldown: u64,
}

fn default_threshold() -> u32 {
    5
}

fn default_cooldown() -> u64 {
    30_000
}

/// A provider credential given inline; never printed.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct InlineKey(pub String);

impl std::fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The target fields of a config node (beside retry, cache, timeout and virtual key).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct TargetFields {
    /// How to pick among `targets`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Child nodes.
    #[serde(default)]
    pub targets: Option<Vec<RequestConfig>>,
    /// Provider name (`lingyi`, `openai`, `deepseek`, `moonshot`, `openai-compatible`...).
    #[serde(default)]
    pub provider: Option<String>,
    /// Provider credential, inline.
    #[serde(default)]
    pub api_key: Option<InlineKey>,
    /// Base URL, instead of the provider's.
    #[serde(default)]
    pub custom_host: Option<String>,
    /// Body fields laid over the request's (parent first, child wins).
    #[serde(default)]
    pub override_params: Option<Map<String, Value>>,
    /// Share of traffic under `loadbalance`; default 1, 0 disables the target.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Circuit breaker on the targets below.
    #[serde(default)]
    pub cb_config: Option<CircuitBreaker>,
}

impl RequestConfig {
    /// Appends one message per broken rule of the target tree, each with its key path.
    pub fn check_targets(&self, path: &str, errors: &mut Vec<String>) {
        let t = &self.targets_fields;
        if let Some(provider) = &t.provider {
            match providers::base_url(provider) {
                None => errors.push(format!(
                    "{path}provider `{provider}` is not known; known providers: {}",
                    providers::names()
                )),
                Some("") if t.custom_host.is_none() => {
                    errors.push(format!("{path}provider `{provider}` needs a custom_host"))
                }
                Some(_) => {}
            }
        }
        if let Some(host) = &t.custom_host
            && !(host.starts_with("http://") || host.starts_with("https://"))
        {
            errors.push(format!("{path}custom_host must be an http(s) URL"));
        }
        if let Some(weight) = t.weight
            && !(weight >= 0.0 && weight.is_finite())
        {
            errors.push(format!("{path}weight must be a number >= 0, got {weight}"));
        }
        if let Some(cb) = t.cb_config
            && (cb.failure_threshold == 0 || cb.cooldown == 0)
        {
            errors.push(format!(
                "{path}cb_config needs failure_threshold and cooldown above 0"
            ));
        }
        match (&t.strategy, &t.targets) {
            (Some(_), None) => errors.push(format!("{path}strategy needs targets")),
            (_, Some(targets)) if targets.is_empty() => {
                errors.push(format!("{path}targets must list at least one target"));
            }
            (_, Some(targets)) => {
                if t.strategy
                    .as_ref()
                    .is_some_and(|s| s.mode == StrategyMode::Loadbalance)
                    && targets.iter().all(|c| c.targets_fields.weight == Some(0.0))
                {
                    errors.push(format!(
                        "{path}loadbalance needs a target with a weight above 0"
                    ));
                }
                for (i, child) in targets.iter().enumerate() {
                    child.check_targets(&format!("{path}targets[{i}]."), errors);
                }
            }
            (None, None) => {}
        }
    }

    /// A route's plan with the request's own retry and timeout laid over its top (its hosts and
    /// credentials stay the operator's).
    pub fn with_request(&self, request: &RequestConfig) -> RequestConfig {
        let mut plan = self.clone();
        if request.retry.is_some() {
            plan.retry.clone_from(&request.retry);
        }
        if request.request_timeout.is_some() {
            plan.request_timeout = request.request_timeout;
        }
        plan
    }

    /// Calls `visit` on this node and every node below it.
    pub fn visit_targets(&self, visit: &mut impl FnMut(&RequestConfig)) {
        visit(self);
        for child in self.targets_fields.targets.iter().flatten() {
            child.visit_targets(visit);
        }
    }

    /// Whether the config names a target of its own: targets, or a provider, host or key at
    /// its top.
    pub fn brings_targets(&self) -> bool {
        let t = &self.targets_fields;
        self.has_targets() || t.provider.is_some() || t.custom_host.is_some() || t.api_key.is_some()
    }

    /// Whether the config routes through targets.
    pub fn has_targets(&self) -> bool {
        self.targets_fields
            .targets
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    }
}
