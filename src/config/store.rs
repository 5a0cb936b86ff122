//! `[store]`: the SQL database of the control plane (API keys, saved configs).

use serde::Deserialize;

/// `[store]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://FILE?mode=rwc` (default `sqlite://deja.db?mode=rwc`, created on first start;
    /// `sqlite::memory:` keeps nothing) or `postgres://...` for several replicas.
    pub url: String,
    /// Key that seals virtual keys' provider credentials: 32 bytes as 64 hex characters; falls
    /// back to env `DEJA_SECRET_KEY`. Without it, virtual keys cannot be created or used.
    pub secret_key: Option<secrecy::SecretString>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://deja.db?mode=rwc".to_owned(),
            secret_key: None,
        }
    }
}

// By hand so that the effective config, logged at start, never shows the database password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::redact::url(&self.url))
            .field("secret_key", &self.secret_key)
            .finish()
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        use secrecy::ExposeSecret;
        if let Some(key) = &self.secret_key {
            let key = key.expose_secret();
            if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                errors.push(format!(
                    "{path}.secret_key (or DEJA_SECRET_KEY) must be 64 hex characters (32 bytes)"
                ));
            }
        }
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|p| self.url.starts_with(p)) {
            errors.push(format!(
                "{path}.url must start with sqlite: or postgres://, got `{}`",
                crate::redact::url(&self.url)
            ));
        }
    }
}
