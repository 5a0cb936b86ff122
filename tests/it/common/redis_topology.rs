//! Redis deployments beyond one server, built from Debian's `redis-server` on loopback ports:
//! a Cluster of three masters, and a master with one replica watched by one Sentinel.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::redis::{RedisServer, block_until, free_port};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deja-{name}-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    cmd.query(&mut conn)
}

/// Three masters sharing the 16,384 slots, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// `redis-cluster://` URL naming every node.
    pub url: String,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = scratch_dir("cluster");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.join(format!("nodes-{port}.conf"));
                RedisServer::start_with(
                    port,
                    &[
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf.display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                        "--dir".into(),
                        dir.display().to_string(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (scripts/test.sh installs it)");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            block_until("the cluster to agree", Duration::from_secs(20), || {
                query::<String>(node.port, redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        Self {
            url: format!("redis-cluster://{}", addresses.join(",")),
            nodes,
        }
    }

    /// How many keys each master holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| query(n.port, &mut redis::cmd("DBSIZE")).unwrap())
            .collect()
    }
}

/// A master, its replica and one Sentinel (quorum 1) watching them as `mymaster`.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
    /// `redis-sentinel://` URL for `mymaster`.
    pub url: String,
}

impl SentinelSet {
    pub fn start() -> Self {
        // A replica saves what it receives to disk: keep that out of the working directory.
        let dir = scratch_dir("sentinel");
        let in_dir = ["--dir".to_owned(), dir.display().to_string()];
        let master = RedisServer::start_with(free_port(), &in_dir);
        // Its own directory: a replica (and a demoted master) writes the RDB it syncs from, and
        // two servers renaming dump.rdb in one directory load each other's.
        let replica_dir = scratch_dir("sentinel-replica");
        let replica = RedisServer::start_with(
            free_port(),
            &[
                "--dir".to_owned(),
                replica_dir.display().to_string(),
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        );
        let conf = dir.join("sentinel.conf");
        // Sentinel rewrites its file as it learns, so each set gets its own.
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n",
                master.port
            ),
        )
        .unwrap();
        let sentinel = RedisServer::start_with(
            free_port(),
            &[conf.display().to_string(), "--sentinel".into()],
        );
        let set = Self {
            url: format!("redis-sentinel://127.0.0.1:{}#mymaster", sentinel.port),
            master,
            replica,
            sentinel,
        };
        block_until(
            "the sentinel to see the replica in sync",
            Duration::from_secs(20),
            || set.replica_in_sync(set.master.port),
        );
        set
    }

    /// The port Sentinel now gives for `mymaster`.
    pub fn master_port(&self) -> u16 {
        let (_, port): (String, u16) = query(
            self.sentinel.port,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg("mymaster"),
        )
        .unwrap();
        port
    }

    fn replica_in_sync(&self, master: u16) -> bool {
        query::<String>(master, redis::cmd("INFO").arg("replication"))
            .is_ok_and(|info| info.contains("connected_slaves:1") && info.contains("state=online"))
            && query::<Vec<Vec<String>>>(
                self.sentinel.port,
                redis::cmd("SENTINEL").arg("replicas").arg("mymaster"),
            )
            .is_ok_and(|replicas| {
                // Sentinel promotes only a replica it is linked to and heard from lately.
                let field = |name: &str| {
                    let r = replicas.first()?;
                    let at = r.iter().position(|k| k == name)?;
                    r.get(at + 1).cloned()
                };
                replicas.len() == 1
                    && field("flags").as_deref() == Some("slave")
                    && field("master-link-status").as_deref() == Some("ok")
                    && field("info-refresh").and_then(|ms| ms.parse::<u64>().ok()) < Some(5000)
            })
    }

    /// Waits until what the master holds has reached its replica.
    pub fn sync(&self) {
        let master = self.master_port();
        let acked: u64 = query(master, redis::cmd("WAIT").arg(1).arg(2000)).unwrap();
        assert_eq!(acked, 1, "the replica did not acknowledge the writes");
    }

    /// Promotes the replica and waits until Sentinel names it and it takes writes.
    pub fn fail_over(&self) -> u16 {
        let before = self.master_port();
        let _: String = query(
            self.sentinel.port,
            redis::cmd("SENTINEL").arg("failover").arg("mymaster"),
        )
        .unwrap();
        block_until(
            "sentinel to promote the replica",
            Duration::from_secs(20),
            || self.master_port() != before,
        );
        let after = self.master_port();
        block_until(
            "the new master to take writes",
            Duration::from_secs(20),
            || {
                query::<Vec<redis::Value>>(after, &mut redis::cmd("ROLE")).is_ok_and(|role| {
                    role.first().is_some_and(|r| {
                        redis::from_redis_value_ref::<String>(r).is_ok_and(|r| r == "master")
                    })
                })
            },
        );
        after
    }
}

/// Keys the server on `port` holds.
pub fn key_count(port: u16) -> u64 {
    query(port, &mut redis::cmd("DBSIZE")).unwrap()
}
