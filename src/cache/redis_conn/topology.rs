//! Which Redis deployment `[redis] url` names: one server (`redis://`, `unix://`),
//! a Cluster (`redis-cluster://h1:p1,h2:p2`) or a master found through Sentinel
//! (`redis-sentinel://h1:p1,h2:p2/db#service`). The last two follow Lettuce's URL forms, which
//! operators already know; credentials before `@` are those of the data nodes.

use std::fmt;

/// Port of a Cluster node when the URL gives none.
const CLUSTER_PORT: u16 = 6379;
/// Port of a Sentinel when the URL gives none.
const SENTINEL_PORT: u16 = 26379;

/// A parsed `[redis] url`.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a proxy in front of several), as the `redis` crate reads the URL.
    Single(String),
    /// Seed nodes of a Redis Cluster, each as a `redis://` URL carrying the credentials.
    Cluster(Vec<String>),
    /// Sentinels watching the master named `service`.
    Sentinel(SentinelTarget),
}

/// Where Sentinel mode finds its master, and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The Sentinels, each as a `redis://host:port` URL (reached without credentials).
    pub sentinels: Vec<String>,
    /// The master's name in the Sentinels' configuration (`sentinel monitor <name> ...`).
    pub service: String,
    /// Database on the master.
    pub db: i64,
    /// ACL user on the master, if any.
    pub username: Option<String>,
    /// Password on the master, if any.
    pub password: Option<String>,
}

// Never print credentials, not even in a debug log of the config.
impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Single(..)"),
            Self::Cluster(nodes) => write!(f, "Cluster({} seed nodes)", nodes.len()),
            Self::Sentinel(s) => write!(
                f,
                "Sentinel({} sentinels, service {:?}, db {})",
                s.sentinels.len(),
                s.service,
                s.db
            ),
        }
    }
}

impl Topology {
    /// Parses `url`; the error says what is wrong without repeating the URL (it may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("redis-cluster://") {
            return parse_cluster(rest);
        }
        if let Some(rest) = url.strip_prefix("redis-sentinel://") {
            return parse_sentinel(rest);
        }
        redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self::Single(url.to_owned()))
    }

    /// Short name for logs: `single`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Single(_) => "single",
            Self::Cluster(_) => "cluster",
            Self::Sentinel(_) => "sentinel",
        }
    }
}

/// `[user[:password]@]` split off the front of `rest`.
fn split_credentials(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((creds, hosts)) => (Some(creds), hosts),
        None => (None, rest),
    }
}

/// `h1[:p1],h2[:p2]` as `(host, port)` pairs.
fn parse_hosts(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let parsed: Vec<(String, u16)> = hosts
        .split(',')
        .map(|h| {
            let h = h.trim();
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| format!("`{port}` is not a port"))?,
                ),
                None => (h, default_port),
            };
            if host.is_empty() {
                return Err("a host is empty".to_owned());
            }
            Ok((host.to_owned(), port))
        })
        .collect::<Result<_, String>>()?;
    Ok(parsed)
}

fn node_url(creds: Option<&str>, host: &str, port: u16) -> String {
    match creds {
        Some(creds) => format!("redis://{creds}@{host}:{port}/"),
        None => format!("redis://{host}:{port}/"),
    }
}

fn parse_cluster(rest: &str) -> Result<Topology, String> {
    let (creds, rest) = split_credentials(rest);
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err("a Redis Cluster has only database 0".to_owned());
    }
    let nodes = parse_hosts(hosts, CLUSTER_PORT)?
        .iter()
        .map(|(host, port)| node_url(creds, host, *port))
        .collect::<Vec<_>>();
    for node in &nodes {
        redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
    }
    Ok(Topology::Cluster(nodes))
}

fn parse_sentinel(rest: &str) -> Result<Topology, String> {
    let (rest, service) = rest.split_once('#').ok_or(
        "a Sentinel URL names its master after `#`, as in `redis-sentinel://host:26379#mymaster`",
    )?;
    if service.is_empty() {
        return Err("the master's name after `#` is empty".to_owned());
    }
    let (creds, rest) = split_credentials(rest);
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let db = match path {
        "" => 0,
        db => db
            .parse::<i64>()
            .map_err(|_| format!("`{db}` is not a database number"))?,
    };
    let sentinels = parse_hosts(hosts, SENTINEL_PORT)?
        .iter()
        .map(|(host, port)| node_url(None, host, *port))
        .collect();
    // Let the `redis` crate decode the credentials the way it decodes them everywhere else.
    let info =
        redis::IntoConnectionInfo::into_connection_info(node_url(creds, "localhost", 1).as_str())
            .map_err(|e| e.to_string())?;
    let login = info.redis_settings();
    Ok(Topology::Sentinel(SentinelTarget {
        sentinels,
        service: service.to_owned(),
        db,
        username: login.username().map(str::to_owned),
        password: login.password().map(str::to_owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_one_server() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:6379/2").unwrap(),
            Topology::Single("redis://127.0.0.1:6379/2".to_owned())
        );
        assert!(Topology::parse("http://127.0.0.1").is_err());
    }

    #[test]
    fn cluster_seeds_carry_credentials_and_default_ports() {
        let Topology::Cluster(nodes) =
            Topology::parse("redis-cluster://:s%40cret@10.0.0.1:7000,10.0.0.2").unwrap()
        else {
            panic!("not a cluster")
        };
        assert_eq!(
            nodes,
            [
                "redis://:s%40cret@10.0.0.1:7000/",
                "redis://:s%40cret@10.0.0.2:6379/"
            ]
        );
        let err = Topology::parse("redis-cluster://a:7000/3").unwrap_err();
        assert!(err.contains("only database 0"), "{err}");
        let err = Topology::parse("redis-cluster://a:70x0").unwrap_err();
        assert!(err.contains("`70x0` is not a port"), "{err}");
    }

    #[test]
    fn sentinel_urls_name_the_master_and_the_database() {
        let Topology::Sentinel(s) =
            Topology::parse("redis-sentinel://app:pw%2F1@s1:26380,s2/3#cache").unwrap()
        else {
            panic!("not sentinel")
        };
        assert_eq!(s.sentinels, ["redis://s1:26380/", "redis://s2:26379/"]);
        assert_eq!(s.service, "cache");
        assert_eq!(s.db, 3);
        assert_eq!(s.username.as_deref(), Some("app"));
        assert_eq!(s.password.as_deref(), Some("pw/1"));
        let err = Topology::parse("redis-sentinel://s1:26379").unwrap_err();
        assert!(err.contains("after `#`"), "{err}");
        assert!(Topology::parse("redis-sentinel://s1#").is_err());
        assert!(Topology::parse("redis-sentinel://s1/x#m").is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        for url in [
            "redis://:hunter2@h:1/",
            "redis-cluster://:hunter2@h:1",
            "redis-sentinel://:hunter2@h:1#m",
        ] {
            let shown = format!("{:?}", Topology::parse(url).unwrap());
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
