//! Portkey's request headers and the inline `x-portkey-config` JSON, validated with the same
//! rules and key paths as the config file.

use std::time::Duration;

use serde::Deserialize;

use crate::config::cache::MAX_TTL;
use crate::config::{CacheMode, RetryConfig, RouteCacheConfig};

pub mod targets;

pub use targets::{CircuitBreaker, Strategy, StrategyMode, TargetFields};

/// Inline config JSON, or the id of a saved config.
pub const HEADER_CONFIG: &str = "x-portkey-config";
/// Retries made before the answer, on every response.
pub const HEADER_RETRY_COUNT: &str = "x-portkey-retry-attempt-count";
/// `HIT`, `SEMANTIC HIT`, `MISS`, `REFRESH` or `DISABLED`, on every chat completion.
pub const HEADER_CACHE_STATUS: &str = "x-portkey-cache-status";
/// Cache namespace: requests in different namespaces never share entries.
pub const HEADER_CACHE_NAMESPACE: &str = "x-portkey-cache-namespace";
/// `true` skips the lookup, calls upstream and overwrites the entry.
pub const HEADER_FORCE_REFRESH: &str = "x-portkey-cache-force-refresh";
/// Cosine similarity of a semantic hit, 4 decimals.
pub const HEADER_SIMILARITY: &str = "x-deja-similarity";
/// On a semantic miss whose nearest candidate was refused: why (`verifier 0.31`, `guard content`).
pub const HEADER_REFUSED: &str = "x-deja-refused";
/// Version of the saved config a request named, on its response.
pub const HEADER_CONFIG_VERSION: &str = "x-deja-config-version";
/// Virtual key slug: the provider credential this call uses.
pub const HEADER_VIRTUAL_KEY: &str = "x-portkey-virtual-key";
/// Index, among its siblings, of the strategy target that answered.
pub const HEADER_LAST_USED_OPTION: &str = "x-portkey-last-used-option-index";
/// Path of the strategy target that answered, such as `targets[1].targets[0]`.
pub const HEADER_TARGET: &str = "x-deja-target";
/// Model a target's `override_params` asked for.
pub const HEADER_MODEL: &str = "x-deja-model";
/// Route chosen by the caller, by name.
pub const HEADER_ROUTE: &str = "x-deja-route";

/// Why an `x-portkey-config` header was refused.
#[derive(Debug, thiserror::Error)]
pub enum PortkeyConfigError {
    /// Not JSON, or not a JSON object.
    #[error("x-portkey-config is not a JSON object: {0}")]
    Syntax(String),
    /// A field has the wrong type or an unknown name.
    #[error("x-portkey-config: {path}: {message}")]
    Field {
        /// Key path inside the config, such as `retry.attempts`.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Values parsed but break a rule.
    #[error("x-portkey-config: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The header names a saved config that does not exist.
    #[error("x-portkey-config names saved config `{0}`, which does not exist")]
    UnknownSaved(String),
}

/// The parts of a Portkey config that deja acts on per request.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct RequestConfig {
    /// Replaces fields of the route's retry policy.
    #[serde(default)]
    pub retry: Option<RetryPatch>,
    /// Replaces fields of the route's cache settings.
    #[serde(default)]
    pub cache: Option<CachePatch>,
    /// Per-attempt timeout in milliseconds, as Portkey names it.
    #[serde(default)]
    pub request_timeout: Option<u64>,
    /// Slug of the virtual key whose provider credential the call uses.
    #[serde(default)]
    pub virtual_key: Option<String>,
    /// `strategy`, `targets` and the other fields of a target node.
    #[serde(flatten)]
    pub targets_fields: TargetFields,
}

/// Portkey's `cache` object; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePatch {
    /// `simple` or `semantic` (deja also takes `off`).
    pub mode: Option<CacheMode>,
    /// Seconds an entry lives (Portkey's name).
    pub max_age: Option<u64>,
    /// Seconds an entry lives (the tutorial's name); `max_age` wins when both are given.
    pub ttl: Option<u64>,
    /// Lowest cosine similarity for a semantic hit, 0..1.
    pub similarity_threshold: Option<f32>,
}

/// Portkey's `retry` object; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPatch {
    /// Retries after the first try.
    pub attempts: Option<u32>,
    /// Statuses that are retried.
    pub on_status_codes: Option<Vec<u16>>,
    /// Whether `Retry-After` sets the wait (Portkey's name).
    pub use_retry_after_headers: Option<bool>,
    /// Only `exponential` exists; accepted for the tutorial's configs.
    pub backoff: Option<Backoff>,
}

/// Backoff shapes a config may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `base_delay * 2^n` with jitter, the only shape deja uses.
    Exponential,
}

impl RequestConfig {
    /// Parses the header value; `None` or blank means no per-request config.
    pub fn parse(header: Option<&str>) -> Result<Self, PortkeyConfigError> {
        let Some(raw) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(Self::default());
        };
        if !raw.starts_with('{') {
            // Saved configs arrive with the control plane; until then every id is unknown.
            return Err(PortkeyConfigError::UnknownSaved(raw.to_owned()));
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| PortkeyConfigError::Syntax(e.to_string()))?;
        if !value.is_object() {
            return Err(PortkeyConfigError::Syntax("expected an object".to_owned()));
        }
        let config: Self =
            serde_path_to_error::deserialize(value).map_err(|e| PortkeyConfigError::Field {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let mut errors = Vec::new();
        config.check_targets("", &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(PortkeyConfigError::Invalid(errors))
        }
    }

    /// The route's retry policy with this config's fields laid over it, validated.
    pub fn retry_over(&self, base: &RetryConfig) -> Result<RetryConfig, PortkeyConfigError> {
        let Some(patch) = &self.retry else {
            return Ok(base.clone());
        };
        let mut merged = base.clone();
        if let Some(attempts) = patch.attempts {
            merged.attempts = attempts;
        }
        if let Some(codes) = &patch.on_status_codes {
            merged.on_status_codes = codes.clone();
        }
        if let Some(use_header) = patch.use_retry_after_headers {
            merged.use_retry_after_header = use_header;
        }
        checked(merged, |m, errors| m.validate("retry", errors))
    }

    /// The route's cache settings with this config's fields laid over it, validated.
    pub fn cache_over(
        &self,
        base: &RouteCacheConfig,
    ) -> Result<RouteCacheConfig, PortkeyConfigError> {
        let Some(patch) = &self.cache else {
            return Ok(base.clone());
        };
        let mut merged = base.clone();
        if patch.mode.is_some() {
            merged.mode = patch.mode;
        }
        let asked = (patch.max_age.map(|s| ("max_age", s))).or(patch.ttl.map(|s| ("ttl", s)));
        if let Some((field, secs)) = asked {
            let most = MAX_TTL.as_secs();
            if secs == 0 || secs > most {
                return Err(PortkeyConfigError::Invalid(vec![format!(
                    "cache.{field} must be within 1..={most} seconds, got {secs}"
                )]));
            }
            // A caller may shorten an entry's life, never stretch it past the route's cap.
            merged.ttl = Duration::from_secs(secs).min(base.ttl_cap());
        }
        if patch.similarity_threshold.is_some() {
            merged.similarity_threshold = patch.similarity_threshold;
        }
        checked(merged, |m, errors| m.validate("cache", errors))
    }

    /// `request_timeout` as a duration, when set and above zero.
    pub fn timeout(&self) -> Option<Duration> {
        self.request_timeout
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

/// `value` when `validate` finds nothing wrong with it, else every message it found.
fn checked<T>(
    value: T,
    validate: impl FnOnce(&T, &mut Vec<String>),
) -> Result<T, PortkeyConfigError> {
    let mut errors = Vec::new();
    validate(&value, &mut errors);
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(PortkeyConfigError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_config_is_accepted() {
        let cfg = RequestConfig::parse(Some(
            r#"{"retry":{"attempts":3,"on_status_codes":[429,500,502,503],"backoff":"exponential"}}"#,
        ))
        .unwrap();
        let merged = cfg.retry_over(&RetryConfig::default()).unwrap();
        assert_eq!(merged.attempts, 3);
        assert_eq!(merged.on_status_codes, vec![429, 500, 502, 503]);
    }

    #[test]
    fn unknown_top_level_keys_are_kept_out_of_the_way() {
        let cfg =
            RequestConfig::parse(Some(r#"{"cache":{"mode":"semantic"},"retry":{}}"#)).unwrap();
        assert_eq!(cfg.retry, Some(RetryPatch::default()));
    }

    #[test]
    fn negative_attempts_name_the_field() {
        let err = RequestConfig::parse(Some(r#"{"retry":{"attempts":-1}}"#)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("retry.attempts"), "{msg}");
        assert!(msg.contains("-1"), "{msg}");
    }

    #[test]
    fn too_many_attempts_and_bad_codes_are_refused() {
        let cfg = RequestConfig::parse(Some(r#"{"retry":{"attempts":50,"on_status_codes":[42]}}"#))
            .unwrap();
        let msg = cfg
            .retry_over(&RetryConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("retry.attempts must be at most 10, got 50"),
            "{msg}"
        );
        assert!(msg.contains("retry.on_status_codes[0]"), "{msg}");
    }

    #[test]
    fn tutorial_cache_config_is_accepted() {
        let cfg = RequestConfig::parse(Some(
            r#"{"cache":{"mode":"semantic","ttl":3600,"similarity_threshold":0.85}}"#,
        ))
        .unwrap();
        let merged = cfg.cache_over(&RouteCacheConfig::default()).unwrap();
        assert_eq!(merged.mode(), CacheMode::Semantic);
        assert_eq!(merged.ttl, Duration::from_secs(3600));
        assert_eq!(merged.similarity_threshold, Some(0.85));
        let portkey =
            RequestConfig::parse(Some(r#"{"cache":{"mode":"simple","max_age":60}}"#)).unwrap();
        let merged = portkey.cache_over(&RouteCacheConfig::default()).unwrap();
        assert_eq!(
            (merged.mode(), merged.ttl),
            (CacheMode::Simple, Duration::from_secs(60))
        );
    }

    #[test]
    fn bad_cache_configs_name_the_field() {
        let err = RequestConfig::parse(Some(r#"{"cache":{"mode":"fuzzy"}}"#)).unwrap_err();
        assert!(err.to_string().contains("cache.mode"), "{err}");
        let cfg = RequestConfig::parse(Some(r#"{"cache":{"similarity_threshold":1.5}}"#)).unwrap();
        let err = cfg.cache_over(&RouteCacheConfig::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("cache.similarity_threshold must be within 0..=1, got 1.5"),
            "{err}"
        );
        let cfg = RequestConfig::parse(Some(r#"{"cache":{"max_age":0}}"#)).unwrap();
        assert!(cfg.cache_over(&RouteCacheConfig::default()).is_err());
    }

    #[test]
    fn a_callers_ttl_is_cut_to_the_routes_cap_and_nonsense_refused() {
        let route = RouteCacheConfig {
            ttl: Duration::from_secs(600),
            ..RouteCacheConfig::default()
        };
        let long = RequestConfig::parse(Some(r#"{"cache":{"max_age":86400}}"#)).unwrap();
        assert_eq!(
            long.cache_over(&route).unwrap().ttl,
            Duration::from_secs(600)
        );
        let capped = RouteCacheConfig {
            max_ttl: Some(Duration::from_secs(7200)),
            ..route.clone()
        };
        assert_eq!(
            long.cache_over(&capped).unwrap().ttl,
            Duration::from_secs(7200)
        );
        let short = RequestConfig::parse(Some(r#"{"cache":{"ttl":60}}"#)).unwrap();
        assert_eq!(
            short.cache_over(&route).unwrap().ttl,
            Duration::from_secs(60)
        );
        let huge =
            RequestConfig::parse(Some(&format!(r#"{{"cache":{{"max_age":{}}}}}"#, u64::MAX)))
                .unwrap();
        let err = huge.cache_over(&route).unwrap_err().to_string();
        assert!(
            err.contains("cache.max_age must be within 1..=31536000"),
            "{err}"
        );
    }

    #[test]
    fn bad_json_and_non_objects_are_refused() {
        assert!(matches!(
            RequestConfig::parse(Some("{retry")),
            Err(PortkeyConfigError::Syntax(_))
        ));
        assert!(matches!(
            RequestConfig::parse(Some("{}")).map(|c| c.retry),
            Ok(None)
        ));
        assert!(matches!(
            RequestConfig::parse(Some("pc-01ai-retry-123")),
            Err(PortkeyConfigError::UnknownSaved(id)) if id == "pc-01ai-retry-123"
        ));
    }

    #[test]
    fn unknown_backoff_and_retry_fields_are_refused() {
        let err = RequestConfig::parse(Some(r#"{"retry":{"backoff":"linear"}}"#)).unwrap_err();
        assert!(err.to_string().contains("retry.backoff"), "{err}");
        let err = RequestConfig::parse(Some(r#"{"retry":{"atempts":2}}"#)).unwrap_err();
        assert!(err.to_string().contains("atempts"), "{err}");
    }
}
