//! A connection to whichever server the Sentinels currently call master. The address is asked
//! of the Sentinels on first use and again after any error that says the master moved: the old
//! master refusing writes (`READONLY`, it was demoted) or the connection failing (it is down).
//! In between, commands go straight to the master through a `ConnectionManager`, and
//! [`SentinelConn::watch`] asks the Sentinels once a second whether the master changed, since a
//! demoted master may take writes for a while before it learns it is a replica.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{RedisConnectionInfo, RedisError, RedisResult, ServerErrorKind};

use super::topology::SentinelTarget;

/// The Sentinels and the master they last named.
pub struct SentinelConn {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    master: Mutex<Option<Master>>,
}

/// The master in use: its address (`host:port`) and connection.
#[derive(Clone)]
struct Master {
    address: String,
    conn: ConnectionManager,
}

/// How often [`SentinelConn::watch`] asks the Sentinels.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for the Sentinels' answer in the watch.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);

impl SentinelConn {
    /// Prepares the client; nothing is dialled until the first command.
    pub fn new(target: &SentinelTarget, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let mut login = RedisConnectionInfo::default().set_db(target.db);
        if let Some(user) = &target.username {
            login = login.set_username(user);
        }
        if let Some(password) = &target.password {
            login = login.set_password(password);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(login);
        let sentinels = SentinelClient::build(
            target.sentinels.clone(),
            target.service.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            config,
            master: Mutex::new(None),
        })
    }

    /// The current master's connection, asking the Sentinels for it when none is known.
    pub async fn master(&self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = self.known() {
            return Ok(conn);
        }
        // One caller asks the Sentinels; the others wait here and then use its answer.
        let mut sentinels = self.sentinels.lock().await;
        if let Some(conn) = self.known() {
            return Ok(conn);
        }
        let client = sentinels.async_get_client().await?;
        let address = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_lazy_with_config(client, self.config.clone())?;
        tracing::info!(master = %address, "redis master found through sentinel");
        *self.slot() = Some(Master {
            address,
            conn: conn.clone(),
        });
        Ok(conn)
    }

    /// Asks the Sentinels every second which server is master, and drops the connection in use
    /// when they name another; `switched` is called each time. Runs until the process ends.
    pub async fn watch(&self, switched: impl Fn()) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            // Bounded: a Sentinel that never answers must not stall the watch (or, through the
            // lock, the request path) for good.
            let asked = async { self.sentinels.lock().await.async_get_client().await };
            let named = match tokio::time::timeout(WATCH_TIMEOUT, asked).await {
                Ok(Ok(client)) => client.get_connection_info().addr().to_string(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "no sentinel named a redis master");
                    continue;
                }
                Err(_) => {
                    tracing::warn!("the sentinels did not answer within 5s");
                    continue;
                }
            };
            let mut slot = self.slot();
            if slot.as_ref().is_some_and(|m| m.address != named) {
                *slot = None;
                drop(slot);
                tracing::warn!(master = %named, "sentinel named a new redis master; switching");
                switched();
            }
        }
    }

    /// Forgets the master after `error` if it means the master moved or went away.
    pub fn after_error(&self, error: &RedisError) {
        let moved = error.kind() == redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
            || error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped();
        if moved && self.slot().take().is_some() {
            tracing::warn!(
                error = %error,
                "redis master failed or was demoted; asking the sentinels again"
            );
        }
    }

    fn known(&self) -> Option<ConnectionManager> {
        self.slot().as_ref().map(|m| m.conn.clone())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Master>> {
        // A panic elsewhere cannot leave the slot half-written: it holds a whole value or none.
        self.master.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
