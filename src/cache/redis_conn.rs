//! The Redis connection shared by the cache tiers, whatever the deployment behind `[redis] url`
//! (see [`Topology`]): created lazily, reconnected by the `redis` crate (re-asking the Sentinels
//! after a failover), and every command bounded by `[redis] timeout` so a slow or dead Redis
//! costs a request at most that long.
//!
//! On a Cluster, a transaction must stay within one hash slot. Every entry deja writes is one
//! key, so its transaction always does; what spans keys (an entry and the replicas' event
//! stream, or several evictions) goes through [`RedisConn::transaction_then`] and
//! [`RedisConn::each`], which send one round trip where the server allows it and command by
//! command, in order, on a Cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::CacheError;

pub mod breaker;
mod sentinel;
mod topology;

use breaker::{Breakers, Node};
use sentinel::SentinelConn;
pub use topology::{SentinelTarget, Topology};

/// Version of every key deja writes; a change of layout or embedding model moves to a new one.
pub const KEY_PREFIX: &str = "deja:v1";
/// How long a first connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A cheap-to-clone handle on the configured Redis.
#[derive(Clone)]
pub struct RedisConn {
    backend: Backend,
    timeout: Duration,
    breakers: std::sync::Arc<Breakers>,
}

/// The key a command touches, for a Cluster's breakers: the first argument after the name, or
/// for `XREAD` the first after `STREAMS`.
fn key_of(cmd: &Cmd) -> Option<&str> {
    let text = |arg| match arg {
        redis::Arg::Simple(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    };
    let mut args = cmd.args_iter();
    let name = args.next().and_then(text)?;
    if name.eq_ignore_ascii_case("XREAD") {
        args.by_ref()
            .find(|a| text(a.clone()).is_some_and(|t| t.eq_ignore_ascii_case("STREAMS")))?;
    }
    args.next().and_then(text)
}

#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(std::sync::Arc<SentinelConn>),
}

/// One connection, whichever kind, so a command is written once for all of them.
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipe, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Prepares a connection to `url`; nothing is dialled until the first command. A node's
    /// breaker opens after `breaker_failures` consecutive failures (0: never).
    pub fn new(url: &str, timeout: Duration, breaker_failures: u32) -> Result<Self, CacheError> {
        let topology = Topology::parse(url).map_err(|reason| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Redis URL",
                reason,
            ))
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let backend = match &topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Backend::Single(ConnectionManager::new_lazy_with_config(client, manager)?)
            }
            Topology::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .retries(2)
                    .build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(timeout);
                Backend::Cluster(client.get_pending_async_connection_with_config(config))
            }
            Topology::Sentinel(target) => {
                Backend::Sentinel(std::sync::Arc::new(SentinelConn::new(target, manager)?))
            }
        };
        tracing::info!(topology = topology.kind(), "redis configured");
        Ok(Self {
            backend,
            timeout,
            breakers: std::sync::Arc::new(Breakers::new(breaker_failures)),
        })
    }

    /// Where `cmd` goes, for its breaker.
    fn node<'c>(&self, cmd: Option<&'c Cmd>) -> Node<'c> {
        match (&self.backend, cmd.and_then(key_of)) {
            (Backend::Cluster(_), Some(key)) => Node::Key(key),
            _ => Node::Single,
        }
    }

    /// Runs one command within the timeout.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CacheError> {
        let node = self.node(Some(cmd));
        self.guarded(&node, async |conn| cmd.query_async(conn).await)
            .await
    }

    /// Runs `cmds` and returns their replies in order: one pipelined round trip where the
    /// server allows it, command by command on a Cluster (where they may span slots).
    pub async fn run_many<T: redis::FromRedisValue>(
        &self,
        cmds: &[Cmd],
    ) -> Result<Vec<T>, CacheError> {
        if matches!(self.backend, Backend::Cluster(_)) {
            let mut replies = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                replies.push(self.run(cmd).await?);
            }
            return Ok(replies);
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        // A long pipeline (a rebuild's batch of entries) gets a timeout for its size.
        let timeout = (self.timeout * (1 + cmds.len() as u32 / 50)).min(Duration::from_secs(5));
        self.breakers.check(&Node::Single)?;
        let result = self
            .exec(timeout, async |conn| pipe.query_async(conn).await)
            .await;
        self.breakers.record(&Node::Single, &result);
        result
    }

    /// Runs `pipe`, which must be atomic and touch keys of one hash slot, within the timeout.
    pub async fn transaction(&self, pipe: &Pipeline) -> Result<(), CacheError> {
        let node = self.node(pipe.cmd_iter().find(|c| key_of(c).is_some()));
        self.guarded(&node, async |conn| pipe.query_async(conn).await)
            .await
    }

    /// Runs the transaction `pipe`, then `after`: inside the same transaction where the server
    /// allows it, right after it on a Cluster (where `after` may live in other slots). There, a
    /// failure of `after` is logged rather than returned: the transaction itself is done.
    pub async fn transaction_then(
        &self,
        pipe: &Pipeline,
        after: Vec<Cmd>,
    ) -> Result<(), CacheError> {
        if matches!(self.backend, Backend::Cluster(_)) {
            self.transaction(pipe).await?;
            match self.each(after).await {
                // Its master is known down: counted by its breaker, not logged per write.
                Ok(()) | Err(CacheError::Bypassed) => {}
                Err(e) => tracing::warn!(
                    error = e.kind(),
                    "redis cluster: write done, follow-up failed"
                ),
            }
            return Ok(());
        }
        let mut joined = pipe.clone();
        for cmd in after {
            joined.add_command(cmd).ignore();
        }
        self.transaction(&joined).await
    }

    /// Runs `cmds` in order, not atomically: one round trip where the server allows it, one
    /// command at a time on a Cluster. Replies are dropped.
    pub async fn each(&self, cmds: Vec<Cmd>) -> Result<(), CacheError> {
        if matches!(self.backend, Backend::Cluster(_)) {
            for cmd in &cmds {
                self.run::<Value>(cmd).await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd).ignore();
        }
        self.guarded(&Node::Single, async |conn| pipe.query_async(conn).await)
            .await
    }

    /// Every key matching `pattern`, from every master of a Cluster that answers (a master
    /// that does not could not serve its entries anyway); each SCAN round is bounded by the
    /// timeout.
    pub async fn scan_match(&self, pattern: &str, batch: usize) -> Result<Vec<String>, CacheError> {
        let mut keys = Vec::new();
        let nodes = match &self.backend {
            Backend::Cluster(_) => self
                .masters(self.timeout)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
            _ => vec![None],
        };
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(batch);
                let (next, found): (u64, Vec<String>) = match &node {
                    None => self.run(&scan).await?,
                    Some(address) => self.run_on(address, scan).await?,
                };
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    /// Whether Redis answers `PING` within `timeout` (on a Cluster, every master).
    pub async fn ping(&self, timeout: Duration) -> Result<(), CacheError> {
        match self.backend {
            Backend::Cluster(_) => self.cluster_ok(timeout).await,
            _ => {
                self.exec(timeout, async |conn| {
                    redis::cmd("PING").query_async(conn).await
                })
                .await
            }
        }
    }

    /// Whether the Cluster says it is healthy and every master serving slots answered: a
    /// fan-out skips nodes it has no connection to, so the answers are counted.
    async fn cluster_ok(&self, timeout: Duration) -> Result<(), CacheError> {
        let info: String = self
            .exec(timeout, async |conn| {
                redis::cmd("CLUSTER").arg("INFO").query_async(conn).await
            })
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let serving: usize = field("cluster_size")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let answered = self.masters(timeout).await?.len();
        if field("cluster_state") == Some("ok") && answered >= serving {
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::ClusterConnectionNotFound,
            "cluster not serving every slot",
            format!("{answered} of {serving} masters answered"),
        ))
        .into())
    }

    /// The Cluster's masters as `(host, port)`: those that answered a `PING` sent to all.
    async fn masters(&self, timeout: Duration) -> Result<Vec<(String, u16)>, CacheError> {
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self
            .exec(timeout, async |conn| match conn {
                Conn::Cluster(c) => c.route_command(redis::cmd("PING"), all).await,
                Conn::Single(c) => redis::cmd("PING").query_async(c).await,
            })
            .await?;
        let Value::Map(answers) = reply else {
            return Ok(Vec::new());
        };
        let mut masters = Vec::with_capacity(answers.len());
        for (address, answer) in answers {
            if let Value::ServerError(e) = answer {
                return Err(redis::RedisError::from(e).into());
            }
            let address: String =
                redis::from_redis_value(address).map_err(redis::RedisError::from)?;
            if let Some((host, port)) = address.rsplit_once(':')
                && let Ok(port) = port.parse()
            {
                masters.push((host.to_owned(), port));
            }
        }
        Ok(masters)
    }

    /// Behind Sentinel, follows the master's moves until the process ends (see
    /// [`SentinelConn::watch`]), calling `switched` on each; other topologies return at once.
    pub async fn watch(&self, switched: impl Fn()) {
        if let Backend::Sentinel(s) = &self.backend {
            s.watch(switched).await;
        }
    }

    /// Runs `cmd` on one Cluster node.
    async fn run_on<T: redis::FromRedisValue>(
        &self,
        (host, port): &(String, u16),
        cmd: Cmd,
    ) -> Result<T, CacheError> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let address = format!("{host}:{port}");
        self.guarded(&Node::Address(&address), async |conn| {
            let value = match conn {
                Conn::Cluster(c) => c.route_command(cmd, route).await?,
                Conn::Single(c) => cmd.query_async(c).await?,
            };
            Ok(redis::from_redis_value(value)?)
        })
        .await
    }

    /// [`Self::exec`] within `[redis] timeout` behind `node`'s breaker: refused at once while it
    /// is open, and its outcome counted.
    async fn guarded<T>(
        &self,
        node: &Node<'_>,
        work: impl AsyncFnOnce(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, CacheError> {
        self.breakers.check(node)?;
        let result = self.exec(self.timeout, work).await;
        self.breakers.record(node, &result);
        result
    }

    /// The breakers, for `/readyz` and the metrics.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Until the process ends: every `every`, pings each node whose breaker is open (past the
    /// breaker) and closes it when it answers; on a Cluster, also refreshes the slot map the
    /// breakers are found by. `changed` is called after each round with the open nodes.
    pub async fn probe(&self, every: Duration, changed: impl Fn(&[String])) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slots_read: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            // The slot map changes rarely: once a second is enough to follow a failover.
            if matches!(self.backend, Backend::Cluster(_))
                && slots_read.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
            {
                self.refresh_slots().await;
                slots_read = Some(std::time::Instant::now());
            }
            for address in self.breakers.open_nodes() {
                let answered = if address.is_empty() {
                    match self.backend {
                        // The Cluster as a whole (its slot map not read yet): it must serve.
                        Backend::Cluster(_) => self.cluster_ok(self.timeout).await,
                        _ => {
                            self.exec(self.timeout, async |conn| {
                                redis::cmd("PING").query_async::<()>(conn).await
                            })
                            .await
                        }
                    }
                } else {
                    self.ping_node(&address).await
                };
                if answered.is_ok() {
                    let node = if address.is_empty() {
                        Node::Single
                    } else {
                        Node::Address(&address)
                    };
                    self.breakers.close(&node);
                }
            }
            changed(&self.breakers.open_nodes());
        }
    }

    /// Whether one Cluster master answers and says the Cluster serves (`cluster_state:ok`),
    /// past its breaker: a master answers `PING` even while the Cluster refuses every command
    /// (`CLUSTERDOWN`, once a master without a replica is marked failed), and closing its
    /// breaker then would only make requests wait again.
    async fn ping_node(&self, address: &str) -> Result<(), CacheError> {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Ok(());
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port: port.parse().unwrap_or(6379),
        });
        let info: String = self
            .exec(self.timeout, async |conn| {
                let cmd = redis::cmd("CLUSTER").arg("INFO").clone();
                let value = match conn {
                    Conn::Cluster(c) => c.route_command(cmd, route).await?,
                    Conn::Single(c) => cmd.query_async(c).await?,
                };
                redis::from_redis_value(value).map_err(redis::RedisError::from)
            })
            .await?;
        if info.lines().any(|l| l.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "cluster not serving",
            ))
            .into())
        }
    }

    /// Reads `CLUSTER SLOTS` into the breakers' slot map; a failure keeps the last map.
    async fn refresh_slots(&self) {
        let slots: Result<Vec<Vec<Value>>, CacheError> = self
            .exec(self.timeout, async |conn| {
                redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await
            })
            .await;
        let Ok(slots) = slots else { return };
        let ranges = slots
            .iter()
            .filter_map(|range| {
                let number = |v: &Value| match v {
                    Value::Int(n) => u16::try_from(*n).ok(),
                    _ => None,
                };
                let (start, end) = (number(range.first()?)?, number(range.get(1)?)?);
                let Value::Array(master) = range.get(2)? else {
                    return None;
                };
                let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
                let port = number(master.get(1)?)?;
                Some((start, end, format!("{host}:{port}")))
            })
            .collect();
        self.breakers.set_slots(ranges);
    }

    /// Runs `work` on a connection within `timeout`; in Sentinel mode, an error that means the
    /// master moved makes the next command ask the Sentinels again.
    async fn exec<T>(
        &self,
        timeout: Duration,
        work: impl AsyncFnOnce(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, CacheError> {
        let attempt = async {
            let mut conn = match &self.backend {
                Backend::Single(c) => Conn::Single(c.clone()),
                Backend::Cluster(c) => Conn::Cluster(c.clone()),
                Backend::Sentinel(s) => Conn::Single(s.master().await?),
            };
            let result = work(&mut conn).await;
            if let (Err(e), Backend::Sentinel(s)) = (&result, &self.backend) {
                s.after_error(e);
            }
            result
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn a_commands_key_is_found_for_its_breaker() {
        let mut hget = redis::cmd("HGET");
        hget.arg("deja:v1:sem:m:r:abc").arg("response");
        assert_eq!(key_of(&hget), Some("deja:v1:sem:m:r:abc"));
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg("deja:v1:sem-events:m")
            .arg("$");
        assert_eq!(key_of(&xread), Some("deja:v1:sem-events:m"));
        assert_eq!(key_of(&redis::cmd("PING")), None);
    }
}
