//! Where deja may connect. Hosts the operator configured (the upstream, route targets) are
//! trusted; a host a caller names must be on `[security] allowed_hosts` or be one of the route's
//! own, and must not be an internal address unless that address is listed. The same rule is
//! applied again when a name is resolved, so DNS cannot turn an allowed name into an internal
//! address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, HostRule, RouteConfig};
use crate::upstream::providers;

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    /// Not an `http(s)://host[:port][/path]` URL.
    #[error("must be an http(s) URL with a host and no user, query or fragment")]
    Malformed,
    /// Not on the allow-list, and not one of the route's own hosts.
    #[error("host `{0}` is not allowed (see [security] allowed_hosts)")]
    NotAllowed(String),
    /// An internal address (loopback, private, link-local...) not listed explicitly.
    #[error("host `{0}` is an internal address that is not listed in [security] allowed_hosts")]
    Internal(String),
}

/// Scheme, host (lowercase, no brackets), port and path of a base URL: where deja connects, and
/// under which path a credential may be used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP text.
    pub host: String,
    /// Port, explicit or the scheme's.
    pub port: u16,
    /// Path, dot segments resolved, without a trailing `/`.
    pub path: String,
}

impl Origin {
    /// The origin of a caller- or operator-given base URL, refusing what deja never connects to.
    pub fn of(url: &str) -> Result<Self, HostRefusal> {
        let parsed = reqwest::Url::parse(url).map_err(|_| HostRefusal::Malformed)?;
        let ok = matches!(parsed.scheme(), "http" | "https")
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && parsed.query().is_none()
            && parsed.fragment().is_none();
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return Err(HostRefusal::Malformed);
        };
        // Dot segments could walk a path out from under the prefix a credential is bound to.
        let lower = url.to_ascii_lowercase();
        if !ok || lower.contains("/..") || lower.contains("%2e") {
            return Err(HostRefusal::Malformed);
        }
        Ok(Self {
            scheme: parsed.scheme().to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
            path: parsed.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether `other` is this base URL or below it (same scheme, host and port; a path under
    /// this one, segment by segment): where a credential bound here may go.
    pub fn covers(&self, other: &Origin) -> bool {
        let under = other.path == self.path
            || other
                .path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        self.scheme == other.scheme && self.host == other.host && self.port == other.port && under
    }
}

/// Whether `ip` is an address a caller must never reach unless the operator listed it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) and IPv4-compatible forms carry an IPv4 address to check.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
                let [.., a, b, c, d] = v6.octets();
                if !v6.is_loopback() && !v6.is_unspecified() {
                    return is_internal(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
                }
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed)
                || first == 0x2002 // 6to4 carries an IPv4 address that may be internal
        }
    }
}

/// The host rules, built once from the config.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    rules: Vec<HostRule>,
    listed_ips: HashSet<IpAddr>,
    upstream: Option<Origin>,
    /// Every base URL the operator configured.
    operator: Vec<Origin>,
    /// Each route's own target hosts, by route name, parsed once at start.
    routes: HashMap<String, Vec<Origin>>,
}

impl HostPolicy {
    /// From `[security]` and `[upstream]`.
    pub fn new(config: &Config) -> Self {
        let rules = config.security.host_rules();
        let listed_ips = rules
            .iter()
            .filter_map(|r| match r {
                HostRule::Exact(h, _) => h.parse().ok(),
                HostRule::Suffix(..) => None,
            })
            .collect();
        Self {
            rules,
            listed_ips,
            upstream: Origin::of(&config.upstream.base_url).ok(),
            operator: operator_origins(config),
            routes: config
                .routes
                .iter()
                .map(|r| (r.name.clone(), plan_origins(r)))
                .collect(),
        }
    }

    /// The operator's `[upstream]`, the only place its key goes.
    pub fn upstream(&self) -> Option<&Origin> {
        self.upstream.as_ref()
    }

    /// The hosts `route`'s own targets connect to (callers of the route may name them too).
    pub fn route_hosts(&self, route: &str) -> &[Origin] {
        self.routes.get(route).map_or(&[], Vec::as_slice)
    }

    /// Checks a host a caller chose; `own` are the route's own hosts (always allowed).
    pub fn check_caller(&self, url: &str, own: &[Origin]) -> Result<Origin, HostRefusal> {
        let origin = Origin::of(url)?;
        let same_place = |o: &Origin| o.host == origin.host && o.port == origin.port;
        if own.iter().any(same_place) || self.upstream.as_ref().is_some_and(same_place) {
            return Ok(origin);
        }
        if let Ok(ip) = origin.host.parse::<IpAddr>()
            && is_internal(ip)
            && !self.listed_ips.contains(&ip)
        {
            return Err(HostRefusal::Internal(origin.host));
        }
        // The resolver trusts the operator's names wherever they point; a caller may use such a
        // name only where the operator does (its port), never to reach its other ports.
        let is_name = origin.host.parse::<IpAddr>().is_err();
        if is_name && self.operator.iter().any(|o| o.host == origin.host) {
            return Err(HostRefusal::NotAllowed(origin.host));
        }
        if !self
            .rules
            .iter()
            .any(|r| r.matches(&origin.host, origin.port))
        {
            return Err(HostRefusal::NotAllowed(origin.host));
        }
        Ok(origin)
    }
}

/// Where each target of a route's plan connects (its `custom_host`, else its provider's URL):
/// the hosts a caller of that route may also name.
fn plan_origins(route: &RouteConfig) -> Vec<Origin> {
    let mut own = Vec::new();
    if let Some(plan) = &route.plan {
        plan.visit_targets(&mut |node| {
            let fields = &node.targets_fields;
            let azure = node.azure_base();
            let url = azure.as_deref().or(fields
                .custom_host
                .as_deref()
                .or(fields.provider.as_deref().and_then(providers::base_url)));
            if let Some(origin) = url.and_then(|u| Origin::of(u).ok()) {
                own.push(origin);
            }
        });
    }
    own
}

/// Every base URL the operator configured: `[upstream]` and the routes' targets.
fn operator_origins(config: &Config) -> Vec<Origin> {
    let upstream = Origin::of(&config.upstream.base_url).ok();
    upstream
        .into_iter()
        .chain(config.routes.iter().flat_map(plan_origins))
        .collect()
}

/// reqwest's resolver for deja's client: names the operator configured resolve as usual; any
/// other name (one a caller chose from the allow-list) may only resolve to public addresses. An
/// internal address a caller may reach is listed as an IP and named as one.
pub struct GuardedResolver {
    trusted: HashSet<String>,
}

impl GuardedResolver {
    /// For `config`'s operator hosts.
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            trusted: operator_origins(config)
                .into_iter()
                .map(|o| o.host)
                .collect(),
        })
    }

    /// The addresses of `host` deja may connect to (empty when none may be used).
    pub async fn addresses(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if self.trusted.contains(&host.to_ascii_lowercase()) {
            return Ok(found);
        }
        Ok(found.into_iter().filter(|a| !is_internal(a.ip())).collect())
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = Self {
            trusted: self.trusted.clone(),
        };
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed = this.addresses(&host).await?;
            if allowed.is_empty() {
                tracing::warn!(host = %host, "refused: the name resolves only to internal addresses");
                return Err(Box::new(std::io::Error::other(format!(
                    "{host} resolves to an internal address"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> HostPolicy {
        let config = Config::from_toml_with_env(
            &format!("[upstream]\nbase_url = \"https://api.lingyiwanwu.com/v1\"\n{extra}"),
            "t",
            &[],
        )
        .unwrap();
        HostPolicy::new(&config)
    }

    #[test]
    fn internal_addresses_are_known() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_caller_host_must_be_listed_and_internal_ones_listed_as_ips() {
        let none = policy("");
        assert_eq!(
            none.check_caller("https://evil.example/v1", &[]),
            Err(HostRefusal::NotAllowed("evil.example".into()))
        );
        assert!(
            none.check_caller("https://api.lingyiwanwu.com/v1", &[])
                .is_ok()
        );
        let listed = policy("[security]\nallowed_hosts = [\"*.example.com\", \"127.0.0.1:9\"]\n");
        assert!(listed.check_caller("https://a.example.com/v1", &[]).is_ok());
        assert!(listed.check_caller("http://127.0.0.1:9/v1", &[]).is_ok());
        assert!(listed.check_caller("http://127.0.0.1:10/v1", &[]).is_err());
        for bad in [
            "ftp://a.example.com",
            "http://user:pw@a.example.com/",
            "http://a.example.com/v1?x=",
            "http://a.example.com/#f",
            "not a url",
        ] {
            assert_eq!(
                listed.check_caller(bad, &[]),
                Err(HostRefusal::Malformed),
                "{bad}"
            );
        }
        let wild_ip = policy("[security]\nallowed_hosts = [\"*.nip.example\"]\n");
        assert!(wild_ip.check_caller("http://10.0.0.1/", &[]).is_err());
        // An operator's name is the operator's: a caller may not take it to another port.
        let config = Config::from_toml_with_env(
            "[upstream]\nbase_url = \"http://localhost:9/v1\"\n[security]\nallowed_hosts = [\"localhost\"]\n",
            "t",
            &[],
        )
        .unwrap();
        let local = HostPolicy::new(&config);
        assert!(local.check_caller("http://localhost:9/v1", &[]).is_ok());
        assert_eq!(
            local.check_caller("http://localhost:10/v1", &[]),
            Err(HostRefusal::NotAllowed("localhost".into()))
        );
    }

    #[test]
    fn a_base_url_covers_its_own_path_and_below() {
        let base = Origin::of("https://gw.example.com/v1/acct").unwrap();
        for ok in [
            "https://gw.example.com/v1/acct",
            "https://gw.example.com/v1/acct/x/",
        ] {
            assert!(base.covers(&Origin::of(ok).unwrap()), "{ok}");
        }
        for no in [
            "https://gw.example.com/v1/acct-evil",
            "https://gw.example.com/v1/other",
            "http://gw.example.com/v1/acct",
            "https://gw.example.com:8443/v1/acct",
        ] {
            assert!(!base.covers(&Origin::of(no).unwrap()), "{no}");
        }
        for walk in [
            "https://gw.example.com/v1/../x",
            "https://gw.example.com/v1/%2E%2E/x",
        ] {
            assert_eq!(Origin::of(walk), Err(HostRefusal::Malformed), "{walk}");
        }
    }
}
