//! Typed configuration: the TOML file, `DEJA__SECTION__KEY` environment overrides, defaults, and
//! validation that names the key path of every error before the port is bound.

mod alerts;
pub mod cache;
mod embedding;
mod env;
mod log;
mod retry;
mod route;
mod security;
mod server;
mod store;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use alerts::{AlertMetric, AlertRule, AlertingConfig, Comparison};
pub use cache::{CacheConfig, CacheMode, JudgeConfig, RouteCacheConfig};
pub use embedding::{EmbeddingConfig, ModelName};
pub use log::LogConfig;
pub use retry::RetryConfig;
pub use route::{LimitsConfig, RouteConfig};
pub use security::{HostRule, SecurityConfig};
pub use server::{Readiness, RedisConfig, ServerConfig, UpstreamConfig};
pub use store::StoreConfig;

/// File read when `--config` is not given and it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "deja.toml";
/// Name of the route used when nothing else matches; added with defaults when not configured.
pub const DEFAULT_ROUTE: &str = "default";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File that was asked for.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// File that was read (or `environment`).
        path: String,
        /// Parser message with line and column.
        message: String,
    },
    /// A key has the wrong type, an unknown name or an unparsable value.
    #[error("{path}: {message}")]
    Field {
        /// Key path such as `routes[0].retry.attempts`.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Values parsed but break a rule; one message per key path.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener and request limits.
    pub server: ServerConfig,
    /// The provider deja forwards to (01.AI by default).
    pub upstream: UpstreamConfig,
    /// Redis connection for the cache tiers.
    pub redis: RedisConfig,
    /// Cache settings shared by every route.
    pub cache: CacheConfig,
    /// The local embedding model of the semantic tier.
    pub embedding: EmbeddingConfig,
    /// Routes in match order; a `default` route is appended when absent.
    pub routes: Vec<RouteConfig>,
    /// The control plane's database.
    pub store: StoreConfig,
    /// The request log.
    pub log: LogConfig,
    /// What callers may choose: hosts, breaker cooldowns, open metrics.
    pub security: SecurityConfig,
    /// Alert rules on deja's own metrics.
    pub alerts: Vec<AlertRule>,
    /// How alerts are evaluated.
    pub alerting: AlertingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            redis: RedisConfig::default(),
            cache: CacheConfig::default(),
            embedding: EmbeddingConfig::default(),
            routes: vec![RouteConfig::named(DEFAULT_ROUTE)],
            store: StoreConfig::default(),
            log: LogConfig::default(),
            security: SecurityConfig::default(),
            alerts: Vec::new(),
            alerting: AlertingConfig::default(),
        }
    }
}

impl Config {
    /// Loads `path` (or `deja.toml` if present, else embedded defaults), applies the process
    /// environment's overrides, fills in `YI_API_KEY`, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &vars)
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (read(p)?, p.display().to_string()),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => (
                read(Path::new(DEFAULT_CONFIG_FILE))?,
                DEFAULT_CONFIG_FILE.to_owned(),
            ),
            None => (String::new(), "embedded defaults".to_owned()),
        };
        Self::from_toml_with_env(&text, &origin, vars)
    }

    /// Parses TOML text, overlays `DEJA__*` variables from `vars`, and validates.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        vars: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        // Messages never repeat a value that may be a secret (the parser's own text quotes the
        // offending source line): see `redact`.
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_owned(),
            message: crate::redact::toml_error(text, &e),
        })?;
        env::overlay(&mut table, vars)?;
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            let message = crate::redact::field_message(&path, &e.inner().to_string());
            ConfigError::Field { path, message }
        })?;
        config.fill_defaults(vars);
        config.validate()?;
        Ok(config)
    }

    fn fill_defaults(&mut self, vars: &[(String, String)]) {
        if self.upstream.api_key.is_none() {
            self.upstream.api_key = vars
                .iter()
                .find(|(k, v)| k == "YI_API_KEY" && !v.is_empty())
                .map(|(_, v)| v.clone().into());
        }
        if self.store.secret_key.is_none() {
            self.store.secret_key = vars
                .iter()
                .find(|(k, v)| k == "DEJA_SECRET_KEY" && !v.is_empty())
                .map(|(_, v)| v.clone().into());
        }
        if !self.routes.iter().any(|r| r.name == DEFAULT_ROUTE) {
            self.routes.push(RouteConfig::named(DEFAULT_ROUTE));
        }
        for route in &mut self.routes {
            route.cache.mode.get_or_insert(self.cache.default_mode);
            route.build_plan();
        }
    }

    /// Each section in force, by its TOML name, as its (secret-redacting) `Debug` shows it: what
    /// the start-up log prints, one line per section.
    pub fn sections(&self) -> Vec<(&'static str, String)> {
        vec![
            ("server", format!("{:?}", self.server)),
            ("upstream", format!("{:?}", self.upstream)),
            ("redis", format!("{:?}", self.redis)),
            ("cache", format!("{:?}", self.cache)),
            ("embedding", format!("{:?}", self.embedding)),
            ("routes", format!("{:?}", self.routes)),
            ("store", format!("{:?}", self.store)),
            ("log", format!("{:?}", self.log)),
            ("security", format!("{:?}", self.security)),
            ("alerts", format!("{:?}", self.alerts)),
            ("alerting", format!("{:?}", self.alerting)),
        ]
        .into_iter()
        // Secret fields print masked through their types; a password inside any URL (a
        // route's custom_host, say) is masked here, whatever field holds it.
        .map(|(name, shown)| (name, crate::redact::urls_in(&shown)))
        .collect()
    }

    /// Checks every rule and reports all broken ones at once, each with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        self.server.validate("server", &mut errors);
        self.upstream.validate("upstream", &mut errors);
        self.store.validate("store", &mut errors);
        self.log.validate("log", &mut errors);
        self.security.validate("security", &mut errors);
        for (i, alert) in self.alerts.iter().enumerate() {
            alert.validate(&format!("alerts[{i}]"), &mut errors);
        }
        if self.alerting.interval.is_zero() {
            errors.push("alerting.interval must be above 0".to_owned());
        }
        self.redis.validate("redis", &mut errors);
        self.cache.validate("cache", &mut errors);
        self.embedding.validate("embedding", &mut errors);
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("routes[{i}]"), &mut errors);
            if !self.embedding.enabled && route.cache.mode() == CacheMode::Semantic {
                errors.push(format!(
                    "routes[{i}].cache.mode is semantic (set or from cache.default_mode) but \
                     embedding.enabled is false: no model to embed with"
                ));
            }
            if self.routes[..i].iter().any(|r| r.name == route.name) {
                errors.push(format!(
                    "routes[{i}].name `{}` is used by an earlier route",
                    route.name
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The route with this exact name.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
