//! Circuit breakers per target: a target that keeps failing is skipped for a cooldown, then
//! probed by one request; a success closes the circuit again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::portkey::CircuitBreaker;

/// Most targets whose failures are tracked at once.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Breaker state of every target seen, by the key the policy gave it (who brought the target,
/// where it goes, with which credential).
#[derive(Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// Whether a request may go to the target now.
    pub fn allow(&self, key: &str) -> bool {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(state) = states.get_mut(key) else {
            return true;
        };
        match state.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            // Cooldown over: one probe at a time.
            Some(_) if state.probing => false,
            Some(_) => {
                state.probing = true;
                true
            }
        }
    }

    /// Records how the target did; opens or closes its circuit. `(route, target)` label the
    /// gauge (`None`: a caller's own target, not exported).
    pub fn record(
        &self,
        key: &str,
        label: Option<(&str, &str)>,
        breaker: CircuitBreaker,
        ok: bool,
        metrics: &Metrics,
    ) {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            states.remove(key);
            if let Some((route, target)) = label {
                metrics.circuit(route, target, false);
            }
            return;
        }
        if states.len() >= MAX_TRACKED && !states.contains_key(key) {
            // Callers can bring many targets; keep the open circuits, forget the rest.
            states.retain(|_, s| s.open_until.is_some());
            if states.len() >= MAX_TRACKED {
                return;
            }
        }
        let state = states.entry(key.to_owned()).or_default();
        state.failures += 1;
        if state.probing || state.failures >= breaker.failure_threshold {
            state.open_until = Some(Instant::now() + Duration::from_millis(breaker.cooldown));
            state.probing = false;
            if let Some((route, target)) = label {
                metrics.circuit(route, target, true);
            }
        }
    }
}
