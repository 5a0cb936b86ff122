//! The Redis connection shared by the cache tiers: created lazily, reconnected by the
//! `ConnectionManager`, and every command bounded by `[redis] timeout` so a slow or dead Redis
//! costs a request at most that long.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::CacheError;

/// Version of every key deja writes; a change of layout or embedding model moves to a new one.
pub const KEY_PREFIX: &str = "deja:v1";

/// A cheap-to-clone handle on one Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares a connection to `url`; nothing is dialled until the first command.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { conn, timeout })
    }

    /// Runs one command within the timeout.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline (atomic when built with `.atomic()`) within the timeout.
    pub async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        self.bounded(pipe.query_async(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }
}
