//! The exact tier: answers keyed by the exact key, in Redis when configured, else in a bounded
//! in-process cache weighed in bytes. Entries expire with their route's TTL.

use std::time::Duration;

use bytes::Bytes;
use moka::Expiry;

use super::CacheError;
use super::redis_conn::{KEY_PREFIX, RedisConn};

/// A stored answer and what it saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chat completion JSON, returned as stored.
    pub body: Bytes,
    /// `usage.total_tokens` of the stored answer (0 when absent).
    pub total_tokens: u64,
}

#[derive(Clone)]
struct MemoryEntry {
    entry: Entry,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, MemoryEntry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &String,
        value: &MemoryEntry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The exact tier, wherever its entries live.
pub struct ExactTier(Backend);

enum Backend {
    /// Shared by every replica.
    Redis(RedisConn),
    /// This process only; bounded by bytes, least recently used first out.
    Memory(moka::sync::Cache<String, MemoryEntry>),
}

impl ExactTier {
    /// An in-process tier holding at most `max_bytes` of answers.
    pub fn memory(max_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &MemoryEntry| {
                u32::try_from(key.len() + value.entry.body.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self(Backend::Memory(cache))
    }

    /// A tier in Redis, shared by every replica.
    pub fn redis(store: RedisConn) -> Self {
        Self(Backend::Redis(store))
    }

    /// Short name for logs and readiness.
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    fn redis_key(key: &str) -> String {
        format!("{KEY_PREFIX}:exact:{key}")
    }

    /// The live entry under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, CacheError> {
        match &self.0 {
            Backend::Memory(cache) => Ok(cache.get(key).map(|m| m.entry)),
            Backend::Redis(store) => {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(Self::redis_key(key)).arg("body").arg("tokens");
                let (body, tokens): (Option<Vec<u8>>, Option<u64>) = store.run(&cmd).await?;
                Ok(body.map(|b| Entry {
                    body: Bytes::from(b),
                    total_tokens: tokens.unwrap_or(0),
                }))
            }
        }
    }

    /// Stores `entry` under `key` for `ttl`, replacing any older one.
    pub async fn put(&self, key: &str, entry: &Entry, ttl: Duration) -> Result<(), CacheError> {
        match &self.0 {
            Backend::Memory(cache) => {
                cache.insert(
                    key.to_owned(),
                    MemoryEntry {
                        entry: entry.clone(),
                        ttl,
                    },
                );
                Ok(())
            }
            Backend::Redis(store) => {
                let redis_key = Self::redis_key(key);
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                // One transaction: a reader never sees a body without its expiry.
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("DEL")
                    .arg(&redis_key)
                    .ignore()
                    .cmd("HSET")
                    .arg(&redis_key)
                    .arg("body")
                    .arg(entry.body.as_ref())
                    .arg("tokens")
                    .arg(entry.total_tokens)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&redis_key)
                    .arg(ttl_ms)
                    .ignore();
                store.transaction(&pipe).await
            }
        }
    }
}
