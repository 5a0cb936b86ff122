//! `[cache]` (process-wide) and `[routes.cache]` (per route) settings.

use std::time::Duration;

use serde::Deserialize;

use crate::cache::guard::Guard;

/// Longest life of any cache entry; nothing is ever stored without an expiry.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a route's cache does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// No lookup, no write-back.
    Off,
    /// Exact tier only: the same request, byte for byte after canonicalisation.
    Simple,
    /// Exact tier, then similar final questions within the same partition.
    Semantic,
}

/// `[routes.cache]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCacheConfig {
    /// `off`, `simple` or `semantic`; default `[cache] default_mode`.
    pub mode: Option<CacheMode>,
    /// How long an answer is served from cache; default `1h`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Lowest cosine similarity (0..1) that counts as a semantic hit; default per model.
    pub similarity_threshold: Option<f32>,
    /// Share (0..1) of look-alike questions (same wording, another answer) this route accepts
    /// being served a cached answer: the hit verifier's operating point, calibrated on held-out
    /// labelled pairs. Default 0.01. Without a verifier, `similarity_threshold` and `guards`
    /// decide instead.
    pub max_wrong: f32,
    /// A model asked "same answer? yes/no" about candidates the verifier is unsure of; off by
    /// default.
    pub judge: JudgeConfig,
    /// Most semantic entries this route keeps; the least recently used go first. Default 100000.
    pub max_entries: usize,
    /// Checks a semantic hit must pass beyond the threshold; default all:
    /// `["numbers", "negation", "content"]`.
    pub guards: Vec<Guard>,
    /// Share (0..1) of semantic hits also sent upstream in the background, after the client has
    /// its answer, to check the cached answer still agrees; default 0 (off).
    pub verify_sample_rate: f64,
    /// Entries are shared by every tenant (answers that do not depend on who asks); default off:
    /// each tenant's entries are its own.
    pub shared: bool,
    /// Longest TTL a caller's config (`cache.max_age` / `cache.ttl`) may ask for; longer asks
    /// are cut to it. Default: the route's `ttl`.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
    /// Any caller may force a refresh (`x-portkey-cache-force-refresh: true`); default off: only
    /// admin and operator keys may, and other callers' asks are ignored and counted.
    pub allow_force_refresh: bool,
}

impl Default for RouteCacheConfig {
    fn default() -> Self {
        Self {
            mode: None,
            ttl: Duration::from_secs(3600),
            similarity_threshold: None,
            max_wrong: 0.01,
            judge: JudgeConfig::default(),
            max_entries: 100_000,
            guards: Guard::all(),
            verify_sample_rate: 0.0,
            shared: false,
            max_ttl: None,
            allow_force_refresh: false,
        }
    }
}

impl RouteCacheConfig {
    /// The longest TTL a caller may ask for on this route.
    pub fn ttl_cap(&self) -> Duration {
        self.max_ttl.unwrap_or(self.ttl)
    }

    /// The mode in force (set from `[cache] default_mode` at load when the route gives none).
    pub fn mode(&self) -> CacheMode {
        self.mode.unwrap_or(CacheMode::Semantic)
    }

    /// Appends a message per broken rule, each prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if self.ttl.is_zero() {
            errors.push(format!("{path}.ttl must be above 0"));
        }
        if self.ttl > MAX_TTL {
            errors.push(format!("{path}.ttl must be at most 365d"));
        }
        if self.max_ttl.is_some_and(|t| t.is_zero() || t > MAX_TTL) {
            errors.push(format!("{path}.max_ttl must be above 0 and at most 365d"));
        }
        if let Some(t) = self
            .similarity_threshold
            .filter(|t| !(0.0..=1.0).contains(t))
        {
            errors.push(format!(
                "{path}.similarity_threshold must be within 0..=1, got {t}"
            ));
        }
        if !(0.0..=1.0).contains(&self.max_wrong) {
            errors.push(format!(
                "{path}.max_wrong must be within 0..=1, got {}",
                self.max_wrong
            ));
        }
        if self.judge.enabled {
            self.judge
                .validate(&format!("{path}.judge"), self.max_wrong, errors);
        }
        if self.max_entries == 0 {
            errors.push(format!("{path}.max_entries must be above 0"));
        }
        if !(0.0..=1.0).contains(&self.verify_sample_rate) {
            errors.push(format!(
                "{path}.verify_sample_rate must be within 0..=1, got {}",
                self.verify_sample_rate
            ));
        }
    }
}

/// `[routes.cache.judge]`: the grey zone's judge. Candidates the verifier scores between the
/// cut of `max_wrong` (refused without a judge) and the laxer cut of `grey_max_wrong` are put to
/// a small model through the route's own upstream; its "yes" serves the hit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Ask the judge at all; default off.
    pub enabled: bool,
    /// The model asked; default the request's own model.
    pub model: Option<String>,
    /// The lower edge of the grey zone, as a share of look-alikes (above the route's
    /// `max_wrong`); default 0.10.
    pub grey_max_wrong: f32,
    /// Most judge calls a second on this route (a token bucket); past it a grey candidate is
    /// refused. Default 1.
    pub max_per_second: f64,
    /// Longest wait for a verdict; past it the candidate is refused. Default 2s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: None,
            grey_max_wrong: 0.10,
            max_per_second: 1.0,
            timeout: Duration::from_secs(2),
        }
    }
}

impl JudgeConfig {
    fn validate(&self, path: &str, max_wrong: f32, errors: &mut Vec<String>) {
        if !(0.0..=1.0).contains(&self.grey_max_wrong) || self.grey_max_wrong < max_wrong {
            errors.push(format!(
                "{path}.grey_max_wrong must be within max_wrong ({max_wrong})..=1, got {}",
                self.grey_max_wrong
            ));
        }
        if !(self.max_per_second >= 0.0 && self.max_per_second.is_finite()) {
            errors.push(format!("{path}.max_per_second must be 0 or more"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            errors.push(format!("{path}.timeout must be above 0 and at most 60s"));
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            errors.push(format!("{path}.model must not be empty"));
        }
    }
}

/// `[cache]`: settings shared by every route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Mode of routes that set none; default `semantic`.
    pub default_mode: CacheMode,
    /// Size of the in-process exact tier used when no Redis is configured; default 256 MiB.
    pub memory_bytes: u64,
    /// Largest answer stored, in bytes; larger answers are passed on but not cached. Default 1 MiB.
    pub max_entry_bytes: usize,
    /// Most characters per content delta when a cached answer is replayed as a stream; 0 sends
    /// each text in one delta. Default 8: about a word, as a provider streams.
    pub replay_chunk_chars: usize,
    /// Most verification calls (see `verify_sample_rate`) per second, over all routes: the bound
    /// on what verification adds to the provider bill. Default 1.
    pub verify_max_per_second: f64,
    /// Cosine similarity of the cached and the fresh answer at or above which they agree.
    /// Default 0.90.
    pub verify_min_similarity: f32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_mode: CacheMode::Semantic,
            memory_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            replay_chunk_chars: 8,
            verify_max_per_second: 1.0,
            verify_min_similarity: 0.90,
        }
    }
}

impl CacheConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if self.memory_bytes == 0 {
            errors.push(format!("{path}.memory_bytes must be above 0"));
        }
        if self.max_entry_bytes == 0 {
            errors.push(format!("{path}.max_entry_bytes must be above 0"));
        }
        if !(self.verify_max_per_second >= 0.0 && self.verify_max_per_second.is_finite()) {
            errors.push(format!(
                "{path}.verify_max_per_second must be a number >= 0, got {}",
                self.verify_max_per_second
            ));
        }
        if !(0.0..=1.0).contains(&self.verify_min_similarity) {
            errors.push(format!(
                "{path}.verify_min_similarity must be within 0..=1, got {}",
                self.verify_min_similarity
            ));
        }
    }
}
