//! Per-route admission: at most `max_concurrent` requests of a route in flight, at most
//! `max_queued` waiting for a slot (each up to `queue_timeout`), everything past that a fast 429
//! with `Retry-After`. A slot is held until the answer is complete: for a stream, until its
//! body ends or the client goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, LimitsConfig};
use crate::error::AppError;
use crate::metrics::Metrics;

struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    limits: LimitsConfig,
}

/// Every route's gate.
pub struct Admission {
    gates: HashMap<String, Gate>,
    metrics: Arc<Metrics>,
}

/// A slot on a route; dropping it lets the next request in.
pub struct Slot(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// Takes one off the wait count however the wait ends (granted, timed out, or the caller gone).
struct Waiting<'a> {
    gate: &'a Gate,
    route: &'a str,
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now = self.gate.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        self.metrics.route_queue(self.route, now);
    }
}

impl Admission {
    /// One gate per configured route.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let gates = config
            .routes
            .iter()
            .map(|r| {
                let gate = Gate {
                    slots: Arc::new(Semaphore::new(r.limits.max_concurrent)),
                    waiting: AtomicUsize::new(0),
                    limits: r.limits.clone(),
                };
                (r.name.clone(), gate)
            })
            .collect();
        Self { gates, metrics }
    }

    /// A slot on `route`, waiting for one if the queue has room; `Overloaded` otherwise.
    pub async fn admit(&self, route: &str) -> Result<Option<Slot>, AppError> {
        let Some(gate) = self.gates.get(route) else {
            return Ok(None);
        };
        if let Ok(permit) = Arc::clone(&gate.slots).try_acquire_owned() {
            return Ok(Some(Slot(permit)));
        }
        let retry_after_s = gate.limits.queue_timeout.as_secs().max(1);
        let queued = gate.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting {
            gate,
            route,
            metrics: &self.metrics,
        };
        if queued >= gate.limits.max_queued {
            drop(waiting);
            self.metrics.overload(route, "queue_full");
            return Err(AppError::Overloaded {
                route: route.to_owned(),
                why: format!(
                    "{} in flight and {} waiting",
                    gate.limits.max_concurrent, gate.limits.max_queued
                ),
                retry_after_s,
            });
        }
        self.metrics.route_queue(route, queued + 1);
        let acquired = tokio::time::timeout(
            gate.limits.queue_timeout,
            Arc::clone(&gate.slots).acquire_owned(),
        )
        .await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(Some(Slot(permit))),
            // The semaphore is never closed; a closed one would mean shutting down.
            Ok(Err(_)) | Err(_) => {
                self.metrics.overload(route, "queue_timeout");
                Err(AppError::Overloaded {
                    route: route.to_owned(),
                    why: format!("waited {:?} for a slot", gate.limits.queue_timeout),
                    retry_after_s,
                })
            }
        }
    }
}
