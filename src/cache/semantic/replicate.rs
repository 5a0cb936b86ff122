//! Replicas behind one Redis share the semantic tier: every insert (and refresh, which is an
//! insert of the same id) and every eviction is published to a Redis Stream of bounded length,
//! and every replica reads the stream from the last id it saw, loading what others stored and
//! dropping what they evicted. A replica that fell behind the stream's trim point rebuilds its
//! indexes from the stored entries instead.

use std::time::Duration;

use super::{CacheError, RedisConn, SemanticTier};

/// Events kept in the stream; a replica more than this many behind rebuilds.
pub const STREAM_MAX: usize = 10_000;
/// Events read per round.
const BATCH: usize = 500;
/// Wait between reads when the stream had nothing new.
const POLL: Duration = Duration::from_millis(100);

/// A stream id, `ms-seq`, ordered as Redis orders them.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

type Fields = Vec<(String, String)>;
type ReadReply = Option<Vec<(String, Vec<(String, Fields)>)>>;

impl SemanticTier {
    pub(super) fn events_key(&self) -> String {
        // Outside the entries' `{prefix}:*` pattern, which the rebuild scans.
        self.prefix.replacen(":sem:", ":sem-events:", 1)
    }

    /// The event "entry `id` of `route` was stored (`put`) or dropped (`del`)".
    pub(super) fn event(&self, op: &str, route: &str, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.events_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX)
            .arg("*")
            .arg("op")
            .arg(op)
            .arg("route")
            .arg(route)
            .arg("id")
            .arg(id)
            .arg("from")
            .arg(&self.replica);
        cmd
    }

    /// Follows the other replicas' changes until the process ends. Starts from the stream's
    /// beginning: what the start-up rebuild already loaded is loaded again, harmlessly.
    pub async fn follow_replicas(&self) {
        let Some(redis) = &self.redis else { return };
        let mut last = "0-0".to_owned();
        loop {
            match self.follow_once(redis, &mut last).await {
                Ok(read) if read == BATCH => continue,
                Ok(_) => {}
                Err(e) => {
                    self.metrics.replica_event("error");
                    tracing::warn!(
                        error = e.kind(),
                        "reading other replicas' changes failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One round: rebuild if events were trimmed unseen, then apply what is new. Returns how
    /// many events were read.
    async fn follow_once(&self, redis: &RedisConn, last: &mut String) -> Result<usize, CacheError> {
        let key = self.events_key();
        if *last != "0-0" {
            let mut first = redis::cmd("XRANGE");
            first.arg(&key).arg("-").arg("+").arg("COUNT").arg(1);
            let oldest: Vec<(String, Fields)> = redis.run(&first).await?;
            if oldest
                .first()
                .is_some_and(|(id, _)| parse_id(id) > parse_id(last))
            {
                // Changes were trimmed before this replica read them: start again from the
                // entries themselves, then from the newest event.
                let mut newest = redis::cmd("XREVRANGE");
                newest.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
                let newest: Vec<(String, Fields)> = redis.run(&newest).await?;
                let loaded = self.rebuild_from_redis().await?;
                tracing::warn!(
                    entries = loaded,
                    "fell behind the other replicas' changes; index rebuilt"
                );
                self.metrics.replica_event("rebuild");
                if let Some((id, _)) = newest.into_iter().next() {
                    *last = id;
                }
            }
        }
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&key)
            .arg(last.as_str());
        let reply: ReadReply = redis.run(&read).await?;
        let events: Vec<(String, Fields)> = reply
            .into_iter()
            .flatten()
            .flat_map(|(_, events)| events)
            .collect();
        let count = events.len();
        for (id, fields) in events {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default()
            };
            if field("from") != self.replica {
                self.apply(redis, field("op"), field("route"), field("id"))
                    .await?;
            }
            *last = id;
        }
        if count > 0 {
            for (route, index) in &self.indexes {
                self.metrics.index_entries(route, index.len());
            }
        }
        Ok(count)
    }

    async fn apply(
        &self,
        redis: &RedisConn,
        op: &str,
        route: &str,
        id: &str,
    ) -> Result<(), CacheError> {
        let Some(index) = self.indexes.get(route) else {
            return Ok(());
        };
        match op {
            "put" => {
                // Gone already (expired or evicted since): nothing to load.
                self.load_one(redis, &self.redis_key(route, id)).await?;
                self.metrics.replica_event("put");
            }
            "del" => {
                index.remove(id);
                self.metrics.replica_event("del");
            }
            _ => self.metrics.replica_event("unknown"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(parse_id("1700000000001-0") > parse_id("1700000000000-9"));
        assert!(parse_id("5-2") > parse_id("5-1"));
        assert_eq!(parse_id("0-0"), (0, 0));
        assert_eq!(parse_id("garbage"), (0, 0));
    }
}
