//! Single flight: identical concurrent misses make one upstream call. The first request for a
//! key leads; the others wait for its answer. A leader that goes away without an answer (its
//! client hung up, the upstream was unreachable) releases the followers to call upstream
//! themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::sync::watch;

/// An answer a leader shares with its followers.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Upstream status.
    pub status: StatusCode,
    /// Upstream content type.
    pub content_type: Option<HeaderValue>,
    /// Upstream body.
    pub body: Bytes,
    /// Retries the leader made.
    pub retries: u32,
}

type Slot = watch::Receiver<Option<Arc<Shared>>>;

/// In-flight misses by exact key.
#[derive(Default)]
pub struct Coalescer {
    inflight: Mutex<HashMap<String, Slot>>,
}

/// What a request does about a miss.
pub enum Flight {
    /// Call upstream, then `publish`.
    Leader(Leader),
    /// Wait for the leader with `wait`.
    Follower(Slot),
}

/// The request that calls upstream for a key; dropping it releases the key.
pub struct Leader {
    key: String,
    sender: watch::Sender<Option<Arc<Shared>>>,
    coalescer: Arc<Coalescer>,
}

impl Coalescer {
    /// Leads the flight for `key`, or follows the one under way.
    pub fn join(self: &Arc<Self>, key: &str) -> Flight {
        let mut inflight = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = inflight.get(key) {
            return Flight::Follower(slot.clone());
        }
        let (sender, receiver) = watch::channel(None);
        inflight.insert(key.to_owned(), receiver);
        Flight::Leader(Leader {
            key: key.to_owned(),
            sender,
            coalescer: Arc::clone(self),
        })
    }

    /// Flights under way (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inflight.lock().map_or(0, |m| m.len())
    }

    /// Whether no flight is under way.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// Hands the answer to every follower.
    pub fn publish(self, shared: Shared) {
        self.sender.send_replace(Some(Arc::new(shared)));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut inflight = self
            .coalescer
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inflight.remove(&self.key);
    }
}

/// Waits for the leader: its answer, or `None` when it left without one.
pub async fn wait(mut slot: Slot) -> Option<Arc<Shared>> {
    loop {
        if let Some(shared) = slot.borrow_and_update().clone() {
            return Some(shared);
        }
        if slot.changed().await.is_err() {
            // The sender is gone; it may have published just before leaving.
            return slot.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(b"{}"),
            retries: 0,
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_the_key_is_released() {
        let c = Arc::new(Coalescer::default());
        let Flight::Leader(leader) = c.join("k") else {
            panic!("first must lead")
        };
        let Flight::Follower(slot) = c.join("k") else {
            panic!("second must follow")
        };
        let Flight::Leader(_other) = c.join("other") else {
            panic!("other keys lead")
        };
        let waiter = tokio::spawn(wait(slot));
        leader.publish(shared());
        assert_eq!(
            waiter.await.unwrap().unwrap().body,
            Bytes::from_static(b"{}")
        );
        assert_eq!(c.len(), 1, "only `other` is still in flight");
    }

    #[tokio::test]
    async fn a_leader_that_leaves_without_an_answer_releases_followers() {
        let c = Arc::new(Coalescer::default());
        let Flight::Leader(leader) = c.join("k") else {
            panic!()
        };
        let Flight::Follower(slot) = c.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(wait(slot).await.is_none());
        assert!(matches!(c.join("k"), Flight::Leader(_)));
    }
}
