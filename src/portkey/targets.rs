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
    /// Azure OpenAI: the resource (`{resource_name}.openai.azure.com`).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// Azure OpenAI: the deployment the call goes to.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// Azure OpenAI: `api-version`; default [`providers::AZURE_API_VERSION`].
    #[serde(default)]
    pub api_version: Option<String>,
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
                Some("") if t.custom_host.is_none() && !providers::is_azure(provider) => {
                    errors.push(format!("{path}provider `{provider}` needs a custom_host"))
                }
                Some(_) => {}
            }
        }
        check_azure(t, path, errors);
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

    /// Where an `azure-openai` target's deployment is: below `custom_host` when given, else on
    /// its resource's host. `None` for other providers.
    pub fn azure_base(&self) -> Option<String> {
        let t = &self.targets_fields;
        if !providers::is_azure(t.provider.as_deref()?) {
            return None;
        }
        let deployment = t.deployment_id.as_deref()?;
        let root = match (&t.custom_host, &t.resource_name) {
            (Some(host), _) => host.trim_end_matches('/').to_owned(),
            (None, Some(resource)) => format!("https://{resource}.openai.azure.com"),
            (None, None) => return None,
        };
        Some(format!("{root}/openai/deployments/{deployment}"))
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

/// An Azure target names its deployment (and its resource unless it gives a host); each part
/// goes into the URL, so only the characters Azure allows are accepted.
fn check_azure(t: &TargetFields, path: &str, errors: &mut Vec<String>) {
    let named = |v: &Option<String>, extra: &str| {
        v.as_deref().is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(c))
        })
    };
    for (field, value, extra) in [
        ("resource_name", &t.resource_name, ""),
        ("deployment_id", &t.deployment_id, "._"),
        ("api_version", &t.api_version, "."),
    ] {
        if !named(value, extra) {
            errors.push(format!(
                "{path}{field} may hold only letters, digits and -{extra}"
            ));
        }
    }
    if !t.provider.as_deref().is_some_and(providers::is_azure) {
        return;
    }
    if t.deployment_id.is_none() {
        errors.push(format!(
            "{path}provider `azure-openai` needs a deployment_id"
        ));
    }
    if t.resource_name.is_none() && t.custom_host.is_none() {
        errors.push(format!(
            "{path}provider `azure-openai` needs a resource_name (or a custom_host)"
        ));
    }
}
