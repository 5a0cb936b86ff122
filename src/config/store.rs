//! `[store]`: the SQL database of the control plane (API keys, saved configs).

use serde::Deserialize;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://FILE?mode=rwc` (default `sqlite://deja.db?mode=rwc`, created on first start;
    /// `sqlite::memory:` keeps nothing) or `postgres://...` for several replicas.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://deja.db?mode=rwc".to_owned(),
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|p| self.url.starts_with(p)) {
            errors.push(format!(
                "{path}.url must start with sqlite: or postgres://, got `{}`",
                self.url.split(['@', '?']).next().unwrap_or_default()
            ));
        }
    }
}
