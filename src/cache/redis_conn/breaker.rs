//! Redis's circuit breakers: after `[redis] breaker_failures` consecutive failures of a node
//! (timeouts, refused or dropped connections, a Cluster or master that is down), commands to it
//! fail at once instead of waiting out `[redis] timeout`, so the cache tiers are bypassed and a
//! request costs no more than forwarding. A background probe (`RedisConn::probe`) pings an open
//! node and closes its breaker when it answers. One server and Sentinel have one breaker; a
//! Cluster has one per master, found through the key's hash slot.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::cache::CacheError;

/// The breaker of one node.
#[derive(Debug, Default)]
pub struct NodeBreaker {
    open: AtomicBool,
    failures: AtomicU32,
}

impl NodeBreaker {
    /// Whether commands to the node are refused at once.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// Every node's breaker, and how many times one opened.
pub struct Breakers {
    threshold: u32,
    /// The one server or the Sentinel-resolved master.
    single: NodeBreaker,
    /// A Cluster's masters by `host:port`.
    nodes: RwLock<HashMap<String, std::sync::Arc<NodeBreaker>>>,
    /// A Cluster's slot ranges and their masters, from `CLUSTER SLOTS`.
    slots: RwLock<Vec<(u16, u16, String)>>,
    opened: AtomicU64,
}

/// Where a command goes, for its breaker.
pub enum Node<'a> {
    /// The one server (or master).
    Single,
    /// The Cluster master owning this key.
    Key(&'a str),
    /// A Cluster master by address.
    Address(&'a str),
}

impl Breakers {
    /// Breakers that open after `threshold` consecutive failures (0: never).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            single: NodeBreaker::default(),
            nodes: RwLock::default(),
            slots: RwLock::default(),
            opened: AtomicU64::new(0),
        }
    }

    /// The breaker for `node` (`None`: the single one). A Cluster key whose master is not
    /// known (no slot map read yet) falls back to the single breaker, which then stands for the
    /// whole Cluster.
    fn of(&self, node: &Node<'_>) -> Option<std::sync::Arc<NodeBreaker>> {
        let address = match node {
            Node::Single => return None,
            Node::Key(key) => self.owner(slot(key.as_bytes()))?,
            Node::Address(a) => (*a).to_owned(),
        };
        let nodes = self.nodes.read().ok()?;
        nodes.get(&address).cloned()
    }

    fn owner(&self, slot: u16) -> Option<String> {
        let slots = self.slots.read().ok()?;
        slots
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, address)| address.clone())
    }

    /// Refuses at once when `node`'s breaker is open.
    pub fn check(&self, node: &Node<'_>) -> Result<(), CacheError> {
        let open = match self.of(node) {
            Some(b) => b.is_open(),
            None => self.single.is_open(),
        };
        if open {
            Err(CacheError::Bypassed)
        } else {
            Ok(())
        }
    }

    /// Counts what a command to `node` ended with.
    pub fn record<T>(&self, node: &Node<'_>, result: &Result<T, CacheError>) {
        let outage = match result {
            Ok(_) => false,
            Err(e) => is_outage(e),
        };
        let apply = |b: &NodeBreaker| {
            if !outage {
                b.failures.store(0, Ordering::Relaxed);
                return;
            }
            let failures = b.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if self.threshold > 0
                && failures >= self.threshold
                && !b.open.swap(true, Ordering::AcqRel)
            {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    failures,
                    "redis breaker open: the cache is bypassed until a probe answers"
                );
            }
        };
        match self.of(node) {
            Some(b) => apply(&b),
            None => apply(&self.single),
        }
    }

    /// Closes `node`'s breaker after a probe answered.
    pub fn close(&self, node: &Node<'_>) {
        let close = |b: &NodeBreaker| {
            b.failures.store(0, Ordering::Relaxed);
            if b.open.swap(false, Ordering::AcqRel) {
                tracing::info!("redis answered again: breaker closed, the cache is back");
            }
        };
        match self.of(node) {
            Some(b) => close(&b),
            None => close(&self.single),
        }
    }

    /// Open breakers: the nodes' addresses (`""` for the one server).
    pub fn open_nodes(&self) -> Vec<String> {
        let mut open = Vec::new();
        if self.single.is_open() {
            open.push(String::new());
        }
        if let Ok(nodes) = self.nodes.read() {
            open.extend(
                nodes
                    .iter()
                    .filter(|(_, b)| b.is_open())
                    .map(|(a, _)| a.clone()),
            );
        }
        open
    }

    /// How many times a breaker opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A Cluster's slot map: each range's master gets a breaker (kept across refreshes).
    pub fn set_slots(&self, ranges: Vec<(u16, u16, String)>) {
        if let Ok(mut nodes) = self.nodes.write() {
            for (_, _, address) in &ranges {
                nodes.entry(address.clone()).or_default();
            }
            // A master that no longer owns slots (failed over, replaced) is no longer asked:
            // its breaker goes, or it would stay open, and probed, for ever.
            nodes.retain(|address, _| ranges.iter().any(|(_, _, a)| a == address));
        }
        if let Ok(mut slots) = self.slots.write() {
            *slots = ranges;
        }
    }
}

/// Whether `e` means the node is unreachable or unable to serve, not that one command was wrong.
pub fn is_outage(e: &CacheError) -> bool {
    match e {
        CacheError::Timeout(_) => true,
        CacheError::Bypassed | CacheError::Rebuild(_) => false,
        CacheError::Redis(e) => redis_outage(e),
    }
}

fn redis_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::BusyLoading
                )
        )
}

/// A key's Cluster hash slot (CRC16/XMODEM of the key or of its `{hash tag}`, mod 16384).
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16384);
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    }

    #[test]
    fn opens_after_consecutive_outages_only_and_closes_on_probe() {
        let b = Breakers::new(3);
        let timeout: Result<(), CacheError> = Err(CacheError::Timeout(Duration::from_millis(1)));
        b.record(&Node::Single, &timeout);
        b.record(&Node::Single, &timeout);
        b.record(&Node::Single, &Ok(()));
        b.record(&Node::Single, &timeout);
        assert!(b.check(&Node::Single).is_ok(), "a success resets the count");
        b.record(&Node::Single, &timeout);
        b.record(&Node::Single, &timeout);
        assert!(matches!(b.check(&Node::Single), Err(CacheError::Bypassed)));
        assert_eq!((b.opened(), b.open_nodes()), (1, vec![String::new()]));
        b.close(&Node::Single);
        assert!(b.check(&Node::Single).is_ok());
        // A command the server refused on its merits is not an outage.
        let wrong: Result<(), CacheError> = Err(CacheError::Redis(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ))));
        for _ in 0..5 {
            b.record(&Node::Single, &wrong);
        }
        assert!(b.check(&Node::Single).is_ok());
    }

    #[test]
    fn a_cluster_master_opens_alone() {
        let b = Breakers::new(2);
        b.set_slots(vec![(0, 8191, "a:1".into()), (8192, 16383, "b:2".into())]);
        let (on_a, on_b) = ("bar", "foo"); // slots 5061 and 12182
        let timeout: Result<(), CacheError> = Err(CacheError::Timeout(Duration::from_millis(1)));
        b.record(&Node::Key(on_b), &timeout);
        b.record(&Node::Key(on_b), &timeout);
        assert!(b.check(&Node::Key(on_b)).is_err());
        assert!(b.check(&Node::Key(on_a)).is_ok());
        assert_eq!(b.open_nodes(), vec!["b:2".to_owned()]);
        b.close(&Node::Address("b:2"));
        assert!(b.check(&Node::Key(on_b)).is_ok());
        // b fails over to c: b's breaker, open or not, goes with its slots.
        b.record(&Node::Key(on_b), &timeout);
        b.record(&Node::Key(on_b), &timeout);
        b.set_slots(vec![(0, 8191, "a:1".into()), (8192, 16383, "c:3".into())]);
        assert!(b.open_nodes().is_empty());
        assert!(b.check(&Node::Key(on_b)).is_ok());
    }

    #[test]
    fn before_the_slot_map_is_read_a_cluster_has_one_breaker() {
        let b = Breakers::new(2);
        let timeout: Result<(), CacheError> = Err(CacheError::Timeout(Duration::from_millis(1)));
        b.record(&Node::Key("foo"), &timeout);
        b.record(&Node::Key("bar"), &timeout);
        assert!(
            b.check(&Node::Key("baz")).is_err(),
            "a Cluster never read is bypassed"
        );
    }
}
