//! The `[server]`, `[upstream]` and `[redis]` sections.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::cache::redis_conn::Topology;

/// `[server]`: where deja listens and what it accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; default 4 MiB. Larger bodies get a 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after SIGINT/SIGTERM; default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Refuse calls without a valid deja API key (401). Default: on when `listen` is not a
    /// loopback address.
    pub require_auth: Option<bool>,
    /// Longest time a client may take to send a request's headers (HTTP/1; on any connection,
    /// until its first request); past it the connection is closed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body once its headers are in; past it
    /// the answer is a 408. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest total of a request's header names and values, in bytes; larger gets a 431.
    /// Default 64 KiB.
    pub max_header_bytes: usize,
    /// When `/readyz` answers 200: `serving` (default) as soon as deja can answer requests, with
    /// a Redis that is down or a semantic index still rebuilding shown as degraded tiers (the
    /// cache is bypassed meanwhile, so taking the replica out would only lose capacity);
    /// `strict` only once Redis answers and the semantic index is rebuilt.
    pub readiness: Readiness,
}

/// `[server] readiness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Ready when requests can be answered, whatever the cache tiers' state.
    Serving,
    /// Ready only with every cache tier ready.
    Strict,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            require_auth: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            readiness: Readiness::Serving,
        }
    }
}

impl ServerConfig {
    /// Whether anonymous calls are refused.
    pub fn auth_required(&self) -> bool {
        self.require_auth
            .unwrap_or_else(|| !self.listen.ip().is_loopback())
    }

    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if self.max_body_bytes == 0 {
            errors.push(format!("{path}.max_body_bytes must be above 0"));
        }
        if self.header_read_timeout.is_zero() {
            errors.push(format!("{path}.header_read_timeout must be above 0"));
        }
        if self.body_read_timeout.is_zero() {
            errors.push(format!("{path}.body_read_timeout must be above 0"));
        }
        if self.max_header_bytes == 0 {
            errors.push(format!("{path}.max_header_bytes must be above 0"));
        } else if self.max_header_bytes > MAX_HEADER_BYTES_CAP {
            errors.push(format!(
                "{path}.max_header_bytes must be at most {MAX_HEADER_BYTES_CAP}, got {}",
                self.max_header_bytes
            ));
        }
    }
}

/// Highest `server.max_header_bytes` accepted: hyper buffers a few times this per connection
/// before our own check can answer.
pub const MAX_HEADER_BYTES_CAP: usize = 1024 * 1024;

/// 01.AI's endpoint in mainland China; `https://api.01.ai/v1` serves abroad.
pub const DEFAULT_UPSTREAM: &str = "https://api.lingyiwanwu.com/v1";

/// `[upstream]`: the OpenAI-compatible provider that answers misses.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL; `/chat/completions` and `/models` are appended.
    pub base_url: String,
    /// Provider key sent as `Authorization: Bearer`; falls back to env `YI_API_KEY`.
    pub api_key: Option<SecretString>,
    /// Per-attempt timeout (to the full answer; for streams, to the first chunk and then between
    /// chunks); default `60s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// TCP + TLS connect timeout; default `10s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per upstream host; default 256.
    pub pool_max_idle: usize,
    /// Largest upstream answer read, in bytes (a stream's total); a larger one is refused with a
    /// 502 (a stream ends with an error event) and never cached. Default 16 MiB.
    pub max_response_bytes: usize,
}

// By hand so that a `base_url` carrying credentials is logged with its password masked.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &crate::redact::url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_max_idle", &self.pool_max_idle)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_UPSTREAM.to_owned(),
            api_key: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle: 256,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => errors.push(format!(
                "{path}.base_url must be an http(s) URL with a host, got scheme `{}`",
                url.scheme()
            )),
            Err(e) => errors.push(format!(
                "{path}.base_url is not a URL ({e}): `{}`",
                crate::redact::url(&self.base_url)
            )),
        }
        if self.timeout.is_zero() {
            errors.push(format!("{path}.timeout must be above 0"));
        }
        if self.connect_timeout.is_zero() {
            errors.push(format!("{path}.connect_timeout must be above 0"));
        }
        if self.max_response_bytes == 0 {
            errors.push(format!("{path}.max_response_bytes must be above 0"));
        }
    }
}

/// `[redis]`: the cache's data plane. Unset means no Redis is used.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `unix:///path` for one server, `redis-cluster://h1:p1,h2:p2`
    /// for a Cluster, `redis-sentinel://h1:p1,h2:p2/db#master` through Sentinel; unset = no Redis.
    pub url: Option<String>,
    /// Longest wait for one cache lookup or write; past it the request goes on without the
    /// cache. Default `50ms`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures (timeouts, refused or dropped connections) after which Redis (or one
    /// Cluster master) is taken for down: the cache is bypassed at once instead of waiting out
    /// `timeout` on every request, until a probe answers. Default 3; 0 turns the breaker off.
    pub breaker_failures: u32,
    /// How often a down Redis is probed. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_millis(50),
            breaker_failures: 3,
            probe_interval: Duration::from_millis(250),
        }
    }
}

// By hand so that the effective config, logged at start, never shows the Redis password.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(crate::redact::url))
            .field("timeout", &self.timeout)
            .field("breaker_failures", &self.breaker_failures)
            .field("probe_interval", &self.probe_interval)
            .finish()
    }
}

impl RedisConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if let Some(Err(e)) = self.url.as_deref().map(Topology::parse) {
            let e = crate::redact::urls_in(&e);
            errors.push(format!("{path}.url is not a Redis URL: {e}"));
        }
        if self.timeout.is_zero() {
            errors.push(format!("{path}.timeout must be above 0"));
        }
        if self.probe_interval < Duration::from_millis(10) {
            errors.push(format!("{path}.probe_interval must be at least 10ms"));
        }
    }
}
