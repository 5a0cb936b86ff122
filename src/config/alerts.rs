//! `[[alerts]]` and `[alerting]`: rules deja evaluates on its own metrics, posting to a webhook.

use std::time::Duration;

use serde::Deserialize;

/// What an alert watches; the webhook names it as the config does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Share of requests answered 4xx/5xx.
    ErrorRatio,
    /// 95th percentile request latency, ms.
    P95LatencyMs,
    /// Share of cache lookups (both tiers) that hit.
    HitRatio,
    /// Share of upstream attempts answered 429.
    #[serde(rename = "upstream_429_ratio")]
    Upstream429Ratio,
    /// Share of verified semantic hits the fresh answer disagreed with.
    FalseHitRatio,
}

/// `>` or `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Comparison {
    /// Fires while the value is above the threshold.
    #[serde(rename = ">")]
    Above,
    /// Fires while the value is below the threshold.
    #[serde(rename = "<")]
    Below,
}

/// One `[[alerts]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Name in the webhook's JSON.
    pub name: String,
    /// What is watched.
    pub metric: AlertMetric,
    /// Only this route; default all routes together.
    #[serde(default)]
    pub route: Option<String>,
    /// `>` or `<`.
    pub op: Comparison,
    /// The value that fires it.
    pub threshold: f64,
    /// How far back the value is computed.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Where firing and resolving are POSTed as JSON; a secret (a webhook URL is often its own
    /// credential), so never logged.
    pub webhook: secrecy::SecretString,
}

/// `[alerting]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// How often rules are evaluated; default `15s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
        }
    }
}

impl AlertRule {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        let webhook = secrecy::ExposeSecret::expose_secret(&self.webhook);
        if !(webhook.starts_with("http://") || webhook.starts_with("https://")) {
            errors.push(format!("{path}.webhook must be an http(s) URL"));
        }
        if self.window.is_zero() {
            errors.push(format!("{path}.window must be above 0"));
        }
        if !self.threshold.is_finite() {
            errors.push(format!("{path}.threshold must be a number"));
        }
    }
}
