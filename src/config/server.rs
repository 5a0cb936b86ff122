//! The `[server]`, `[upstream]` and `[redis]` sections.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::cache::store::Topology;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            require_auth: None,
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
    }
}

/// 01.AI's endpoint in mainland China; `https://api.01.ai/v1` serves abroad.
pub const DEFAULT_UPSTREAM: &str = "https://api.lingyiwanwu.com/v1";

/// `[upstream]`: the OpenAI-compatible provider that answers misses.
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_UPSTREAM.to_owned(),
            api_key: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle: 256,
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
                self.base_url
            )),
        }
        if self.timeout.is_zero() {
            errors.push(format!("{path}.timeout must be above 0"));
        }
        if self.connect_timeout.is_zero() {
            errors.push(format!("{path}.connect_timeout must be above 0"));
        }
    }
}

/// `[redis]`: the cache's data plane. Unset means no Redis is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `unix:///path` for one server, `redis-cluster://h1:p1,h2:p2`
    /// for a Cluster, `redis-sentinel://h1:p1,h2:p2/db#master` through Sentinel; unset = no Redis.
    pub url: Option<String>,
    /// Longest wait for one cache lookup or write; past it the request goes on without the
    /// cache. Default `50ms`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_millis(50),
        }
    }
}

impl RedisConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if let Some(Err(e)) = self.url.as_deref().map(Topology::parse) {
            errors.push(format!("{path}.url is not a Redis URL: {e}"));
        }
        if self.timeout.is_zero() {
            errors.push(format!("{path}.timeout must be above 0"));
        }
    }
}
