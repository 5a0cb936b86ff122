//! `[security]`: what a caller may choose. Every setting here widens what callers may do; the
//! defaults allow nothing beyond the operator's own configuration.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

/// `[security]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Hosts a caller's `custom_host` (inline or in a saved config) may name, beside the
    /// route's own targets: `api.example.com`, `api.example.com:8443`, `*.example.com`, or an
    /// IP address. Loopback, private and link-local addresses are refused unless listed as IPs
    /// (a name that resolves to one is refused too). Default: none.
    pub allowed_hosts: Vec<String>,
    /// Longest `cb_config.cooldown` a caller's config may set; default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_breaker_cooldown: Duration,
    /// Serve `/metrics` without a key even when `[server] require_auth` is on; default off.
    pub open_metrics: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            max_breaker_cooldown: Duration::from_secs(60),
            open_metrics: false,
        }
    }
}

/// One `allowed_hosts` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// This host (any port, or the one given).
    Exact(String, Option<u16>),
    /// Any host ending in `.suffix` (not the suffix itself), any port or the one given.
    Suffix(String, Option<u16>),
}

impl HostRule {
    /// Parses `host`, `host:port`, `*.suffix`, `*.suffix:port`, `[v6]:port` or an IP.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.contains("://") || entry.contains('/') {
            return Err(format!("`{entry}` must be a host, not a URL"));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(Self::Exact(ip.to_string(), None));
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, _)) if !host.ends_with(']') && host.contains(':') => (entry.as_str(), None),
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{entry}` has a bad port"))?;
                (host, Some(port))
            }
            None => (entry.as_str(), None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let valid = |h: &str| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        };
        match host.strip_prefix("*.") {
            Some(suffix) if valid(suffix) && suffix.contains('.') => {
                Ok(Self::Suffix(suffix.to_owned(), port))
            }
            Some(_) => Err(format!(
                "`{entry}`: a wildcard needs a domain of two labels or more"
            )),
            None if valid(host) => Ok(Self::Exact(host.to_owned(), port)),
            None => Err(format!("`{entry}` is not a host name")),
        }
    }

    /// Whether `host` (lowercase, without brackets) on `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        match self {
            Self::Exact(h, p) => h == host && p.is_none_or(|p| p == port),
            Self::Suffix(s, p) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
                    && p.is_none_or(|p| p == port)
            }
        }
    }
}

impl SecurityConfig {
    /// The parsed `allowed_hosts` (entries that do not parse were refused at load).
    pub fn host_rules(&self) -> Vec<HostRule> {
        self.allowed_hosts
            .iter()
            .filter_map(|e| HostRule::parse(e).ok())
            .collect()
    }

    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        for (i, entry) in self.allowed_hosts.iter().enumerate() {
            if let Err(e) = HostRule::parse(entry) {
                errors.push(format!("{path}.allowed_hosts[{i}]: {e}"));
            }
        }
        if self.max_breaker_cooldown.is_zero() {
            errors.push(format!("{path}.max_breaker_cooldown must be above 0"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let exact = HostRule::parse("API.example.com").unwrap();
        assert!(exact.matches("api.example.com", 443));
        assert!(!exact.matches("evil-api.example.com", 443));
        let port = HostRule::parse("127.0.0.1:9000").unwrap();
        assert!(port.matches("127.0.0.1", 9000));
        assert!(!port.matches("127.0.0.1", 9001));
        let ip = HostRule::parse("127.0.0.1").unwrap();
        assert!(ip.matches("127.0.0.1", 1));
        let wild = HostRule::parse("*.openai.azure.com").unwrap();
        assert!(wild.matches("team.openai.azure.com", 443));
        assert!(!wild.matches("openai.azure.com", 443));
        assert!(!wild.matches("evilopenai.azure.com", 443));
        let v6 = HostRule::parse("::1").unwrap();
        assert!(v6.matches("::1", 80));
        for bad in ["http://a.com", "*.com", "a b", "a.com:x", "*"] {
            assert!(HostRule::parse(bad).is_err(), "{bad}");
        }
    }
}
